"""One daemon round with its I/O faked by plain values: what it decides, writes and reports
when the registry, repmgr or the publish fail. No ZooKeeper, no PostgreSQL, no sleeping."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from agrajag.daemon.decision import Publish, Refuse, Unchanged
from agrajag.daemon.loop import Daemon
from agrajag.daemon.probe_values import Outcome, ProbeRound, ProbeTarget
from agrajag.daemon.repmgr import RepmgrError
from agrajag.daemon.settings import CheckSettings, DaemonSettings, RepmgrSettings
from agrajag.daemon.view import ClusterView
from agrajag.inbox import Inbox, Notified, SessionChanged, Wake
from agrajag.metrics import DaemonMetrics
from agrajag.reasons import Reason
from agrajag.registry.errors import NodeNameTaken, RegistryError, Unavailable
from agrajag.registry.values import Session
from tests.factories import (
    FAILED_OVER,
    HEALTHY,
    master_record,
    probe,
    repmgr_row,
    repmgr_view,
)
from tests.fakes import FakeRegistry

W, RO, DOWN = Outcome.WRITABLE, Outcome.READ_ONLY, Outcome.UNREACHABLE

CONFIG = """\
cluster: main
node: node3
zookeeper: {hosts: "127.0.0.1:2181"}
check: {user: agrajag}
"""


@pytest.fixture
def settings(tmp_path: Path) -> DaemonSettings:
    path = tmp_path / "daemon.yaml"
    path.write_text(CONFIG)
    return DaemonSettings.load(path)


def daemon(
    settings: DaemonSettings,
    registry: FakeRegistry,
    view: ClusterView | RepmgrError = HEALTHY,
    round_: ProbeRound | None = None,
) -> Daemon:
    checked = round_ or probe(node1=W, node2=RO, node3=RO)

    def read_view(_repmgr: RepmgrSettings) -> ClusterView:
        if isinstance(view, RepmgrError):
            raise view
        return view

    def check_nodes(targets: Sequence[ProbeTarget], _c: CheckSettings, _me: str) -> ProbeRound:
        return checked

    inbox = Inbox()
    return Daemon(
        settings, registry, DaemonMetrics(), inbox, read_view=read_view, check_nodes=check_nodes
    )


def live(*names: str) -> dict[str, int]:
    return dict.fromkeys(names, 0)


def test_a_round_publishes_repmgrs_primary_on_the_versions_it_read(
    settings: DaemonSettings,
) -> None:
    registry = FakeRegistry(nodes=live("node1", "node2"))
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Publish)
    assert registry.master is not None and registry.master.node == "node1"
    assert registry.published == [(decision.record, -1, 0)]
    assert "node3" in registry.nodes  # it registered its own liveness node


class Overlap:
    """repmgr and the INSERT check as fakes: the n-th read of repmgr waits up to `waits[n]`
    for an n-th check to have started, and records whether one had; each check records the
    nodes it got."""

    def __init__(
        self, views: list[ClusterView], rounds: list[ProbeRound], waits: list[float]
    ) -> None:
        self.views, self.rounds, self.waits = views, rounds, waits
        self.started = threading.Condition()
        self.checked: list[list[str]] = []
        self.overlapped: list[bool] = []

    def read_view(self, _repmgr: RepmgrSettings) -> ClusterView:
        n = len(self.overlapped) + 1
        with self.started:
            self.overlapped.append(
                self.started.wait_for(lambda: len(self.checked) >= n, self.waits.pop(0))
            )
        return self.views.pop(0)

    def check_nodes(
        self, targets: Sequence[ProbeTarget], _c: CheckSettings, _me: str
    ) -> ProbeRound:
        with self.started:
            self.checked.append([t.name for t in targets])
            self.started.notify_all()
        return self.rounds.pop(0)

    def daemon(self, settings: DaemonSettings, registry: FakeRegistry) -> Daemon:
        return Daemon(
            settings,
            registry,
            DaemonMetrics(),
            Inbox(),
            read_view=self.read_view,
            check_nodes=self.check_nodes,
        )


def test_from_the_second_round_the_check_runs_while_repmgr_is_read(
    settings: DaemonSettings,
) -> None:
    """A failover's round takes the longer of the two, not their sum; the nodes checked are
    the ones repmgr shows in that round, and publishing still needs both to agree."""
    fake = Overlap(
        [HEALTHY, FAILED_OVER],
        [probe(node1=W, node2=RO, node3=RO), probe(node1=DOWN, node2=W, node3=RO)],
        waits=[0, 5],
    )
    registry = FakeRegistry(nodes=live("node1", "node2"))
    d = fake.daemon(settings, registry)

    assert isinstance(d.round(), Publish)
    assert isinstance(d.round("notify_standby_promote"), Publish)

    assert fake.overlapped == [False, True]
    assert fake.checked == [["node1", "node2", "node3"]] * 2
    assert registry.master is not None and registry.master.node == "node2"


def test_a_view_with_other_nodes_is_checked_again_after_repmgr(settings: DaemonSettings) -> None:
    two_nodes = repmgr_view(
        repmgr_row(1, "primary", "* running", 1), repmgr_row(2, "standby", "  running", 1, "node1")
    )
    three = probe(node1=W, node2=RO, node3=RO)
    fake = Overlap([HEALTHY, two_nodes], [three, three, probe(node1=W, node2=RO)], waits=[0, 5])
    d = fake.daemon(settings, FakeRegistry(nodes=live("node1")))

    assert isinstance(d.round(), Publish)
    assert isinstance(d.round(), Unchanged)

    assert fake.checked == [["node1", "node2", "node3"]] * 2 + [["node1", "node2"]]


def test_the_same_master_again_writes_nothing(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), master=master_record(1, 4), version=2)
    assert isinstance(daemon(settings, registry).round(), Unchanged)
    assert registry.published == []


def test_a_lost_race_is_reread_at_once_never_retried_blindly(settings: DaemonSettings) -> None:
    rival = master_record(2, 5, timeline=2)
    registry = FakeRegistry(nodes=live("node1", "node2"), master=master_record(1, 4), version=0)
    registry.rival = rival
    d = daemon(settings, registry, view=FAILED_OVER, round_=probe(node1=DOWN, node2=W, node3=RO))
    decision = d.round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.LOST_RACE
    assert len(registry.published) == 1  # one attempt
    assert d.woken([]) == "reread"  # the next round runs without waiting for the poll
    assert isinstance(d.round("reread"), Unchanged)  # it reads the rival's record: same master
    assert registry.master == rival


def test_a_publish_that_zookeeper_drops_is_not_connected(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), fail={"publish": Unavailable("timed out")})
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.NOT_CONNECTED
    assert "publishing node1 failed" in decision.detail


def test_a_publish_that_zookeeper_refuses_is_a_registry_error(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), fail={"publish": RegistryError("NoAuth")})
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.REGISTRY_ERROR


def test_a_duplicate_daemon_name_has_its_own_reason(settings: DaemonSettings) -> None:
    taken = NodeNameTaken("/agrajag/main/nodes/node3 belongs to session 0x12")
    registry = FakeRegistry(nodes=live("node1"), fail={"register_node": taken})
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.NODE_NAME_TAKEN
    assert "0x12" in decision.detail and registry.published == []


def test_an_unreadable_registry_publishes_nothing(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), fail={"read_master": Unavailable("suspended")})
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.NOT_CONNECTED
    assert registry.published == []


def test_a_failing_repmgr_refuses_but_keeps_the_registry_current(
    settings: DaemonSettings,
) -> None:
    registry = FakeRegistry(nodes=live("node1"), master=master_record(1, 4), version=0)
    d = daemon(settings, registry, view=RepmgrError("repmgr: connection refused"))
    decision = d.round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.REPMGR_FAILED
    info = d.metrics.registry.get_sample_value(
        "agrajag_master_info", {"cluster": "main", "node": "node1"}
    )
    assert info == 1 and "node3" in registry.nodes


def test_wake_ups_name_the_next_rounds_trigger(settings: DaemonSettings) -> None:
    d = daemon(settings, FakeRegistry())
    assert d.woken([]) == "poll"
    assert d.woken([Notified("standby_promote", 1.0)]) == "notify_standby_promote"
    assert d.woken([SessionChanged(Session.SUSPENDED)]) == "session_suspended"
    assert d.woken([Wake.RELOAD]) == "sighup"
    assert d.woken([Notified("standby_promote", 1.0), Wake.STOP]) is None
