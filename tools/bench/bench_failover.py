"""From the new primary taking writes to the master znode naming it, over real failovers.

Usage: python -m tools.bench.bench_failover [--failovers N] [--mode MODE] [--keep] [OUT.json]

MODE is `notify` (repmgr's event_notification_command runs `agrajag-notify`; the daemons
poll only every 5 s, as the original Agrajag did, so a fast publish can only come from the
hook), `notify-pgctl` (the same plus repmgr's `service_promote_command` set to
`pg_ctl -w promote`, see below), `poll` (no event command, poll every 1 s), `poll5` (no
event command, every 5 s), `cli-notify-pgctl` (notify-pgctl with the hook `agrajag notify`,
the full command line), `both` (notify and poll, the default), `all` (the first four) or
`hooks` (notify-pgctl and cli-notify-pgctl). Modes are
interleaved failover by failover, so that load from other work on the machine falls on
every mode alike. Default OUT is bench-results/failover.json. Not a test: it needs the real
ZooKeeper, PostgreSQL 15 and repmgr the integration tests use (see tests/harness/).

Why `notify-pgctl`: repmgr 5.3's `standby promote` calls `pg_promote(wait := false)`, checks
once, then sleeps `promote_check_interval` (whole seconds, default 1) before it sees the
promotion, updates its metadata and raises `standby_promote`. The daemons publish only what
repmgr's metadata names (publishing rule 1), so that sleep sits between "writable" and any
publish. With `service_promote_command` repmgr runs that command instead, and `pg_ctl -w`
returns once promoted (it polls every 100 ms), so repmgr's first check succeeds.

Each failover gets a fresh 3-node repmgr cluster with repmgrd (node1 primary) and a fresh
`agrajag daemon` per node, publishing under its own cluster name into one ZooKeeper kept
for the whole run. Once node1 is published and all three daemons are live, this process
watches from outside, with time.monotonic() as the one clock:

- writers: a thread per node keeps a connection (connect_timeout=1) and tries a one-row
  INSERT every 5 ms; `writable` is the first INSERT committed by a node other than node1
  after the crash (the instant its COMMIT returned);
- the master znode: a kazoo DataWatch on /agrajag/<cluster>/master; `published` is the
  first notification whose record names a node other than node1;
- `crash` is the instant just before `pg_ctl -m immediate stop` is run on node1.

Per failover it records crash->writable (repmgrd's own failover), writable->published (what
agrajag adds) and crash->published, plus the profile of the path: repmgr's event rows
(`repmgr.events`, microsecond timestamps) and the publishing daemon's log line (trigger,
publisher), converted to the same monotonic clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from kazoo.client import KazooClient

from tools.bench.failovers import (
    SetupFailed,
    dispose,
    prepare,
    publish_round,
    run_failovers,
    wait_settled,
)
from tools.harness.agrajag import EVENT_COMMAND, EVENT_COMMAND_CLI, DaemonProc
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.watch import MasterWatch
from tools.harness.zookeeper import ZkEnsemble

WRITE = "INSERT INTO agrajag_bench_writes (node) VALUES (%s)"
WRITE_INTERVAL_S = 0.005
ROOT = "/agrajag"
FAILOVER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Mode:
    name: str
    poll_interval_s: float
    notify: bool
    #: repmgr's `service_promote_command` = `pg_ctl -w promote`: repmgr then finds the node
    #: promoted on its first check, instead of after `sleep(promote_check_interval)` (1 s).
    pg_ctl_promote: bool = False
    #: the hook is `agrajag notify` (the full command line) instead of `agrajag-notify`.
    cli_hook: bool = False


MODES = {
    "notify": Mode("notify", 5.0, True),
    "notify-pgctl": Mode("notify-pgctl", 5.0, True, pg_ctl_promote=True),
    "cli-notify-pgctl": Mode("cli-notify-pgctl", 5.0, True, pg_ctl_promote=True, cli_hook=True),
    "poll": Mode("poll", 1.0, False),
    "poll5": Mode("poll5", 5.0, False),
}
GROUPS = {
    "both": ["notify", "poll"],
    "all": ["notify", "notify-pgctl", "poll", "poll5"],
    "hooks": ["notify-pgctl", "cli-notify-pgctl"],
}


class Writer(threading.Thread):
    """Tries a tiny INSERT on one node every WRITE_INTERVAL_S; remembers what it needs."""

    def __init__(self, node: PgNode) -> None:
        super().__init__(name=f"bench-writer-{node.name}", daemon=True)
        self.node = node
        self.stopping = threading.Event()
        self.armed_at: float | None = None  # only writes that end after this count as "first"
        self.first_ok: float | None = None
        self.last_ok: float | None = None
        self.attempts = 0
        self.ready = threading.Event()  # one attempt answered by the server (either way)

    def arm(self, at: float) -> None:
        self.armed_at = at

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        host="127.0.0.1",
                        port=self.node.port,
                        user="repmgr",
                        dbname="repmgr",
                        connect_timeout=1,
                        autocommit=True,
                        application_name="bench-writer",
                    )
                self.attempts += 1
                conn.execute(WRITE, (self.node.name,))
                done = time.monotonic()
                self.last_ok = done
                if self.first_ok is None and self.armed_at is not None and done > self.armed_at:
                    self.first_ok = done
                self.ready.set()
            except psycopg.errors.ReadOnlySqlTransaction:
                self.ready.set()
            except psycopg.Error:
                if conn is not None and conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = None
            self.stopping.wait(WRITE_INTERVAL_S)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


@dataclass
class Sample:
    mode: str
    index: int
    cluster: str
    new_primary: str = ""
    published: str = ""
    published_by: str = ""
    trigger: str = ""
    epoch: int = 0
    crash_to_writable_s: float | None = None
    writable_to_published_s: float | None = None
    crash_to_published_s: float | None = None
    old_last_write_after_crash_s: float | None = None  # node1's last accepted write
    events: list[dict[str, Any]] = field(default_factory=list)  # repmgr's, +s after crash
    publish_log_s: float | None = None  # the publishing daemon's log line, +s after crash
    promote_event_s: float | None = None  # repmgr's standby_promote row, +s after crash
    round_ms: dict[str, float] = field(default_factory=dict)  # the publishing round's phases
    loadavg_1m: float = 0.0  # at the crash: the machine is shared with other work
    error: str = ""


def _pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": _pct(values, 50) * 1e3,
        "p99_ms": _pct(values, 99) * 1e3,
        "max_ms": max(values) * 1e3,
        "min_ms": min(values) * 1e3,
        "mean_ms": statistics.fmean(values) * 1e3,
    }


def repmgr_events(node: PgNode) -> list[tuple[float, int, str]]:
    """repmgr's event rows on `node`: (wall-clock time, node id, event)."""
    rows = node.sql(
        "SELECT extract(epoch FROM event_timestamp)::float8, node_id, event"
        " FROM repmgr.events ORDER BY event_timestamp"
    )
    return [(float(str(t)), int(str(n)), str(e)) for t, n, e in rows]


