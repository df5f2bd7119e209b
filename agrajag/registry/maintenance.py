"""The registry as operators care for it: `agrajag registry` (look at a cluster's tree, trim
its history, reset it after a rebuilt cluster) and `agrajag secure-registry` (ACLs).

A `Registry` with more methods, apart so that the daemons' and watchers' client stays small;
the same bounded calls and the same error boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from kazoo.exceptions import NoNodeError

from agrajag.record import MasterRecord
from agrajag.registry.acl import Grant
from agrajag.registry.boundary import edge
from agrajag.registry.client import Registry
from agrajag.registry.connection import kazoo_acl
from agrajag.registry.errors import RegistryError
from agrajag.registry.values import Paths, Znode


class Maintenance(Registry):
    """`Registry` plus the operators' reads and repairs."""

    # -- operator maintenance (`agrajag registry`) -------------------------------------------

    @edge
    def tree(self, cluster: str) -> list[Znode]:
        """Every znode of the cluster's subtree, each parent before its children, sorted."""
        found, pending = [], [Paths(self.root, cluster).base]
        while pending:
            path = pending.pop()
            try:
                data, stat = self._call("get", path)
                children = self._call("get_children", path)
            except NoNodeError:
                continue  # gone meanwhile (an ephemeral node, a trimmed entry)
            found.append(Znode(path, data, stat.version, stat.ephemeralOwner, stat.mtime))
            pending.extend(f"{path}/{child}" for child in sorted(children, reverse=True))
        return found

    @edge
    def history_names(self, cluster: str) -> list[str]:
        """The names of the history entries, oldest first (sequence numbers sort as text)."""
        return self._children(Paths(self.root, cluster).history)

    @edge
    def delete_history(self, cluster: str, names: Sequence[str]) -> None:
        history = Paths(self.root, cluster).history
        for name in names:
            with contextlib.suppress(NoNodeError):
                self._call("delete", f"{history}/{name}")

    @edge
    def reset(self, cluster: str, entry: MasterRecord, master_version: int) -> None:
        """In ONE multi-op: delete the master read at `master_version` (-1: read as absent) and
        add `entry` to the history, so the daemons republish above its epoch. ZooKeeper has no
        "check absent": creating and deleting the master in the same multi-op fails if a
        daemon published meanwhile. Anything changed since it was read: RegistryError."""
        paths = Paths(self.root, cluster)
        tx = self.client.transaction()
        if master_version < 0:
            tx.create(paths.master, b"")
            master_version = 0
        tx.delete(paths.master, master_version)
        tx.create(f"{paths.history}/epoch-", entry.to_json(), sequence=True)
        results = self._commit(tx)
        if any(isinstance(r, Exception) for r in results):
            raise RegistryError(
                f"reset of {paths.base} not done: the master changed since it was read "
                f"({results!r}); look again and retry"
            )

    # -- ACLs (agrajag secure-registry) ----------------------------------------------------

    @edge
    def children(self, path: str) -> list[str]:
        return self._children(path)

    @edge
    def acl(self, path: str) -> tuple[frozenset[Grant], int] | None:
        """The znode's ACL and its ACL version; None when there is no such znode."""
        try:
            acls, stat = self._call("get_acls", path)
        except NoNodeError:
            return None
        return frozenset(Grant(a.id.scheme, a.id.id, a.perms) for a in acls), int(stat.aversion)

    @edge
    def set_acl(self, path: str, grants: frozenset[Grant], version: int) -> None:
        """Replace the znode's ACL if it is still at ACL `version` (else BadVersion)."""
        self._call("set_acls", path, kazoo_acl(grants), version)
