"""`make demo`: agrajag on a local demo cluster, end to end, on 127.0.0.1.

Starts ZooKeeper, a 3-node PostgreSQL 15 + repmgr cluster with repmgrd (automatic failover,
promoting with `pg_ctl -w` as conf.d recommends),
`agrajag daemon` beside each node (woken by repmgr's events), and `agrajag watch` driving a
real HAProxy. Shows `agrajag status`, kills the primary, and shows how long each step of the
failover took and where HAProxy sends clients afterwards. `--keep` leaves it all running
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from agrajag.sinks.haproxy import HAProxySink, Settings
from tools.harness.agrajag import EVENT_COMMAND, Daemons
from tools.harness.postgres import PgCluster
from tools.harness.procs import STARTED, service_dir, wait_until
from tools.harness.proxies import HAProxy
from tools.harness.shipped import AGRAJAG, CONF_D
from tools.harness.watch import WatchProc
from tools.harness.zookeeper import ZkEnsemble


def served_port(port: int) -> int | None:
    """The PostgreSQL port a new client through HAProxy lands on (None: no answer)."""
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, dbname="repmgr", user="repmgr", connect_timeout=2
        ) as conn:
            row = conn.execute("SELECT inet_server_port()").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def status(watcher: WatchProc) -> None:
    """`agrajag status` with the watcher's config: its identity may read the registry."""
    subprocess.run([AGRAJAG, "status", "--config", str(watcher.config)], check=False, timeout=30)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep everything running")
    keep = parser.parse_args().keep

    step("starting ZooKeeper, PostgreSQL 15 + repmgr (3 nodes), daemons, HAProxy, watcher")
    zk = ZkEnsemble(1).start()
    cluster = PgCluster(3, event_command=EVENT_COMMAND, pg_ctl_promote=True)
    haproxy = HAProxy()
    try:
        cluster.create()
        cluster.nodes[0].sql((CONF_D / "agrajag-schema.sql").read_text())
        cluster.start_repmgrd()
        Daemons(zk.hosts, cluster.nodes).start()
        section = {"type": "haproxy", **haproxy.sink_section()}
        sink = HAProxySink(Settings.from_mapping(section, "demo"))
        haproxy.config.write_text(sink.render({}))
        haproxy.start()
        watcher = WatchProc(Path(service_dir("watch")), zk.hosts, sinks=[section]).start()
        old = cluster.nodes[0]
        wait_until(lambda: served_port(haproxy.port) == old.port, timeout=30, what="routing")
        print(f"HAProxy 127.0.0.1:{haproxy.port} routes to {old.name} (port {old.port})")
        status(watcher)

        step(f"killing the primary {old.name} (pg_ctl -m immediate)")
        crashed = time.monotonic()
        old.crash()
        new = cluster.wait_promotion(old, timeout=60)
        writable = time.monotonic()
        # What HAProxy routes new connections to, read from its runtime API: a client probe
        # would first wait out HAProxy's connect timeout against the dead primary.
        wait_until(
            lambda: {s["srv_port"] for s in haproxy.server_states()} == {str(new.port)},
            timeout=30,
            what="HAProxy to route to the new primary",
            interval=0.005,
        )
        routed = time.monotonic()
        assert served_port(haproxy.port) == new.port
        print(f"repmgrd promoted {new.name}: writable after {writable - crashed:.2f} s")
        print(
            f"HAProxy routes new clients to {new.name} (port {new.port}) "
            f"{routed - writable:.2f} s later ({routed - crashed:.2f} s after the crash)"
        )
        status(watcher)
        if keep:
            step(f"running; ZooKeeper at {zk.hosts}, HAProxy at 127.0.0.1:{haproxy.port}")
            print(f"watcher log: {watcher.log}; Ctrl-C stops everything")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        step("stopping")
        for proc in reversed(STARTED):
            proc.stop()
        cluster.destroy()
        zk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
