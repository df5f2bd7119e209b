"""The run every failover benchmark shares: one ZooKeeper for the whole run, a fresh cluster
per failover (its set-up rebuilt when it fails), and Ctrl-C or SIGTERM stopping after the
current failover with the results so far."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from kazoo.client import KazooClient

from agrajag.zookeeper_settings import Role
from tools.harness import procs
from tools.harness.clients import TABLE
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.shipped import CONF_D
from tools.harness.zookeeper import ZkEnsemble

P = TypeVar("P")
S = TypeVar("S")
SETUP_ATTEMPTS = 3
SCHEMA_SQL = (CONF_D / "agrajag-schema.sql").read_text()


class SetupFailed(Exception):
    """The cluster or the daemons did not come up healthy: not a failover sample, retry."""


def run_plan(
    plan: Sequence[tuple[str, P]],
    one: Callable[[P, int], S],
    show: Callable[[S], str],
) -> tuple[list[S], list[str]]:
    """`one(item, attempt)` for each (label, item) of the plan, a set-up that raised
    SetupFailed rebuilt up to SETUP_ATTEMPTS times, printing `label show(sample)` after each;
    returns the samples and the set-ups that were rebuilt. The caller kills what is left."""
    started = time.monotonic()
    samples: list[S] = []
    setup_failures: list[str] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        print("stopping after this failover (results so far are written)", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for k, (label, item) in enumerate(plan, 1):
        if stop.is_set():
            break
        t0 = time.monotonic()
        for attempt in range(SETUP_ATTEMPTS):
            try:
                sample = one(item, attempt)
                break
            except SetupFailed as exc:
                setup_failures.append(f"{label}: {exc}")
        else:
            raise SystemExit(f"{SETUP_ATTEMPTS} set-ups in a row failed: {setup_failures}")
        samples.append(sample)
        print(
            f"[{k:>3}/{len(plan)}] {label} {show(sample)}"
            f"  [{time.monotonic() - t0:.1f} s, total {time.monotonic() - started:.0f} s]",
            flush=True,
        )
    return samples, setup_failures


def run_failovers(
    plan: Sequence[tuple[str, P]],
    one: Callable[[ZkEnsemble, KazooClient, P, int], S],
    show: Callable[[S], str],
    *,
    keep: bool = False,
) -> tuple[list[S], list[str]]:
    """`run_plan` with one ZooKeeper for the whole run: `one(zk, client, item, attempt)`,
    `client` a watcher's session to it."""
    zk = ZkEnsemble(1)
    client: KazooClient | None = None
    try:
        zk.start()
        client = KazooClient(hosts=zk.hosts, timeout=10, auth_data=kazoo_auth(Role.WATCHER))
        client.start(timeout=20)
        session = client
        return run_plan(plan, lambda item, attempt: one(zk, session, item, attempt), show)
    finally:
        if client is not None:
            client.stop()
            client.close()
        zk.stop()
        kill_started()
        if not keep:
            shutil.rmtree(zk.servers[0].dir.parent, ignore_errors=True)


def kill_started() -> None:
    """Kill every process the harness started that still runs."""
    for p in procs.STARTED:
        if p.alive():
            p.kill()


def dispose(cluster: PgCluster, keep: bool, error: str) -> None:
    """Destroy a failover's cluster; keep its directory (logs) when asked or after an error."""
    cluster.destroy()
    if error or keep:
        print(f"  kept {cluster.base} for inspection: {error or 'keep'}", flush=True)
    else:
        shutil.rmtree(cluster.base, ignore_errors=True)


def prepare(cluster: PgCluster) -> PgNode:
    """Create the cluster, the INSERT check's schema and the writes' table on its primary,
    wait for both standbys to stream it, start repmgrd; the primary."""
    cluster.create()
    primary = cluster.nodes[0]
    primary.sql(SCHEMA_SQL)
    primary.sql(TABLE)
    wait_streaming(primary, len(cluster.nodes) - 1)
    cluster.start_repmgrd()
    return primary


def wait_settled(client: KazooClient, base: str, old: PgNode, nodes: Sequence[PgNode]) -> None:
    """Before a crash: `old` is the published master and every node's daemon is live."""

    def settled() -> bool:
        if not client.exists(f"{base}/master"):
            return False
        record = json.loads(client.get(f"{base}/master")[0])
        live = sorted(client.get_children(f"{base}/nodes"))
        return bool(record["node"] == old.name and live == [n.name for n in nodes])

    wait_until(settled, timeout=30, what=f"{base}: {old.name} published and every daemon live")


def wait_streaming(primary: PgNode, standbys: int, timeout: float = 20) -> None:
    """Both standbys stream and have replayed everything written so far.

    Without slots or wal_keep_size a standby cloned just before another clone's checkpoint can
    find its next WAL segment removed and never stream (seen here under load): such a
    cluster cannot fail over cleanly and is rebuilt rather than measured.
    """
    with primary.connect() as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]

    def caught_up() -> bool:
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE state = 'streaming' AND replay_lsn >= %s::pg_lsn",
                (str(lsn),),
            ).fetchone()
        return bool(row and row[0] == standbys)

    wait_until(caught_up, timeout=timeout, what="both standbys to stream and replay the schema")


def log_time(line: str) -> float | None:
    """The wall-clock time of a `%(asctime)s ...` log line (local time, milliseconds)."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def publish_round(log: str, node: str, since: float) -> tuple[float, str, dict[str, float]]:
    """In a daemon's log, the first `decision=publish node=<node>` line logged after `since`
    (wall clock) and the DEBUG `round trigger=... repmgr_ms=...` line after it: the publish's
    time, its trigger and the round's phases in ms (`repmgr`, `registry`, ...). Raises
    LookupError while either line is not (yet) in the log."""
    lines = iter(log.splitlines())
    for line in lines:
        at = log_time(line) if f"decision=publish node={node} " in line else None
        if at is not None and at >= since:
            trigger = line.rsplit("trigger=", 1)[-1].split()[0]
            break
    else:
        raise LookupError(f"no publish of {node} in the log")
    for line in lines:
        if " round trigger=" in line:
            phases = (w.partition("=") for w in line.split())
            return (
                at,
                trigger,
                {k.removesuffix("_ms"): float(v) for k, _, v in phases if k.endswith("_ms")},
            )
    raise LookupError(f"no round line after the publish of {node}")
