"""Soak: fault campaigns (tools/campaign) on successive seeds for a time budget, one report.

    python -m tools.bench.bench_soak [--minutes 25] [--steps 8] [--first-seed 100]
                                     [--out reports/soak]
    python -m tools.bench.bench_soak --judge bench-results/soak [--steps 8] [--out ...]

Writes OUT/report.json and OUT/summary.txt: per seed its schedule, violations and client
writes; over all seeds the faults by kind with the longest client write outage each caused
(per client, the longest gap between two acknowledged writes that overlaps the fault), and
the seeds to rerun (`python -m tools.campaign.run --seed N --steps S`). Histories go to
bench-results/soak/; `--judge DIR` writes the report again from the histories saved there,
judged by the checker as it is now (after a change to the checker), without running
anything. Needs root (network namespaces), except to judge.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from tools.campaign import checker
from tools.campaign.history import History
from tools.campaign.nemesis import schedule
from tools.campaign.run import Outcome, run


def outage_by_fault(h: History) -> list[tuple[str, str, float]]:
    """(fault kind, proxy, longest gap in seconds between two acknowledged writes of that
    proxy's client that overlaps the fault), for every fault and proxy."""
    acked: dict[str, list[float]] = defaultdict(list)
    for w in h.writes:
        if w.ok:
            acked[w.client.rsplit("-", 1)[-1]].append(w.at)
    return [
        (
            f.kind,
            proxy,
            max(
                (b - a for a, b in itertools.pairwise(times) if b >= f.start and a <= f.end),
                default=0.0,
            ),
        )
        for f in h.faults
        for proxy, times in sorted(acked.items())
    ]


def seed_entry(seed: int, steps: int, outcome: Outcome, seconds: float) -> dict[str, Any]:
    h = outcome.history
    return {
        "seed": seed,
        "rerun": f"python -m tools.campaign.run --seed {seed} --steps {steps}",
        "seconds": round(seconds, 1),
        "schedule": h.schedule,
        "records": len(h.records),
        "failovers": len({(r.node, r.timeline) for r in h.records}) - 1,
        "writes": vars(outcome.writes),
        "violations": [
            f"{v.rule} at +{v.at - h.start:.1f}s: {v.detail}" for v in outcome.violations
        ],
        "outages": [
            {"kind": k, "proxy": p, "max_gap_s": round(g, 3)} for k, p, g in outage_by_fault(h)
        ],
    }


def summarize(entries: list[dict[str, Any]], steps: int, minutes: float) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for entry in entries:
        for outage in entry.get("outages", []):
            by_kind[f"{outage['kind']} {outage['proxy']}"].append(outage["max_gap_s"])
    totals: dict[str, int] = defaultdict(int)
    for entry in entries:
        for key, value in entry.get("writes", {}).items():
            totals[key] += value
    return {
        "budget_minutes": minutes,
        "steps_per_seed": steps,
        "seeds": len(entries),
        "faults": sum(len(e.get("schedule", [])) for e in entries if "error" not in e),
        "failovers": sum(e.get("failovers", 0) for e in entries),
        "writes": dict(totals),
        "violations": sum(len(e.get("violations", [])) for e in entries),
        "errors": sum(1 for e in entries if "error" in e),
        "failing_seeds": [e["seed"] for e in entries if e.get("violations") or "error" in e],
        "outage_by_kind": {
            kind: {
                "count": len(gaps),
                "p50_s": round(statistics.median(gaps), 3),
                "max_s": round(max(gaps), 3),
            }
            for kind, gaps in sorted(by_kind.items())
        },
    }


def text_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    w = s["writes"]
    lines = [
        f"Fault campaign soak: {s['seeds']} seeds x {s['steps_per_seed']} steps, "
        f"{s['faults']} faults, {s['failovers']} failovers published.",
        f"Client writes (HAProxy and PgBouncer): {w.get('attempted', 0)} attempted, "
        f"{w.get('acknowledged', 0)} acknowledged, of which "
        f"{w.get('acknowledged_superseded', 0)} by a primary another node had superseded; "
        f"lost: {w.get('lost_to_failover', 0)} to a failover (asynchronous replication), "
        f"{w.get('lost_to_split_brain', 0)} to a split brain, "
        f"{w.get('lost_otherwise', 0)} otherwise.",
        f"Violations: {s['violations']}; campaigns that could not run to the end: {s['errors']}.",
        "",
        "Longest client write outage per fault, by the proxy the client writes through (s):",
        f"{'fault and proxy':38} {'count':>5} {'p50':>7} {'max':>7}",
    ]
    for kind, o in s["outage_by_kind"].items():
        lines.append(f"{kind:38} {o['count']:>5} {o['p50_s']:>7.2f} {o['max_s']:>7.2f}")
    for entry in report["seeds"]:
        if entry.get("violations") or "error" in entry:
            lines += ["", f"seed {entry['seed']} ({entry['rerun']}):"]
            lines += [f"  step: {step}" for step in entry["schedule"]]
            lines += [f"  violation: {v}" for v in entry.get("violations", [])]
            if "error" in entry:
                last = [ln for ln in entry["error"].splitlines() if ln.strip()][-1]
                lines.append(f"  error: {last}")
    return "\n".join(lines) + "\n"


def judged(path: Path, steps: int) -> dict[str, Any]:
    """The entry of a saved history, judged again."""
    h = History.load(path)
    outcome = Outcome(h, checker.check(h), checker.write_report(h))
    return seed_entry(h.seed, steps, outcome, h.end - h.start)


def ran(first_seed: int, steps: int, minutes: float) -> list[dict[str, Any]]:
    """Campaigns on successive seeds while the time budget lasts, one entry each."""
    deadline = time.monotonic() + minutes * 60
    entries: list[dict[str, Any]] = []
    seed, last = first_seed, 0.0
    while time.monotonic() + last < deadline:
        started = time.monotonic()
        try:
            outcome = run(seed, steps, out=Path("bench-results/soak"))
            entries.append(seed_entry(seed, steps, outcome, time.monotonic() - started))
        except Exception:
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            rerun = f"python -m tools.campaign.run --seed {seed} --steps {steps}"
            plan = [str(step) for step in schedule(seed, steps)]
            entries.append({"seed": seed, "schedule": plan, "error": error, "rerun": rerun})
        last = time.monotonic() - started
        seed += 1
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("reports/soak"))
    parser.add_argument("--judge", type=Path, help="judge the histories saved in this folder")
    args = parser.parse_args(argv)
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # the recorders' reconnects
    if args.judge:
        paths = sorted(args.judge.glob("history-seed*.json"), key=lambda p: int(p.stem[12:]))
        entries = [judged(path, args.steps) for path in paths]
    else:
        entries = ran(args.first_seed, args.steps, args.minutes)
    report: dict[str, Any] = {
        "summary": summarize(entries, args.steps, args.minutes),
        "seeds": entries,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = text_summary(report)
    (args.out / "summary.txt").write_text(summary)
    print(summary)
    return 1 if report["summary"]["failing_seeds"] else 0


if __name__ == "__main__":
    sys.exit(main())