def one_failover(
    zk: ZkEnsemble, client: KazooClient, mode: Mode, index: int, attempt: int, keep: bool
) -> Sample:
    name = f"bench-{mode.name}-{index:03d}" + (f"-retry{attempt}" if attempt else "")
    sample = Sample(mode.name, index, name)
    crashed: float | None = None
    hook = EVENT_COMMAND_CLI if mode.cli_hook else EVENT_COMMAND
    cluster = PgCluster(
        3, event_command=hook if mode.notify else None, pg_ctl_promote=mode.pg_ctl_promote
    )
    daemons: list[DaemonProc] = []
    writers: list[Writer] = []
    try:
        old = prepare(cluster)
        daemons = [
            DaemonProc(n, zk.hosts, cluster=name, root=ROOT, poll_interval_s=mode.poll_interval_s)
            for n in cluster.nodes
        ]
        for d in daemons:
            d.start()
        base = f"{ROOT}/{name}"
        wait_settled(client, base, old, cluster.nodes)
        writers = [Writer(n) for n in cluster.nodes]
        for w in writers:
            w.start()
        for w in writers:
            if not w.ready.wait(10):
                raise SetupFailed(f"the writer on {w.node.name} got no answer from the server")
        watch = MasterWatch(client, f"{base}/master", old.name)
        # A random phase against the daemons' poll timers.
        time.sleep(random.uniform(0.0, mode.poll_interval_s))

        sample.loadavg_1m = os.getloadavg()[0]
        offset = time.time() - time.monotonic()  # wall = monotonic + offset
        crashed = time.monotonic()
        for w in writers:
            w.arm(crashed)
        old.crash()
        watch.changed.wait(FAILOVER_TIMEOUT_S)
        # The writers may be a poll interval behind the watch: give them a moment.
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: any(w.first_ok for w in writers[1:]),
                timeout=FAILOVER_TIMEOUT_S,
                what="a writable candidate",
            )
        first_writes = [(w.first_ok, w.node.name) for w in writers[1:] if w.first_ok]
        if writers[0].last_ok is not None:
            sample.old_last_write_after_crash_s = writers[0].last_ok - crashed
        if not first_writes:
            sample.error = "no candidate became writable"
        if watch.first is None:
            sample.error = (sample.error + "; " if sample.error else "") + "never published"
        if first_writes and watch.first:
            writable_at, sample.new_primary = min(first_writes)
            published_at, record = watch.first
            sample.published = str(record["node"])
            sample.published_by = str(record.get("published_by", ""))
            sample.epoch = int(record["epoch"])
            sample.crash_to_writable_s = writable_at - crashed
            sample.writable_to_published_s = published_at - writable_at
            sample.crash_to_published_s = published_at - crashed
            if sample.published != sample.new_primary:
                sample.error = f"published {sample.published}, {sample.new_primary} took writes"
            _profile(sample, cluster, daemons, offset + crashed)
    except Exception as exc:  # one broken failover must not end the whole run
        sample.error = f"{type(exc).__name__}: {exc}"
        if crashed is None:
            sample.error = f"setup: {sample.error}"
    finally:
        for w in writers:
            w.stop()
        for d in daemons:
            d.stop()
        dispose(cluster, keep, sample.error)
    if crashed is None:
        raise SetupFailed(sample.error)
    return sample


