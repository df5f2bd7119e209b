"""Client write downtime through PgBouncer over real failovers, as an application sees it.

Usage: python -m tools.bench.bench_pgbouncer_failover [--runs N] [--scenario S] [OUT.json]

For each run: a fresh repmgr cluster (3 nodes), PgBouncer in transaction pooling (sink
`cut: reconnect`) or session pooling (`cut: kill`), its `[databases]` file written by the
PgBouncer sink, and a client doing a one-row INSERT through PgBouncer every 10 ms on one
connection, reconnecting at once after an error (tools/harness/writer.py). Then:

- `crash`: `pg_ctl -m immediate stop` of the primary; repmgrd promotes a standby (with
  `service_promote_command = pg_ctl -w promote`, as recommended);
- `switchover`: the primary shut down cleanly (`pg_ctl -m fast`), a standby promoted, as
  `repmgr standby switchover` does (its ssh step aside).

As soon as the new primary takes writes (seen by polling every node every 20 ms) the sink
applies the new record; the watcher would do the same a few ms after the publish. Per run,
on one monotonic clock: `downtime`, the longest stretch without a committed client write
(from its last write on the old primary to its first after the apply); `promotion`, from
that same last write to the new primary taking writes; `downtime - promotion`, what
PgBouncer and the sink add (from the apply's start to the client's first write); `apply`,
the sink's apply. Runs of every mode are interleaved so that load from other work on this
shared machine falls on each alike. SIGINT/SIGTERM stop after the current run and write what
was measured. Default OUT is bench-results/pgbouncer_failover.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agrajag.record import MasterRecord
from agrajag.sinks.pgbouncer import PgBouncerSink
from tools.bench.bench_failover import summary
from tools.bench.failovers import SetupFailed, kill_started, run_plan
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.proxies import PgBouncer, switch_over_by_hand
from tools.harness.writer import TABLE, ClientWriter

POOLING = {"transaction": "reconnect", "session": "kill"}
SCENARIOS = ("crash", "switchover")


@dataclass
class Run:
    scenario: str
    pool_mode: str
    index: int
    promotion_s: float = 0.0
    downtime_s: float = 0.0
    downtime_minus_promotion_s: float = 0.0
    apply_s: float = 0.0
    stop_to_promotion_s: float = 0.0  # from the crash (or stop) order
    cut: str = ""
    client_errors: list[str] | None = None
    loadavg_1m: float = 0.0
    error: str = ""


def master(node: PgNode, epoch: int) -> MasterRecord:
    return MasterRecord(
        "main", epoch, node.node_id, node.name, "127.0.0.1", node.port, 1, "b", "b", {}
    )


def one_run(scenario: str, pool_mode: str, index: int) -> Run:
    run = Run(scenario, pool_mode, index)
    stopped: float | None = None
    cluster = PgCluster(3, pg_ctl_promote=True)
    bouncer = PgBouncer(pool_mode=pool_mode, fast_connect=False)
    try:
        cluster.create()
        old, candidate = cluster.nodes[0], cluster.nodes[1]
        old.sql(TABLE)
        if scenario == "crash":
            cluster.start_repmgrd()
        sink = PgBouncerSink.from_mapping(bouncer.sink_section(POOLING[pool_mode]), "bench")
        bouncer.write_config("")
        bouncer.start()
        sink.apply({"main": master(old, 1)})
        with ClientWriter(bouncer.port) as writer:
            wait_until(lambda: len(writer.written) > 20, timeout=10, what="client writes")
            run.loadavg_1m = os.getloadavg()[0]
            stopped = time.monotonic()
            if scenario == "crash":
                old.crash()
                new = cluster.wait_promotion(old, timeout=60)
            else:
                switch_over_by_hand(cluster, old, candidate)
                new = candidate
            promoted = time.monotonic()
            result = sink.apply({"main": master(new, 2)})
            applied = time.monotonic()
            wait_until(lambda: writer.wrote_after(applied), timeout=30, what="a client write after")
        gap = writer.longest_gap(stopped, applied)
        run.downtime_s = gap.seconds
        run.promotion_s = promoted - gap.start
        run.downtime_minus_promotion_s = gap.end - promoted
        run.apply_s = applied - promoted
        run.stop_to_promotion_s = promoted - stopped
        run.cut = result.detail
        run.client_errors = sorted(set(writer.errors))
    except Exception as exc:  # one broken run must not end the whole benchmark
        run.error = f"{type(exc).__name__}: {exc}"
        if stopped is None:
            raise SetupFailed(run.error) from exc
    finally:
        bouncer.stop()
        cluster.destroy()
        shutil.rmtree(bouncer.dir, ignore_errors=True)
        shutil.rmtree(cluster.base, ignore_errors=True)
    return run


METRICS = ("downtime_minus_promotion_s", "apply_s", "promotion_s", "downtime_s")


def report(runs: list[Run]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for scenario in SCENARIOS:
        for pool_mode in POOLING:
            mine = [r for r in runs if (r.scenario, r.pool_mode) == (scenario, pool_mode)]
            if not mine:
                continue
            ok = [r for r in mine if not r.error]
            result[f"{scenario}/{pool_mode}"] = {
                "runs": len(mine),
                "errors": [r.error for r in mine if r.error],
                "cuts": sorted({r.cut for r in ok}),
                **{m: summary([getattr(r, m) for r in ok]) for m in METRICS},
            }
    return result


def _line(run: Run) -> str:
    return run.error or (
        f"downtime {run.downtime_s * 1e3:7.1f} ms - promotion {run.promotion_s * 1e3:7.1f}"
        f" = {run.downtime_minus_promotion_s * 1e3:6.1f} ms; apply"
        f" {run.apply_s * 1e3:5.1f} ms ({run.cut}; {', '.join(run.client_errors or [])})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bench_pgbouncer_failover")
    parser.add_argument("--runs", type=int, default=10, help="per scenario and pooling mode")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both")
    parser.add_argument("out", nargs="?", default="bench-results/pgbouncer_failover.json")
    args = parser.parse_args()
    scenarios = SCENARIOS if args.scenario == "both" else (args.scenario,)
    plan = [(s, p, i) for i in range(args.runs) for s in scenarios for p in POOLING]
    started = time.monotonic()
    try:
        runs, setup_failures = run_plan(
            [(f"{s:<10} {p:<11} #{i}", (s, p, i)) for s, p, i in plan],
            lambda item, attempt: one_run(*item),
            _line,
        )
    finally:
        kill_started()
    result = report(runs)
    print(f"\n{'scenario/pooling':<23} {'n':>3} {'metric':<28} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in result.items():
        for metric in METRICS:
            s = r[metric]
            if s["n"]:
                print(
                    f"{name:<23} {s['n']:>3} {metric:<28} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f}"
                )
        if r["errors"]:
            print(f"{name:<23} errors: {r['errors']}")
    data = {
        "benchmark": "pgbouncer_failover_client",
        "measured": (
            "a client INSERTs through PgBouncer every 10 ms on one connection (reconnecting at"
            " once); downtime: longest gap between its committed writes across the failover;"
            " promotion: the crash (or clean stop) until the new primary took a write; the sink"
            " applies right then; one monotonic clock"
        ),
        "summary": result,
        "runs": [asdict(r) for r in runs],
        "setup_failures_rebuilt": setup_failures,
        "settings": {
            "pgbouncer": "1.18 with its default settings (pool_mode aside)",
            "repmgrd": "failover automatic, monitor 1 s, reconnect 2 x 1 s, pg_ctl -w promote",
        },
        "machine": {
            "note": f"{os.cpu_count()} cores, shared with other work running at the same time",
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
