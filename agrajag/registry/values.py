"""The registry's plain values: paths, session states, what was read. No kazoo here.

Kept apart from the client (as kazoo keeps `ZnodeStat` apart from `KazooClient`) so that the
publishing rules and the watcher's rules take these values without loading a ZooKeeper client.

>>> Paths("/agrajag", "main").node("node2")
'/agrajag/main/nodes/node2'
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agrajag.record import MasterRecord


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
