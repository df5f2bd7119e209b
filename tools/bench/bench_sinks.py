"""How long a sink takes from a new master record to the proxy routing there (not a test).

Usage: python -m tools.bench.bench_sinks [OUT.json]
Builds a 2-node cluster (no repmgrd), starts HAProxy and PgBouncer with the shipped
templates, then switches each sink SWITCHES times between the two live nodes while a client
session is held through the proxy. Per switch it times `apply` (render, check, swap, runtime
API or reload, session cut) and "routed": until a new client through the proxy lands on the
new node. Prints p50/p99 and writes them as JSON to OUT.json (default bench-results/sinks.json).
"""

from __future__ import annotations

import functools
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agrajag.record import MasterRecord
from agrajag.sinks.base import FileSink
from agrajag.sinks.haproxy import HAProxySink
from agrajag.sinks.pgbouncer import PgBouncerSink
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.proxies import HAProxy, PgBouncer, client, served_by

SWITCHES = 50
WARMUP = 3


def master(node: PgNode, epoch: int, host: str) -> MasterRecord:
    return MasterRecord("main", epoch, node.node_id, node.name, host, node.port, 1, "b", "b", {})


def lands_on(port: int, expected: int) -> bool:
    with client(port) as conn:
        return served_by(conn)[0] == expected


def switch_times(
    sink: FileSink, proxy_port: int, nodes: list[PgNode], host: str
) -> dict[str, float]:
    """Switch back and forth; p50/p99 of apply and of routed, in ms."""
    applied, routed = [], []
    sink.apply({"main": master(nodes[1], 1, host)})
    for i in range(WARMUP + SWITCHES):
        node = nodes[i % 2]
        with client(proxy_port):  # a session the switch has to deal with
            started = time.perf_counter()
            result = sink.apply({"main": master(node, i + 2, host)})
            done = time.perf_counter()
            # At least the held session; the previous probe's may still be closing in HAProxy.
            assert result.changed, result
            assert result.cut_sessions is None or result.cut_sessions >= 1, result
            wait_until(
                functools.partial(lands_on, proxy_port, node.port), timeout=5, what="routing"
            )
            arrived = time.perf_counter()
        if i >= WARMUP:
            applied.append(done - started)
            routed.append(arrived - started)
    return {**percentiles("apply", applied), **percentiles("routed", routed)}


def percentiles(name: str, samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {f"{name}_p50_ms": cuts[49] * 1e3, f"{name}_p99_ms": cuts[98] * 1e3}


def with_haproxy(nodes: list[PgNode], host: str) -> dict[str, float]:
    haproxy = HAProxy()
    try:
        sink = HAProxySink.from_mapping(haproxy.sink_section(), "bench")
        haproxy.config.write_text(sink.render({}))
        haproxy.start()
        return switch_times(sink, haproxy.port, nodes, host)
    finally:
        haproxy.stop()
        shutil.rmtree(haproxy.dir, ignore_errors=True)


def with_pgbouncer(nodes: list[PgNode]) -> dict[str, float]:
    bouncer = PgBouncer()
    try:
        sink = PgBouncerSink.from_mapping(bouncer.sink_section("reconnect"), "bench")
        bouncer.write_config("")
        bouncer.start()
        return switch_times(sink, bouncer.port, nodes, "127.0.0.1")
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.dir, ignore_errors=True)


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "bench-results/sinks.json")
    cluster = PgCluster(2)
    runs: dict[str, Callable[[list[PgNode]], dict[str, float]]] = {
        # an IP literal: `set server addr` at runtime, no reload
        "haproxy_runtime": lambda nodes: with_haproxy(nodes, "127.0.0.1"),
        # a host name cannot be set at runtime: every switch reloads HAProxy
        "haproxy_reload": lambda nodes: with_haproxy(nodes, "localhost"),
        "pgbouncer_reconnect": with_pgbouncer,
    }
    try:
        cluster.create()
        results = {name: run(cluster.nodes) for name, run in runs.items()}
    finally:
        cluster.destroy()
        shutil.rmtree(cluster.base, ignore_errors=True)
    report = {
        "benchmark": "sink_switch",
        "switches": SWITCHES,
        "results": results,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(
            f"{name}: apply p50 {r['apply_p50_ms']:.1f} ms p99 {r['apply_p99_ms']:.1f} ms;"
            f" routed p50 {r['routed_p50_ms']:.1f} ms p99 {r['routed_p99_ms']:.1f} ms"
        )
    print(f"{SWITCHES} switches each -> {out}")


if __name__ == "__main__":
    main(sys.argv)
