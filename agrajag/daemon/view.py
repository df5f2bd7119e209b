"""repmgr's view of the cluster as typed immutable values: nodes, the primary, the problems.

Apart from the parser (`repmgr`) so that the publishing rules take a view without loading
anything that runs or parses repmgr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agrajag.reasons import Reason


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason not to trust the view, with a human detail naming the nodes.

    >>> str(Problem(Reason.NO_PRIMARY, "no node is primary and '* running'").reason)
    'no_primary'
    """

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Node:
    """One row of the table, as seen from the node that ran the command.

    Values are repmgr's, stripped; only the role `master` (repmgr 3.x) is renamed
    `primary`, so that decisions compare against one spelling. repmgr 3.x has no
    ID column: its nodes are numbered 1..n in table order. Missing columns give
    "" (text) or None. `conninfo` is left out of the repr: it may hold a password. `host`
    and `port` are where libpq would connect (the default port filled in); when the conninfo
    names no single TCP address, `address_problem` says why.
    """

    node_id: int
    name: str
    role: str
    status: str
    status_marker: str
    upstream: str
    upstream_marker: str
    location: str
    priority: int | None
    timeline: int | None
    conninfo: str | None = field(repr=False)
    host: str | None
    port: int | None
    dbname: str | None
    address_problem: str | None = None  # why host/port cannot be checked or published

    @property
    def is_witness(self) -> bool:
        """A repmgr witness: a separate PostgreSQL that holds no data of the cluster and is
        writable by design, so it is never INSERT-checked nor published (rules 1 and 2)."""
        return self.role == "witness"

    @property
    def is_running_primary(self) -> bool:
        """Role `primary` with status exactly `* running`: the only shape of a live primary."""
        return self.role == "primary" and self.status_marker == "*" and self.status == "running"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """All nodes of one `repmgr cluster show`, in table order; build it with parse_cluster_show.

    After a failover two rows have role primary; the failed one does not count:

    >>> from agrajag.daemon.repmgr import parse_cluster_show
    >>> view = parse_cluster_show('''\\
    ...  ID | Name  | Role    | Status    | Upstream
    ... ----+-------+---------+-----------+---------
    ...  1  | node1 | primary | - failed  |
    ...  2  | node2 | primary | * running |
    ...  3  | node3 | standby |   running | node2
    ... ''')
    >>> view.primary.name, view.problems
    ('node2', ())
    """

    nodes: tuple[Node, ...]

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every reason this view names no primary; empty exactly when `primary` is set."""
        candidates = [node for node in self.nodes if node.is_running_primary]
        found: list[Problem] = []
        if not candidates:
            found.append(Problem(Reason.NO_PRIMARY, "no node is primary and '* running'"))
        elif len(candidates) > 1:
            names = ", ".join(_describe(node) for node in candidates)
            found.append(Problem(Reason.MULTIPLE_PRIMARIES, f"primary and '* running': {names}"))
        found.extend(
            Problem(Reason.ANOMALY, f"{_describe(node)} shows '! {node.status}'")
            for node in self.nodes
            if node.status_marker == "!"
        )
        return tuple(found)

    @property
    def primary(self) -> Node | None:
        """The one node that is primary and `* running`, if that is all the view says.

        None when no node or several nodes qualify, or when any node has a `!`
        status (e.g. a former primary back without `node rejoin`, whose stale
        metadata shows itself `* running` and the real primary `! running as primary`).
        """
        if self.problems:
            return None
        return next(node for node in self.nodes if node.is_running_primary)

    @property
    def data_nodes(self) -> tuple[Node, ...]:
        """The nodes that hold the cluster's data: all but the witnesses."""
        return tuple(node for node in self.nodes if not node.is_witness)

    def by_name(self, name: str) -> Node | None:
        """The node called `name`, if any (names are unique in a view)."""
        return next((node for node in self.nodes if node.name == name), None)

    def by_id(self, node_id: int) -> Node | None:
        """The node with id `node_id`, if any (ids are unique in a view)."""
        return next((node for node in self.nodes if node.node_id == node_id), None)


def _describe(node: Node) -> str:
    return f"{node.name!r} (ID {node.node_id})"