def _profile(
    sample: Sample, cluster: PgCluster, daemons: list[DaemonProc], crash_wall: float
) -> None:
    """repmgr's events and the publishing daemon's log line, in seconds after the crash."""
    new = cluster.node(sample.new_primary)
    with contextlib.suppress(psycopg.Error):
        sample.events = [
            {"at_s": round(t - crash_wall, 4), "node_id": n, "event": e}
            for t, n, e in repmgr_events(new)
            if t >= crash_wall - 1
        ]
    promotes = [e["at_s"] for e in sample.events if e["event"] == "standby_promote"]
    sample.promote_event_s = promotes[0] if promotes else None
    publisher = next((d for d in daemons if d.node.name == sample.published_by), None)
    if publisher is None:
        return
    deadline = time.monotonic() + 3  # the daemon may log a moment after the watch fired
    while not sample.round_ms and time.monotonic() < deadline:
        _read_publish_round(sample, publisher.output(), crash_wall)
        if not sample.round_ms:
            time.sleep(0.1)


def _read_publish_round(sample: Sample, log: str, crash_wall: float) -> None:
    """The publishing daemon's `decision=publish` line and its DEBUG `round` line after it."""
    with contextlib.suppress(LookupError):
        at, sample.trigger, sample.round_ms = publish_round(log, sample.published, crash_wall - 1)
        sample.publish_log_s = round(at - crash_wall, 4)


def _around_event(s: Sample) -> tuple[float, float] | None:
    """(writable -> standby_promote row, standby_promote row -> published), if all known."""
    if s.promote_event_s is None or s.crash_to_writable_s is None:
        return None
    if s.crash_to_published_s is None:
        return None
    return (
        s.promote_event_s - s.crash_to_writable_s,
        s.crash_to_published_s - s.promote_event_s,
    )


