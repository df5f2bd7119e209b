"""The registry's plain values: paths, session states, what was read. No kazoo here.

Kept apart from the client (as kazoo keeps `ZnodeStat` apart from `KazooClient`) so that the
publishing rules and the watcher's rules take these values without loading a ZooKeeper client.

>>> Paths("/agrajag", "main").node("node2")
'/agrajag/main/nodes/node2'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from agrajag.record import MasterRecord, RecordError

R = TypeVar("R")


class Session(StrEnum):
    """A process's view of its ZooKeeper session (kazoo's states, named for agrajag)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Current:
    """The master znode as read: the record (None if absent or unreadable), its version and its
    epoch (0 without a record); the publisher also takes the registry's whole epoch floor."""

    record: MasterRecord | None
    version: int  # -1: the znode does not exist
    last_epoch: int
    problem: str | None = None  # why an existing znode could not be used

    @classmethod
    def parse(cls, path: str, answer: tuple[bytes, Any] | None) -> Current:
        """From kazoo's (data, stat) of the master znode, None when it does not exist."""
        if answer is None:
            return cls(None, -1, 0)
        data, stat = answer
        try:
            record = MasterRecord.from_json(data, source=path)
        except RecordError as exc:
            return cls(None, int(stat.version), 0, str(exc))
        return cls(record, int(stat.version), record.epoch)


def parse_all(
    answers: Iterable[tuple[str, tuple[bytes, Any] | None]], parse: Callable[[bytes, str], R]
) -> dict[str, R | str]:
    """Each (path, kazoo's (data, stat)) parsed, or why it could not be, by znode name; one
    gone meanwhile (None) is left out: ephemeral nodes come and go."""
    parsed: dict[str, R | str] = {}
    for path, answer in answers:
        if answer is not None:
            name = path.rpartition("/")[2]
            try:
                parsed[name] = parse(answer[0], path)
            except RecordError as exc:
                parsed[name] = str(exc)
    return parsed


@dataclass(frozen=True, slots=True)
class Paths:
    """Znode paths of one cluster."""

    root: str
    cluster: str

    @property
    def base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.cluster}"

    @property
    def master(self) -> str:
        return f"{self.base}/master"

    @property
    def nodes(self) -> str:
        return f"{self.base}/nodes"

    @property
    def history(self) -> str:
        return f"{self.base}/history"

    @property
    def watchers(self) -> str:
        return f"{self.base}/watchers"

    def node(self, name: str) -> str:
        return f"{self.nodes}/{name}"

    def watcher(self, agent: str) -> str:
        return f"{self.watchers}/{agent}"


@dataclass(frozen=True, slots=True)
class Znode:
    """One znode as an operator sees it (`agrajag registry show`)."""

    path: str
    data: bytes
    version: int
    ephemeral_owner: int  # the owning session; 0 for a persistent znode
    modified_ms: int  # ZooKeeper's mtime, milliseconds since the epoch
