"""What the daemon reads and writes, behind seams that unit tests replace with plain fakes:
the registry as a protocol (what `Registry` offers the daemon), repmgr's view and the INSERT
check as functions; and the refusal each kind of registry failure stands for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agrajag.daemon.decision import Refuse
from agrajag.daemon.probe import KeptConnections, check_round
from agrajag.daemon.probe_values import ProbeRound, ProbeTarget
from agrajag.daemon.repmgr import run_cluster_show
from agrajag.daemon.settings import CheckSettings, RepmgrSettings
from agrajag.daemon.view import ClusterView
from agrajag.reasons import Reason
from agrajag.record import MasterRecord, NodeRecord
from agrajag.registry.errors import NodeNameTaken, RegistryError, Unavailable
from agrajag.registry.values import Current, Session


class DaemonRegistry(Protocol):
    """The part of `Registry` the daemon uses (unit tests pass an in-memory one)."""

    @property
    def session(self) -> Session: ...

    def on_session(self, listener: Callable[[Session], None]) -> None: ...

    def ensure_layout(self, cluster: str) -> None: ...

    def register_node(self, cluster: str, record: NodeRecord) -> bool: ...

    def update_node(self, cluster: str, record: NodeRecord) -> None: ...

    def unregister_node(self, cluster: str, node: str) -> None: ...

    def read_master(self, cluster: str) -> Current: ...

    def guard_version(self, cluster: str, node: str) -> int | None: ...

    def epoch_floor(self, cluster: str) -> int: ...

    def live_nodes(self, cluster: str) -> list[str]: ...

    def publish(
        self, record: MasterRecord, master_version: int, guard_version: int | None
    ) -> Reason | None: ...


#: repmgr's view of the cluster (raises RepmgrError); tests pass a function returning a view.
ReadView = Callable[[RepmgrSettings], ClusterView]
#: One INSERT-check round over the targets, by the named checker; tests pass a function.
CheckNodes = Callable[[Sequence[ProbeTarget], CheckSettings, str], ProbeRound]


def read_view(repmgr: RepmgrSettings) -> ClusterView:
    """`repmgr cluster show`, parsed."""
    return run_cluster_show(
        repmgr.bin,
        repmgr.config,
        timeout=repmgr.timeout_s,
        connect_timeout=repmgr.connect_timeout_s,
    ).view


def check_nodes(
    targets: Sequence[ProbeTarget],
    check: CheckSettings,
    me: str,
    kept: KeptConnections | None = None,
) -> ProbeRound:
    """The INSERT check on every target at once, within the configured deadline; with
    `kept`, on the connections of the last round."""
    return check_round(
        targets,
        check.credentials,
        checker=me,
        deadline_s=check.deadline_s,
        connect_timeout_s=check.connect_timeout_s,
        kept=kept,
    )


def refusal(exc: RegistryError, prefix: str = "") -> Refuse:
    """The refusal a registry error stands for: each kind of failure has its own reason, so
    that a duplicate daemon name does not send operators to look at ZooKeeper."""
    if isinstance(exc, NodeNameTaken):
        reason = Reason.NODE_NAME_TAKEN
    elif isinstance(exc, Unavailable):
        reason = Reason.NOT_CONNECTED
    else:
        reason = Reason.REGISTRY_ERROR
    return Refuse(reason, f"{prefix}{exc}")
