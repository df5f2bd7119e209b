"""How long parse_cluster_show takes on a 200-node repmgr 5.x table (not a test).

Usage: python tests/bench/bench_repmgr_parse.py [OUT.json]
Prints p50/p99 and writes them as JSON to OUT.json (default bench-results/repmgr_parse.json).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from agrajag.daemon.repmgr import parse_cluster_show

NODES = 200
RUNS = 2000
WARMUP = 50


def table(nodes: int) -> str:
    """A `repmgr cluster show` table: node 1 primary, the rest standbys, padded like repmgr."""
    header = (
        " ID  | Name    | Role    | Status    | Upstream | Location | Priority | Timeline"
        " | Connection string"
    )
    rows = [
        f" {i:<3} | node{i:<3} | {'primary' if i == 1 else 'standby'} "
        f"| {'*' if i == 1 else ' '} running | {'' if i == 1 else 'node1':<8} | default  "
        f"| 100      | 7        | host=pg{i}.db.example.net port=5432 user=repmgr dbname=repmgr"
        " connect_timeout=2"
        for i in range(1, nodes + 1)
    ]
    separator = "+".join("-" * len(cell) for cell in header.split("|"))
    return "\n".join([header, separator, *rows, ""])


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "bench-results/repmgr_parse.json")
    text = table(NODES)
    view = parse_cluster_show(text)
    assert len(view.nodes) == NODES and view.primary is not None
    for _ in range(WARMUP):
        parse_cluster_show(text)
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter_ns()
        parse_cluster_show(text)
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    result = {
        "benchmark": "parse_cluster_show",
        "nodes": NODES,
        "runs": RUNS,
        "p50_ms": samples[RUNS // 2] / 1e6,
        "p99_ms": samples[RUNS * 99 // 100] / 1e6,
        "max_ms": samples[-1] / 1e6,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{NODES} nodes: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms -> {out}")


if __name__ == "__main__":
    main(sys.argv)
