"""Who may do what on each znode of the registry, and bringing an existing tree under it.

ZooKeeper ACLs belong to one znode each and are not inherited, so every znode agrajag
creates carries its own (the daemon's and the watcher's clients pass theirs on every create),
and `secure_tree` fixes a tree created before ACLs were configured:

    root, <cluster>, master, nodes/*, history/*    daemons: all;  watchers: read
    <cluster>/watchers                             daemons: all;  watchers: read, create
    <cluster>/watchers/<agent>                     watchers: read, write;  daemons: read, admin

A watcher can therefore create its own acknowledgement, never the master, a history entry
or a daemon's liveness node, nor delete anything (deleting takes DELETE on the parent).
`world_read` adds read for anyone; nothing else is granted to `world:anyone`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol

from agrajag.zookeeper_settings import AclSettings, Role


class Perm(IntFlag):
    """ZooKeeper's permission bits."""

    READ = 1
    WRITE = 2
    CREATE = 4
    DELETE = 8
    ADMIN = 16
    ALL = 31


_LETTERS = ((Perm.READ, "r"), (Perm.WRITE, "w"), (Perm.CREATE, "c"), (Perm.DELETE, "d"))


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ACL entry: `perms` for `scheme:id`.

    >>> str(Grant("digest", "agrajag-watch:Jb0vRCNX0hOiTd2EyBIO0Wl1Uvc=", Perm.READ))
    'digest:agrajag-watch=r'
    """

    scheme: str
    id: str
    perms: int

    def __str__(self) -> str:
        # the digest half of an id is a hash of the password: it stays out of the output
        who = self.id.partition(":")[0] if self.scheme == "digest" else self.id
        letters = "".join(c for p, c in (*_LETTERS, (Perm.ADMIN, "a")) if self.perms & p)
        return f"{self.scheme}:{who}={letters or '-'}"


def _digests(ids: tuple[str, ...], perms: Perm) -> list[Grant]:
    return [Grant("digest", i, int(perms)) for i in ids]


@dataclass(frozen=True, slots=True)
class Policy:
    """The ACL each kind of znode must carry, from the `zookeeper.acl` settings."""

    settings: AclSettings

    def _with_world(self, grants: list[Grant]) -> frozenset[Grant]:
        if self.settings.world_read:
            grants.append(Grant("world", "anyone", int(Perm.READ)))
        return frozenset(_merge(grants))

    def tree(self) -> frozenset[Grant]:
        """The daemons' znodes: the root, each cluster, master, nodes/*, history/*."""
        return self._with_world(
            _digests(self.settings.daemons, Perm.ALL) + _digests(self.settings.watchers, Perm.READ)
        )

    def watchers_dir(self) -> frozenset[Grant]:
        """<cluster>/watchers: watchers may create their acknowledgement in it."""
        return self._with_world(
            _digests(self.settings.daemons, Perm.ALL)
            + _digests(self.settings.watchers, Perm.READ | Perm.CREATE)
        )

    def ack(self) -> frozenset[Grant]:
        """<cluster>/watchers/<agent>: the watcher's own; daemons (and `status`) read it."""
        return self._with_world(
            _digests(self.settings.watchers, Perm.READ | Perm.WRITE)
            + _digests(self.settings.daemons, Perm.READ | Perm.ADMIN)
        )

    def created_by(self, role: Role) -> frozenset[Grant]:
        """The ACL `role`'s client creates znodes with (`ensure_layout` gives watchers/ its
        own); `status` creates nothing."""
        if role is Role.DAEMON:
            return self.tree()
        if role is Role.WATCHER:
            return self.ack()
        return frozenset()

    def for_path(self, root: str, path: str) -> frozenset[Grant]:
        """The ACL of the znode at `path` under `root`, by its place in the layout.

        >>> p = Policy(AclSettings(("d:" + "a" * 27 + "=",), ("w:" + "b" * 27 + "=",)))
        >>> for x in ("/agrajag/main/master", "/agrajag/main/watchers", "/agrajag/main/watchers/a"):
        ...     print(x, *sorted(map(str, p.for_path("/agrajag", x))))
        /agrajag/main/master digest:d=rwcda digest:w=r
        /agrajag/main/watchers digest:d=rwcda digest:w=rc
        /agrajag/main/watchers/a digest:d=ra digest:w=rw
        """
        parts = path[len(root) :].strip("/").split("/")
        if len(parts) == 2 and parts[1] == "watchers":
            return self.watchers_dir()
        if len(parts) == 3 and parts[1] == "watchers":
            return self.ack()
        return self.tree()


def _merge(grants: list[Grant]) -> Iterator[Grant]:
    """One entry per identity (an id in both lists gets both sets of rights)."""
    perms: dict[tuple[str, str], int] = {}
    for g in grants:
        perms[(g.scheme, g.id)] = perms.get((g.scheme, g.id), 0) | g.perms
    return (Grant(scheme, id_, p) for (scheme, id_), p in perms.items())


class AclStore(Protocol):
    """What `secure_tree` needs of the registry (a `Registry` is one)."""

    def children(self, path: str) -> list[str]: ...

    def acl(self, path: str) -> tuple[frozenset[Grant], int] | None: ...

    def set_acl(self, path: str, grants: frozenset[Grant], version: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One znode whose ACL was (or, in a dry run, would be) replaced."""

    path: str
    before: frozenset[Grant]
    after: frozenset[Grant]

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}"


def _show(grants: frozenset[Grant]) -> str:
    return " ".join(sorted(map(str, grants))) or "(none)"


def secure_tree(
    store: AclStore, root: str, policy: Policy, *, dry_run: bool = False
) -> tuple[int, list[Change]]:
    """Give every znode under `root` (root included) the ACL its place calls for; znodes that
    already have it are left alone, so running it again changes nothing. Parents first: the
    caller (a daemon identity) keeps its rights all the way down. Returns how many znodes
    were seen and what changed; a znode that vanishes meanwhile is skipped."""
    seen = 0
    changes: list[Change] = []
    pending = [root]
    while pending:
        path = pending.pop()
        current = store.acl(path)
        if current is None:
            continue
        seen += 1
        grants, version = current
        wanted = policy.for_path(root, path)
        if grants != wanted:
            if not dry_run:
                store.set_acl(path, wanted, version)
            changes.append(Change(path, grants, wanted))
        prefix = path.rstrip("/")
        pending.extend(f"{prefix}/{child}" for child in reversed(store.children(path)))
    return seen, changes
