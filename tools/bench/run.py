"""Run agrajag's benchmarks one after the other: `make bench` (or `python -m tools.bench.run`).

    python -m tools.bench.run [--quick] [NAME ...]

Each benchmark prints its percentiles and writes its JSON under bench-results/. They start
real ZooKeeper, PostgreSQL + repmgr, HAProxy and PgBouncer on 127.0.0.1, like the tests.
`--quick` runs fewer failovers (a smoke run of the whole set, a few minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: name -> module and its arguments (full, quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "repmgr_parse": ("tools.bench.bench_repmgr_parse", [], []),
    "probe": ("tools.bench.bench_probe", [], []),
    "sinks": ("tools.bench.bench_sinks", [], []),
    "watch_fanout": ("tools.bench.bench_watch_fanout", [], []),
    "client_downtime": (
        "tools.bench.bench_client_downtime",
        ["--failovers", "10"],
        ["--failovers", "2"],
    ),
    "failover": (
        "tools.bench.bench_failover",
        ["--mode", "all", "--failovers", "20"],
        ["--mode", "notify-pgctl", "--failovers", "3"],
    ),
    "silent_failover": (
        "tools.bench.bench_silent_failover",
        ["--failovers", "6"],
        ["--failovers", "2"],
    ),
    "withdrawal": ("tools.bench.bench_withdrawal", ["--runs", "10"], ["--runs", "2"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer failovers")
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    failed = []
    for name in args.names or list(BENCHMARKS):
        module, full, quick = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", module, *(quick if args.quick else full)])
        print(f"== {name}: exit {done.returncode} in {time.monotonic() - started:.0f} s")
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
