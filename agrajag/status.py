"""`agrajag status`: what ZooKeeper says, readable at a glance (or as JSON).

For each cluster: the master and its epoch, the live daemons with their last decision and
since when (a suspected split brain first), each watcher's applied epoch and how far behind
it is, and the last changes from the history.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from agrajag.errors import ConfigError
from agrajag.reasons import Reason
from agrajag.record import MasterRecord, NodeRecord
from agrajag.registry.client import Registry
from agrajag.registry.operator import open_registry


def collect(
    registry: Registry, clusters: list[str], history: int = 5, now: datetime | None = None
) -> dict[str, Any]:
    """The registry's state as plain data, one entry per cluster; each daemon's last verdict
    with its age in seconds at `now`, and which daemons suspect a split brain."""
    now = now or datetime.now(UTC)
    result: dict[str, Any] = {}
    for cluster in clusters:
        current = registry.read_master(cluster)
        master = current.record
        watchers: dict[str, dict[str, Any]] = {}
        for agent, ack in registry.watchers(cluster).items():
            if isinstance(ack, str):
                watchers[agent] = {"error": ack}
            else:
                behind = (master.epoch - ack.applied_epoch) if master else None
                watchers[agent] = {**asdict(ack), "behind": behind}
        daemons = {name: _daemon(rec, now) for name, rec in registry.node_records(cluster).items()}
        result[cluster] = {
            "master": _record(master),
            "master_problem": current.problem,
            "daemons": daemons,
            "split_brain_suspected_by": sorted(
                name for name, d in daemons.items() if d.get("reason") == Reason.SPLIT_BRAIN
            ),
            "watchers": watchers,
            "history": [_record(r) for r in registry.history(cluster, last=history)],
        }
    return result


def _daemon(record: NodeRecord | str, now: datetime) -> dict[str, Any]:
    if isinstance(record, str):
        return {"error": record}
    return {**asdict(record), "age_s": _age_s(record.decided_at, now)}


def _age_s(timestamp: str | None, now: datetime) -> float | None:
    """Seconds since `timestamp` (a record's ISO 8601 UTC time); None if absent or invalid."""
    try:
        then = datetime.fromisoformat(timestamp) if timestamp else None
    except ValueError:
        return None
    if then is None or then.tzinfo is None:
        return None
    return round((now - then).total_seconds(), 1)


def _record(record: MasterRecord | None) -> dict[str, Any] | None:
    """The record without its evidence, but with the reason of an `agrajag registry reset`."""
    if record is None:
        return None
    shown = {k: v for k, v in asdict(record).items() if k != "evidence"}
    reset = record.evidence.get("reset")
    return {**shown, "reset": reset} if isinstance(reset, dict) else shown


def render(state: dict[str, Any]) -> str:
    """Terminal text: one block per cluster."""
    if not state:
        return "no clusters registered\n"
    lines: list[str] = []
    for cluster, info in state.items():
        m = info["master"]
        if m and m["withdrawn"]:
            lines.append(
                f"{cluster}: NO MASTER: {m['node']} ({m['host']}:{m['port']}) WITHDRAWN at epoch"
                f" {m['epoch']} {m['published_at']} by {m['published_by']}: {m['withdrawn']};"
                " nothing routes to it"
            )
        elif m:
            lines.append(
                f"{cluster}: master {m['node']} ({m['host']}:{m['port']})  epoch {m['epoch']}"
                f"  timeline {m['timeline'] if m['timeline'] is not None else '?'}"
                f"  published {m['published_at']} by {m['published_by']}"
            )
        else:
            lines.append(f"{cluster}: NO MASTER PUBLISHED" + _problem(info["master_problem"]))
        suspects = info["split_brain_suspected_by"]
        if suspects:
            lines.append(
                f"  !! SPLIT BRAIN SUSPECTED by {', '.join(suspects)}: more than one node accepts"
                " writes; nothing is published until exactly one does"
            )
        daemons = info["daemons"]
        lines.append(f"  daemons ({len(daemons)} live):")
        lines.extend(f"    {name}: {_verdict(d)}" for name, d in daemons.items())
        lines.append(f"  watchers ({len(info['watchers'])}):")
        for agent, w in info["watchers"].items():
            if "error" in w:
                lines.append(f"    {agent}: unreadable ({w['error']})")
                continue
            lag = "converged" if w["behind"] == 0 else f"BEHIND by {w['behind']}"
            lines.append(
                f"    {agent}: applied epoch {w['applied_epoch']} at {w['applied_at']}  {lag}"
            )
        lines.append("  history:")
        for h in reversed(info["history"]):
            reset = f"  RESET: {h['reset'].get('reason')!r}" if "reset" in h else ""
            withdrawn = "  WITHDRAWN" if h["withdrawn"] else ""
            lines.append(
                f"    epoch {h['epoch']}: {h['node']} ({h['host']}:{h['port']}) "
                f"at {h['published_at']} by {h['published_by']}{withdrawn}{reset}"
            )
    return "\n".join(lines) + "\n"


def _verdict(daemon: dict[str, Any]) -> str:
    """`id 2  refuse split_brain for 2m05s`: what the daemon last decided, and since when."""
    if "error" in daemon:
        return f"unreadable ({daemon['error']})"
    node_id = "?" if daemon["node_id"] is None else daemon["node_id"]
    if daemon["decision"] is None:
        return f"id {node_id}  no decision yet"
    verdict = " ".join(filter(None, [daemon["decision"], daemon["reason"]]))
    age = "" if daemon["age_s"] is None else f" for {_duration(daemon['age_s'])}"
    return f"id {node_id}  {verdict}{age}"


def _duration(seconds: float) -> str:
    """A short age for a terminal.

    >>> [_duration(s) for s in (4.2, 125, 7322)]
    ['4s', '2m05s', '2h02m']
    """
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _problem(problem: str | None) -> str:
    return f" (master znode unreadable: {problem})" if problem else ""


def run_status(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    try:
        clusters = args.cluster or registry.clusters()
        state = collect(registry, clusters)
    finally:
        registry.close()
    if args.json:
        json.dump(state, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(state))
    unknown = [c for c in clusters if not state[c]["master"] and not state[c]["history"]]
    if args.cluster and unknown:
        raise ConfigError(f"no such cluster under {registry.root}: {', '.join(unknown)}")
    return 0