def report(samples: list[Sample], modes: list[Mode]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for mode in modes:
        ok = [s for s in samples if s.mode == mode.name and not s.error]
        result[mode.name] = {
            "settings": asdict(mode),
            "failovers": sum(1 for s in samples if s.mode == mode.name),
            "errors": [s.error for s in samples if s.mode == mode.name and s.error],
            "writable_to_published": summary([s.writable_to_published_s or 0.0 for s in ok]),
            "crash_to_writable": summary([s.crash_to_writable_s or 0.0 for s in ok]),
            "crash_to_published": summary([s.crash_to_published_s or 0.0 for s in ok]),
            # repmgr's part after writable: its metadata names the new primary only then.
            "writable_to_promote_event": summary([a[0] for s in ok if (a := _around_event(s))]),
            # agrajag's part: from repmgr's standby_promote row to the znode notification.
            "promote_event_to_published": summary([a[1] for s in ok if (a := _around_event(s))]),
            # From repmgr's row to the start of the publishing round: for notify, the hook
            # (`sh -c agrajag-notify`, run by repmgr) and the wake-up; for poll, the wait.
            "promote_event_to_round_start": summary(
                [
                    s.publish_log_s - s.round_ms["total"] / 1e3 - s.promote_event_s
                    for s in ok
                    if s.publish_log_s is not None
                    and s.promote_event_s is not None
                    and "total" in s.round_ms
                ]
            ),
            # The publishing round, as the daemon timed it (ms, p50 / max per phase).
            "publishing_round_ms": {
                phase: {
                    "p50": statistics.median(vals),
                    "max": max(vals),
                }
                for phase in ("woke", "repmgr", "check", "registry", "publish", "total")
                if (vals := [s.round_ms[phase] for s in ok if phase in s.round_ms])
            },
            "triggers": {t: sum(1 for s in ok if s.trigger == t) for t in {s.trigger for s in ok}},
        }
    return result


METRICS = (
    "writable_to_published",
    "crash_to_writable",
    "crash_to_published",
    "writable_to_promote_event",
    "promote_event_to_published",
    "promote_event_to_round_start",
)


def print_table(result: dict[str, Any]) -> None:
    print()
    print(f"{'mode':<12} {'n':>3}  {'metric':<28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for mode, r in result.items():
        for metric in METRICS:
            s = r[metric]
            if not s["n"]:
                print(f"{mode:<12} {0:>3}  {metric:<28} {'-':>8} {'-':>8} {'-':>8}")
                continue
            print(
                f"{mode:<12} {s['n']:>3}  {metric:<28}"
                f" {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}"
            )
        phases = ", ".join(f"{k} {v['p50']:.0f}" for k, v in r["publishing_round_ms"].items())
        print(f"{mode:<12} publishing round p50 ms: {phases}; triggers {r['triggers']}")
        if r["errors"]:
            print(f"{mode:<12} errors: {r['errors']}")


def _line(s: Sample) -> str:
    if s.error:
        return f"ERROR {s.error}"
    assert s.writable_to_published_s is not None and s.crash_to_writable_s is not None
    return (
        f"writable->published {s.writable_to_published_s * 1e3:7.1f} ms"
        f"  crash->writable {s.crash_to_writable_s * 1e3:7.1f} ms"
        f"  {s.new_primary} by {s.published_by} ({s.trigger}, load {s.loadavg_1m:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bench_failover")
    parser.add_argument("--failovers", type=int, default=20, help="per mode (default 20)")
    parser.add_argument("--mode", default="both", choices=[*MODES, *GROUPS])
    parser.add_argument("--keep", action="store_true", help="keep every cluster's directory")
    parser.add_argument("out", nargs="?", default="bench-results/failover.json")
    args = parser.parse_args()
    modes = [MODES[m] for m in GROUPS.get(args.mode, [args.mode])]
    out = Path(args.out)
    started = time.monotonic()
    plan = [(f"{mode.name:<6} #{i:<3}", (i, mode)) for i in range(args.failovers) for mode in modes]

    def one(zk: ZkEnsemble, client: KazooClient, item: tuple[int, Mode], attempt: int) -> Sample:
        return one_failover(zk, client, item[1], item[0], attempt, args.keep)

    samples, setup_failures = run_failovers(plan, one, _line, keep=args.keep)
    result = report(samples, modes)
    print_table(result)
    notify = result.get("notify", {}).get("writable_to_published", {})
    ratios = {
        f"{m}_p50_over_notify_p50": r["writable_to_published"]["p50_ms"] / notify["p50_ms"]
        for m, r in result.items()
        if m != "notify" and notify.get("n") and r["writable_to_published"]["n"]
    }
    for key, value in ratios.items():
        print(f"{key}: {value:.1f}x")
    data = {
        "benchmark": "failover_publish",
        "measured": (
            "writable: first INSERT committed by a node other than the crashed primary, tried"
            f" every {WRITE_INTERVAL_S * 1e3:.0f} ms per node on a kept connection; published:"
            " first DataWatch notification of the master znode naming another node; crash:"
            " just before `pg_ctl -m immediate stop` of the primary; one monotonic clock"
        ),
        "summary": result,
        "ratios": ratios,
        "samples": [asdict(s) for s in samples],
        "settings": {
            "failovers_per_mode": args.failovers,
            "nodes": 3,
            "daemon": {
                "check_deadline_s": 1.0,
                "zookeeper_call_timeout_s": 1.0,
                "session_timeout_s": 4.0,
            },
            "repmgrd": {
                "failover": "automatic",
                "monitor_interval_secs": 1,
                "reconnect_attempts": 2,
                "reconnect_interval": 1,
            },
            "event_command": EVENT_COMMAND,
            "zookeeper": "one standalone server, tickTime 500 ms, on loopback",
        },
        "machine": {
            "note": f"{os.cpu_count()} cores, shared with other work running at the same time",
            "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "setup_failures_rebuilt": setup_failures,
        "runtime_s": round(time.monotonic() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"-> {out} ({data['runtime_s']} s)")


if __name__ == "__main__":
    main()
