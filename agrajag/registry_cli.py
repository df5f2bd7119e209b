"""`agrajag registry`: an operator's look at, and care of, one cluster's subtree.

- `show`: every znode of the subtree with its data.
- `trim-history --keep N`: delete all but the newest N history entries (the history is
  never trimmed otherwise; the newest entry is what epochs continue from, so N >= 1).
- `reset`: after a cluster was rebuilt (its timelines restarted, so the daemons would refuse
  its primary as `stale_timeline`): delete the master so that the daemons publish afresh, and
  write a history entry, saying who reset it and why, whose epoch is above every epoch in
  use (the master's, the history's, every watcher's acknowledgement), so that epochs keep
  increasing and no watcher refuses the next master as stale.

`--dry-run` says what would change and changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from agrajag.errors import AgrajagError
from agrajag.record import MasterRecord, utc_now
from agrajag.registry.maintenance import Maintenance
from agrajag.registry.operator import open_registry
from agrajag.registry.values import Znode
from agrajag.zookeeper_settings import Role

NOT_CONFIRMED = 1


def trim_plan(names: Sequence[str], keep: int) -> list[str]:
    """The history entries to delete to keep the newest `keep` (names sorted oldest first).

    >>> trim_plan(["epoch-01", "epoch-02", "epoch-03"], 2), trim_plan(["epoch-01"], 2)
    (['epoch-01'], [])
    """
    return list(names[: max(len(names) - keep, 0)])


def reset_entry(
    base: MasterRecord, epoch: int, by: str, reason: str, now: str | None = None
) -> MasterRecord:
    """The history entry of a reset: the last master known (where the watchers still route
    until the daemons publish), at `epoch`, by `by`, with the reason in its evidence. Its
    timeline is unknown: the rebuilt cluster's start again."""
    return dataclasses.replace(
        base,
        epoch=epoch,
        timeline=None,
        published_by=by,
        published_at=now or utc_now(),
        evidence={"reset": {"by": by, "reason": reason, "previous_epoch": base.epoch}},
    )


def operator_name() -> str:
    """Who runs the command, as `user@host` (the host's short name)."""
    return f"{getpass.getuser()}@{socket.gethostname().split('.')[0]}"


def run_registry(args: argparse.Namespace) -> int:
    # trim-history and reset write as the daemons do (their ACLs); show only reads
    registry = open_registry(args, Role.READER if args.action == "show" else Role.DAEMON)
    try:
        if args.action == "show":
            return show(registry, args.cluster)
        if args.action == "trim-history":
            return trim_history(registry, args.cluster, args.keep, args.dry_run)
        return reset(registry, args)
    finally:
        registry.close()


def show(registry: Maintenance, cluster: str) -> int:
    znodes = registry.tree(cluster)
    if not znodes:
        raise AgrajagError(f"no cluster {cluster!r} under {registry.root}")
    for znode in znodes:
        sys.stdout.write(describe(znode))
    return 0


def describe(znode: Znode) -> str:
    """One znode: its path, kind, version and time, then its data (JSON indented).

    >>> print(describe(Znode("/agrajag/main/master", b'{"epoch": 3}', 2, 0, 0)), end="")
    /agrajag/main/master  persistent  version 2  modified 1970-01-01T00:00:00Z
        {
          "epoch": 3
        }
    """
    kind = (
        f"ephemeral (session {znode.ephemeral_owner:#x})" if znode.ephemeral_owner else "persistent"
    )
    when = datetime.fromtimestamp(znode.modified_ms / 1000, UTC).isoformat(timespec="seconds")
    head = (
        f"{znode.path}  {kind}  version {znode.version}  modified {when.replace('+00:00', 'Z')}\n"
    )
    if not znode.data:
        return head
    try:
        text = json.dumps(json.loads(znode.data), indent=2, sort_keys=True)
    except ValueError:
        text = repr(znode.data)
    return head + "".join(f"    {line}\n" for line in text.splitlines())


def trim_history(registry: Maintenance, cluster: str, keep: int, dry_run: bool) -> int:
    names = registry.history_names(cluster)
    doomed = trim_plan(names, keep)
    verb = "would delete" if dry_run else "deleting"
    span = f" ({doomed[0]} .. {doomed[-1]})" if doomed else ""
    print(f"{cluster}: {len(names)} history entries; {verb} {len(doomed)}{span}, keeping {keep}")
    if not dry_run:
        registry.delete_history(cluster, doomed)
    return 0


def reset(registry: Maintenance, args: argparse.Namespace) -> int:
    cluster = args.cluster
    current = registry.read_master(cluster)
    history = registry.history(cluster, last=1)
    base = current.record or (history[-1] if history else None)
    if base is None:
        raise AgrajagError(
            f"{cluster}: neither a readable master nor a history entry under {registry.root}: "
            "nothing to reset"
        )
    epoch = registry.epoch_floor(cluster) + 1  # above every epoch in use (rule 6)
    entry = reset_entry(base, epoch, operator_name(), args.reason)
    master = (
        f"master {current.record.node} ({current.record.host}:{current.record.port}) epoch "
        f"{current.record.epoch}"
        if current.record
        else f"no readable master ({current.problem or 'absent'})"
    )
    print(f"{cluster}: {master}; highest epoch in use {epoch - 1}")
    print(
        f"reset: delete the master and add history entry epoch {epoch} by {entry.published_by} "
        f"({args.reason!r}); the daemons then publish the primary they find as epoch {epoch + 1}"
    )
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    if not args.yes and not confirmed(cluster):
        print("not confirmed: nothing changed", file=sys.stderr)
        return NOT_CONFIRMED
    registry.reset(cluster, entry, current.version)
    print(f"{cluster}: reset at epoch {epoch}")
    return 0


def confirmed(cluster: str) -> bool:
    try:
        answer = input(f"type the cluster name ({cluster}) to reset it: ")
    except EOFError:
        return False
    return answer.strip() == cluster
