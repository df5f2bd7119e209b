"""The registry as an operator reads it: master, history (with when ZooKeeper stored each
record), live daemons and watcher acknowledgements, through a client of its own with the
watchers' identity (every znode is under ACLs that let watchers read)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from agrajag.zookeeper_settings import Role
from tools.harness.identities import kazoo_auth
from tools.harness.watch import ROOT


@dataclass(frozen=True)
class Stored:
    """One znode's JSON and the time ZooKeeper wrote it (seconds since the epoch)."""

    name: str
    data: dict[str, Any]
    at: float


class RegistryReader:
    def __init__(self, hosts: str, cluster: str = "main", timeout: float = 10) -> None:
        self.base = f"{ROOT}/{cluster}"
        self.client = KazooClient(hosts=hosts, timeout=timeout, auth_data=kazoo_auth(Role.WATCHER))
        self.client.start(timeout=30)

    def _get(self, path: str) -> Stored | None:
        try:
            data, stat = self.client.retry(self.client.get, path)
        except NoNodeError:
            return None
        return Stored(path.rsplit("/", 1)[-1], json.loads(data), stat.mtime / 1000)

    def _children(self, sub: str) -> list[str]:
        try:
            return sorted(self.client.retry(self.client.get_children, f"{self.base}/{sub}"))
        except NoNodeError:
            return []

    def master(self) -> dict[str, Any] | None:
        stored = self._get(f"{self.base}/master")
        return stored.data if stored else None

    def routed_node(self) -> str | None:
        """The node the master record routes to: none when absent or withdrawn."""
        master = self.master()
        return None if master is None or master.get("withdrawn") else str(master["node"])

    def keep_among(self, writable: list[str]) -> str | None:
        """Of several writable nodes, the one to keep as the primary: the published master,
        or, when the record withdrew it as a former primary, another one."""
        master = self.master()
        if master is None:
            return None
        if master.get("withdrawn"):
            return next((n for n in writable if n != master["node"]), None)
        return str(master["node"]) if master["node"] in writable else None

    def history(self) -> list[Stored]:
        """Every published record in publication order."""
        found = (self._get(f"{self.base}/history/{n}") for n in self._children("history"))
        return [s for s in found if s is not None]

    def live(self) -> list[str]:
        return self._children("nodes")

    def acks(self) -> dict[str, int]:
        """Each watcher's applied epoch, by agent."""
        found = {n: self._get(f"{self.base}/watchers/{n}") for n in self._children("watchers")}
        return {n: int(s.data["applied_epoch"]) for n, s in found.items() if s is not None}

    def close(self) -> None:
        self.client.stop()
        self.client.close()
