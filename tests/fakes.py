"""In-memory stand-ins for the daemon's I/O: plain objects, no ZooKeeper, no PostgreSQL.

Not a test module: the unit tests of the daemon import these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agrajag.reasons import Reason
from agrajag.record import MasterRecord, NodeRecord
from agrajag.registry.errors import RegistryError
from agrajag.registry.values import Current, Session


@dataclass
class FakeRegistry:
    """The registry as the daemon sees it: a master znode, liveness nodes, a history.

    `fail` maps a method name to the RegistryError it raises; `lose_next_publish` makes the
    next publish lose its compare-and-set to `rival` (another daemon's record, written first).
    """

    session: Session = Session.CONNECTED
    master: MasterRecord | None = None
    version: int = -1
    nodes: dict[str, int] = field(default_factory=dict)  # node -> liveness node version
    history: list[MasterRecord] = field(default_factory=list)
    fail: dict[str, RegistryError] = field(default_factory=dict)
    rival: MasterRecord | None = None
    published: list[tuple[MasterRecord, int, int | None]] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)  # watcher -> applied epoch
    layout: bool = True  # False: history/ was deleted, a publish fails until ensure_layout
    records: dict[str, NodeRecord] = field(default_factory=dict)  # liveness records written

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def on_session(self, listener: Callable[[Session], None]) -> None:
        pass

    def ensure_layout(self, cluster: str) -> None:
        self._maybe_fail("ensure_layout")
        self.layout = True

    def register_node(self, cluster: str, record: NodeRecord) -> bool:
        self._maybe_fail("register_node")
        created = record.node not in self.nodes
        self.nodes.setdefault(record.node, 0)
        if created:
            self.records[record.node] = record
        return created

    def update_node(self, cluster: str, record: NodeRecord) -> None:
        self._maybe_fail("update_node")
        if record.node in self.nodes:
            self.nodes[record.node] += 1  # a write bumps the guard's version
            self.records[record.node] = record

    def unregister_node(self, cluster: str, node: str) -> None:
        self.nodes.pop(node, None)

    def read_master(self, cluster: str) -> Current:
        self._maybe_fail("read_master")
        return Current(self.master, self.version, self.master.epoch if self.master else 0)

    def epoch_floor(self, cluster: str) -> int:
        self._maybe_fail("epoch_floor")
        epochs = [r.epoch for r in self.history] + list(self.acks.values())
        return max([self.master.epoch if self.master else 0, *epochs])

    def guard_version(self, cluster: str, node: str) -> int | None:
        return self.nodes.get(node)

    def live_nodes(self, cluster: str) -> list[str]:
        return sorted(self.nodes)

    def publish(
        self, record: MasterRecord, master_version: int, guard_version: int | None
    ) -> Reason | None:
        """As `Registry.publish`: no guard (None) only for a withdrawn record."""
        self._maybe_fail("publish")
        assert (guard_version is None) == (not record.routes)
        self.published.append((record, master_version, guard_version))
        if self.rival is not None:
            self._write(self.rival)
            self.rival = None
        if guard_version is not None and self.nodes.get(record.node) != guard_version:
            return Reason.GUARD_MISSING
        if master_version != self.version:
            return Reason.LOST_RACE
        if not self.layout:
            return Reason.LAYOUT_MISSING
        self._write(record)
        return None

    def _write(self, record: MasterRecord) -> None:
        self.master = record
        self.version += 1
        self.history.append(record)
