"""How long one INSERT-check round takes on a healthy 3-node repmgr cluster (not a test).

Usage: python -m tools.bench.bench_probe [OUT.json]
Builds its own cluster with the test harness (no repmgrd: nothing fails over here), applies
conf.d/agrajag-schema.sql, times ROUNDS rounds as the `agrajag` role, prints p50/p99 and
writes them as JSON to OUT.json (default bench-results/probe.json), then tears it all down.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from agrajag.daemon.probe import check_round
from agrajag.daemon.probe_values import Credentials, ProbeTarget
from tools.harness.postgres import CHECK_PASSWORD, CHECK_USER, PgCluster

ROUNDS = 500
WARMUP = 20
SCHEMA_SQL = Path(__file__).resolve().parents[2] / "conf.d" / "agrajag-schema.sql"


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "bench-results/probe.json")
    cluster = PgCluster(3)
    try:
        cluster.create()
        cluster.nodes[0].sql(SCHEMA_SQL.read_text())
        targets = [ProbeTarget(n.name, "127.0.0.1", n.port, "repmgr") for n in cluster.nodes]
        credentials = Credentials(CHECK_USER, CHECK_PASSWORD)
        samples = []
        for i in range(WARMUP + ROUNDS):
            started = time.perf_counter()
            probe = check_round(targets, credentials, checker="node1")
            elapsed = time.perf_counter() - started
            assert probe.writable == ("node1",), probe
            if i >= WARMUP:
                samples.append(elapsed)
    finally:
        cluster.destroy()
        shutil.rmtree(cluster.base, ignore_errors=True)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    result = {
        "benchmark": "check_round",
        "nodes": len(targets),
        "rounds": ROUNDS,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "max_ms": max(samples) * 1e3,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(targets)} nodes, {ROUNDS} rounds: p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms -> {out}"
    )


if __name__ == "__main__":
    main(sys.argv)
