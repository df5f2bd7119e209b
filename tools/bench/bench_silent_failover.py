"""From repmgr's promotion to the master znode when the old primary's host goes silent.

Usage: python -m tools.bench.bench_silent_failover [--failovers N] [--keep] [OUT.json]

A node crash (power off, kernel panic, `docker kill`) leaves its address silent: every
connection to it waits for its connect timeout, where `pg_ctl -m immediate` (the other
failover benchmark) leaves a port that refuses at once. Each failover gets a fresh 3-node
repmgr cluster on three loopback addresses (port 5432 each, conninfo with
`connect_timeout=2`, as repmgr's documentation writes it), repmgrd, `event_notification_command`
running `agrajag notify`, `service_promote_command` `pg_ctl -w promote`, and an
`agrajag daemon` per node with the shipped defaults for the INSERT check (deadline 2 s,
connect timeout 2 s) and poll interval 2 s. Once node1 is published: an nftables table drops
every packet to and from node1's address, then node1's PostgreSQL, repmgrd and daemon get
SIGKILL. Measured: repmgr's `standby_promote` row on the new primary -> the first DataWatch
notification of the master znode naming it (wall clock of one machine), plus the publishing
round's phases from its DEBUG line. Default OUT is bench-results/silent_failover.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from tools.bench.bench_failover import FAILOVER_TIMEOUT_S, Sample, _profile, summary
from tools.bench.failovers import (
    SCHEMA_SQL,
    SetupFailed,
    dispose,
    run_failovers,
    wait_settled,
    wait_streaming,
)
from tools.harness.agrajag import EVENT_COMMAND, DaemonProc
from tools.harness.postgres import PgCluster
from tools.harness.procs import loopback_hosts, signal_tree
from tools.harness.silent import silent_host
from tools.harness.watch import MasterWatch
from tools.harness.zookeeper import ZkEnsemble

ROOT = "/agrajag"
POLL_INTERVAL_S = 2.0
CHECK_DEADLINE_S = 2.0


def one_failover(zk: ZkEnsemble, client: KazooClient, index: int, keep: bool) -> Sample:
    name = f"silent-{index:03d}-{os.getpid()}"
    sample = Sample("silent", index, name)
    cluster = PgCluster(
        3, event_command=EVENT_COMMAND, pg_ctl_promote=True, hosts=loopback_hosts(3)
    )
    daemons: list[DaemonProc] = []
    crashed = False
    try:
        cluster.create()
        old = cluster.nodes[0]
        old.sql(SCHEMA_SQL)
        wait_streaming(old, len(cluster.nodes) - 1)
        cluster.start_repmgrd()
        daemons = [
            DaemonProc(
                n,
                zk.hosts,
                cluster=name,
                root=ROOT,
                poll_interval_s=POLL_INTERVAL_S,
                check_deadline_s=CHECK_DEADLINE_S,
            ).start()
            for n in cluster.nodes
        ]
        base = f"{ROOT}/{name}"
        wait_settled(client, base, old, cluster.nodes)
        watch = MasterWatch(client, f"{base}/master", old.name)
        sample.loadavg_1m = os.getloadavg()[0]
        offset = time.time() - time.monotonic()
        with silent_host(old.host.address):
            crashed_at = time.monotonic()
            crashed = True
            daemons[0].proc.kill()
            if old.repmgrd:
                old.repmgrd.kill()
            pid = old.postmaster_pid()
            if pid:
                signal_tree(pid, signal.SIGKILL)
            watch.changed.wait(FAILOVER_TIMEOUT_S + 30)
            if watch.first is None:
                raise RuntimeError("never published")
            published_at, record = watch.first
            sample.published = sample.new_primary = str(record["node"])
            sample.published_by = str(record.get("published_by", ""))
            sample.epoch = int(record["epoch"])
            sample.crash_to_published_s = published_at - crashed_at
            _profile(sample, cluster, daemons, offset + crashed_at)
            writable = [n.name for n in cluster.writable()]
            if writable != [sample.published]:
                sample.error = f"published {sample.published}, writable {writable}"
    except Exception as exc:  # one broken failover must not end the whole run
        sample.error = f"{type(exc).__name__}: {exc}"
    finally:
        for d in daemons:
            d.stop()
        dispose(cluster, keep, sample.error)
    if not crashed:
        raise SetupFailed(sample.error)
    return sample


def promote_to_published(s: Sample) -> float | None:
    if s.promote_event_s is None or s.crash_to_published_s is None:
        return None
    return s.crash_to_published_s - s.promote_event_s


def report(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if not s.error]
    return {
        "failovers": len(samples),
        "errors": [s.error for s in samples if s.error],
        "promote_event_to_published": summary(
            [v for s in ok if (v := promote_to_published(s)) is not None]
        ),
        "crash_to_promote_event": summary(
            [s.promote_event_s for s in ok if s.promote_event_s is not None]
        ),
        "crash_to_published": summary([s.crash_to_published_s or 0.0 for s in ok]),
        "publishing_round_ms": {
            phase: {"p50": sorted(vals)[len(vals) // 2], "max": max(vals)}
            for phase in ("woke", "repmgr", "check", "registry", "publish", "total")
            if (vals := [s.round_ms[phase] for s in ok if phase in s.round_ms])
        },
        "triggers": {t: sum(1 for s in ok if s.trigger == t) for t in {s.trigger for s in ok}},
    }


def _line(s: Sample) -> str:
    if s.error:
        return f"ERROR {s.error}"
    took = promote_to_published(s)
    return (
        f"promote->published {took * 1e3 if took is not None else float('nan'):7.1f} ms"
        f"  crash->published {(s.crash_to_published_s or 0) * 1e3:7.1f} ms"
        f"  by {s.published_by} ({s.trigger}) round {s.round_ms}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bench_silent_failover")
    parser.add_argument("--failovers", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep every cluster's directory")
    parser.add_argument("out", nargs="?", default="bench-results/silent_failover.json")
    args = parser.parse_args()
    started = time.monotonic()
    plan = [(f"failover {i}", i) for i in range(args.failovers)]
    samples, setup_failures = run_failovers(
        plan,
        lambda zk, client, i, attempt: one_failover(zk, client, i, args.keep),
        _line,
        keep=args.keep,
    )
    result = report(samples)
    print(json.dumps({k: v for k, v in result.items() if k != "errors"}, indent=1))
    data = {
        "benchmark": "silent_failover_publish",
        "measured": (
            "repmgr's standby_promote row on the new primary -> first DataWatch notification"
            " of the master znode naming it; the old primary's address silent (nftables drop)"
            " before its PostgreSQL, repmgrd and daemon get SIGKILL"
        ),
        "summary": result,
        "samples": [asdict(s) for s in samples],
        "setup_failures_rebuilt": setup_failures,
        "settings": {
            "nodes": 3,
            "conninfo_connect_timeout_s": 2,
            "daemon": {"poll_interval_s": POLL_INTERVAL_S, "check_deadline_s": CHECK_DEADLINE_S},
            "repmgrd": {"monitor_interval_secs": 1, "reconnect_attempts": 2},
        },
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "runtime_s": round(time.monotonic() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"-> {out} ({data['runtime_s']} s)")


if __name__ == "__main__":
    main()
