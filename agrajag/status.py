"""`agrajag status`: what ZooKeeper says, readable at a glance (or as JSON).

For each cluster: the master and its epoch, the live daemons, each watcher's applied epoch
and how far behind it is, and the last changes from the history.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from typing import Any

from agrajag.config import ZooKeeperSettings, load_yaml
from agrajag.errors import ConfigError
from agrajag.record import MasterRecord
from agrajag.registry.client import Registry
from agrajag.registry.errors import Unavailable
from agrajag.registry.values import Session


def collect(registry: Registry, clusters: list[str], history: int = 5) -> dict[str, Any]:
    """The registry's state as plain data, one entry per cluster."""
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
        result[cluster] = {
            "master": _record(master),
            "master_problem": current.problem,
            "daemons": {
                name: (rec if isinstance(rec, str) else asdict(rec))
                for name, rec in registry.node_records(cluster).items()
            },
            "watchers": watchers,
            "history": [_record(r) for r in registry.history(cluster, last=history)],
        }
    return result


def _record(record: MasterRecord | None) -> dict[str, Any] | None:
    return None if record is None else {k: v for k, v in asdict(record).items() if k != "evidence"}


def render(state: dict[str, Any]) -> str:
    """Terminal text: one block per cluster."""
    if not state:
        return "no clusters registered\n"
    lines: list[str] = []
    for cluster, info in state.items():
        m = info["master"]
        if m:
            lines.append(
                f"{cluster}: master {m['node']} ({m['host']}:{m['port']})  epoch {m['epoch']}"
                f"  timeline {m['timeline'] if m['timeline'] is not None else '?'}"
                f"  published {m['published_at']} by {m['published_by']}"
            )
        else:
            lines.append(f"{cluster}: NO MASTER PUBLISHED" + _problem(info["master_problem"]))
        daemons = info["daemons"]
        lines.append(f"  daemons ({len(daemons)} live): {' '.join(daemons) or '-'}")
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
            lines.append(
                f"    epoch {h['epoch']}: {h['node']} ({h['host']}:{h['port']}) "
                f"at {h['published_at']} by {h['published_by']}"
            )
    return "\n".join(lines) + "\n"


def _problem(problem: str | None) -> str:
    return f" (master znode unreadable: {problem})" if problem else ""


def run_status(args: argparse.Namespace) -> int:
    if args.config:  # a daemon's or a watcher's: its identity reads
        zk = ZooKeeperSettings.from_section(load_yaml(args.config).section("zookeeper"))
    else:
        zk = ZooKeeperSettings(hosts=args.zookeeper)
    zk = replace(zk, root=args.root or zk.root)
    root = zk.root
    registry = Registry.connect(zk, start_timeout=5.0)
    try:
        if registry.session is not Session.CONNECTED:
            raise Unavailable(f"cannot reach ZooKeeper at {zk.hosts}")
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
        raise ConfigError(f"no such cluster under {root}: {', '.join(unknown)}")
    return 0
