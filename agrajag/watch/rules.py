"""The watcher's decisions as pure functions of values, so they are tested without ZooKeeper.

Which record read from a znode may replace the last one, whether routing stays open while
ZooKeeper is silent, and how long a failing sink waits before the next try. The loop in
`agrajag.watch.loop` only gathers the values and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agrajag.record import MasterRecord


class Reason(StrEnum):
    """Why a record was refused; stable, they are metric labels."""

    INVALID = "invalid"  # not valid JSON of the schema, or a field unsafe for a config file
    STALE_EPOCH = "stale_epoch"  # would roll the master back (or rewrite an epoch)
    WRONG_CLUSTER = "wrong_cluster"  # the record names another cluster than its znode


@dataclass(frozen=True, slots=True)
class Accepted:
    """The record to follow from now on; `changed` when it differs from the last one."""

    record: MasterRecord
    changed: bool


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Reason
    detail: str


def accept(cluster: str, read: MasterRecord | str, last: MasterRecord | None) -> Accepted | Refused:
    """Judge what the znode of `cluster` holds (`read`: the record, or why it is unreadable)
    against `last`, the newest record accepted so far.

    An epoch never goes back; an epoch once seen keeps its master (the daemon bumps the epoch
    on every change of master and on a withdrawal, so the same epoch naming another server,
    or withdrawing it or not, is not trustworthy).
    Re-reading the same master at the same epoch keeps `last` as it is: nothing to apply.

    >>> rec = MasterRecord("main", 4, 1, "node1", "10.0.0.1", 5432, 1, "node1", "t", {})
    >>> accept("main", rec, None).changed
    True
    >>> accept("main", rec, rec).changed
    False
    >>> accept("other", rec, None).reason
    <Reason.WRONG_CLUSTER: 'wrong_cluster'>
    """
    if isinstance(read, str):
        return Refused(Reason.INVALID, read)
    if read.cluster != cluster:
        return Refused(
            Reason.WRONG_CLUSTER,
            f"the record names cluster {read.cluster!r}, its znode belongs to {cluster!r}",
        )
    if last is None or read.epoch > last.epoch:
        return Accepted(read, changed=True)
    if read.epoch < last.epoch:
        return Refused(
            Reason.STALE_EPOCH,
            f"epoch {read.epoch} is lower than epoch {last.epoch} already accepted",
        )
    if read.same_master(last):
        return Accepted(last, changed=False)
    return Refused(
        Reason.STALE_EPOCH,
        f"epoch {read.epoch} already names {_named(last)}, not {_named(read)}",
    )


def _named(record: MasterRecord) -> str:
    withdrawn = "" if record.routes else " (withdrawn)"
    return f"{record.node} at {record.host}:{record.port}{withdrawn}"


class FailMode(StrEnum):
    """What the sinks route to while ZooKeeper does not answer."""

    OPEN = "open"  # keep routing to the last good master
    CLOSED = "closed"  # after a grace period, route nowhere


def routed(
    accepted: Mapping[str, MasterRecord],
    mode: FailMode,
    silent_for: float,
    closed_after: float,
) -> dict[str, MasterRecord]:
    """The records the sinks render: the `routable` accepted ones, or none at all once a
    fail-closed watcher has not heard from ZooKeeper for `closed_after` seconds. A cluster
    missing from the answer has no master: the sinks render it without a server.

    >>> rec = MasterRecord("main", 4, 1, "node1", "10.0.0.1", 5432, 1, "node1", "t", {})
    >>> routed({"main": rec}, FailMode.OPEN, 3600, 30) == {"main": rec}
    True
    >>> routed({"main": rec}, FailMode.CLOSED, 30, 30)
    {}
    """
    if mode is FailMode.CLOSED and silent_for >= closed_after:
        return {}
    return routable(accepted)


def routable(accepted: Mapping[str, MasterRecord]) -> dict[str, MasterRecord]:
    """The records that name a master to route to: a withdrawn record names a former
    primary, and its cluster is routed nowhere until a new master is published.

    >>> rec = MasterRecord("main", 4, 1, "node1", "10.0.0.1", 5432, 1, "node1", "t", {})
    >>> gone = MasterRecord("other", 5, 1, "node1", "10.0.0.1", 5432, 1, "node2", "t", {},
    ...                     withdrawn="node1 takes writes on timeline 1, node2 on timeline 2")
    >>> list(routable({"main": rec, "other": gone}))
    ['main']
    """
    return {cluster: record for cluster, record in accepted.items() if record.routes}


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failing sink waits: doubling from `initial_s`, never beyond `max_s`."""

    initial_s: float = 1.0
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first).

        >>> [Backoff(1, 10).delay(n) for n in range(1, 7)]
        [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        """
        return float(min(self.max_s, self.initial_s * 2 ** min(failures - 1, 62)))
