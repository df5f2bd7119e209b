#!/opt/agrajag/bin/python
"""A client that keeps writing through a proxy and says which node took its writes.

    agrajag-writer [--host app1] [--port 5000] [--once | --until-moved] [--timeout S]

One INSERT every --interval seconds into table `writer` of database `app` (as role `app`),
on one connection, opened again after any error. It prints one JSON line per change: the
first write, each failure after a success, and each success after failures or on another
node (`node` is that server's cluster_name, the DB node's name). It exits 0 after the
first write with --once, after the first write on another node than the first with
--until-moved, and 1 after --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import psycopg

INSERT = "INSERT INTO writer (via) VALUES (%s) RETURNING current_setting('cluster_name')"


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


def connect(args: argparse.Namespace) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(
        host=args.host,
        port=args.port,
        dbname="app",
        user="app",
        connect_timeout=2,
        autocommit=True,
        prepare_threshold=None,  # PgBouncer's transaction pooling
    )
    conn.execute("CREATE TABLE IF NOT EXISTS writer (at timestamptz DEFAULT now(), via text)")
    return conn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="app1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.05)
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--once", action="store_true")
    stop.add_argument("--until-moved", action="store_true")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    via = f"{args.host}:{args.port}"
    deadline = time.monotonic() + args.timeout
    conn = None
    first = None  # the node of the first write
    state = None  # the node of the last write, or "failed"
    writes = 0
    while time.monotonic() < deadline:
        try:
            conn = conn or connect(args)
            row = conn.execute(INSERT, (via,)).fetchone()
            node = str(row[0]) if row else "?"
            writes += 1
        except psycopg.Error as exc:
            if state != "failed":
                say("failed", error=str(exc).strip().splitlines()[0], writes=writes)
            state = "failed"
            if conn is not None:
                conn.close()
                conn = None
        else:
            if node != state:
                say("wrote", node=node, writes=writes)
            first = first or node
            state = node
            if args.once or (args.until_moved and node != first):
                return 0
        time.sleep(args.interval)
    say("timeout", writes=writes)
    return 1


if __name__ == "__main__":
    sys.exit(main())
