"""One daemon round with its I/O faked by plain values: what it decides, writes and reports
when the registry, repmgr or the publish fail. No ZooKeeper, no PostgreSQL, no sleeping."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import pytest

from agrajag.daemon.decision import Publish, Refuse, Unchanged, Withdraw
from agrajag.daemon.loop import Daemon
from agrajag.daemon.probe_values import NodeCheck, Outcome, ProbeRound, ProbeTarget
from agrajag.daemon.repmgr import RepmgrError
from agrajag.daemon.settings import CheckSettings, DaemonSettings, RepmgrSettings
from agrajag.daemon.view import ClusterView
from agrajag.inbox import Inbox, Notified, SessionChanged, Wake
from agrajag.metrics import DaemonMetrics
from agrajag.reasons import Reason
from agrajag.registry.errors import AccessDenied, NodeNameTaken, RegistryError, Unavailable
from agrajag.registry.values import Session
from tests.factories import FAILED_OVER, HEALTHY, master_record, probe, repmgr_row, repmgr_view
from tests.fakes import FakeRegistry

W, RO, DOWN = Outcome.WRITABLE, Outcome.READ_ONLY, Outcome.UNREACHABLE


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


@pytest.mark.parametrize("trigger", ["poll", "notify_standby_promote"])  # read after, beside
@pytest.mark.parametrize("method", ["read_master", "epoch_floor"])
def test_an_unreadable_registry_publishes_nothing(
    settings: DaemonSettings, trigger: str, method: str
) -> None:
    registry = FakeRegistry(nodes=live("node1"), fail={method: Unavailable("suspended")})
    decision = daemon(settings, registry).round(trigger)
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


def test_a_deleted_history_is_recreated_and_the_next_round_publishes(
    settings: DaemonSettings,
) -> None:
    registry = FakeRegistry(nodes=live("node1"))
    d = daemon(settings, registry)
    d.round("start")  # the layout is created at start
    registry.master, registry.version, registry.layout = None, -1, False  # deleteall
    decision = d.round()
    assert isinstance(decision, Refuse) and decision.reason is Reason.LAYOUT_MISSING
    assert d.woken([]) == "reread"
    assert isinstance(d.round("reread"), Publish) and registry.layout


def test_the_epoch_is_above_every_epoch_seen_even_after_a_wipe(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), master=master_record(1, 7), version=3)
    d = daemon(settings, registry)
    assert isinstance(d.round(), Unchanged)
    registry.master, registry.version, registry.history = None, -1, []  # the subtree wiped
    decision = d.round()
    assert isinstance(decision, Publish) and decision.record.epoch == 8  # this daemon saw 7


def test_the_epoch_is_above_every_watchers_acknowledgement(settings: DaemonSettings) -> None:
    registry = FakeRegistry(nodes=live("node1"), acks={"app1": 12, "app2": 3})
    decision = daemon(settings, registry).round()
    assert isinstance(decision, Publish) and decision.record.epoch == 13


def test_a_master_gone_back_to_a_lower_epoch_is_written_again_above(
    settings: DaemonSettings,
) -> None:
    registry = FakeRegistry(nodes=live("node1"), master=master_record(1, 7), version=3)
    d = daemon(settings, registry)
    assert isinstance(d.round(), Unchanged)
    registry.master, registry.version = master_record(1, 5), 0  # a wipe, then a lagging daemon
    decision = d.round()
    assert isinstance(decision, Publish) and decision.record.epoch == 8
    assert isinstance(d.round(), Unchanged)


def test_two_primaries_promoted_from_one_parent_never_flip_the_master(
    settings: DaemonSettings,
) -> None:
    """Each daemon sees only its own node promoted (a partition): the first to publish
    wins; the other refuses every round instead of flipping the master back and forth."""
    sees_node2 = repmgr_view(
        repmgr_row(1, "primary", "- failed", None),
        repmgr_row(2, "primary", "* running", 2),
        repmgr_row(3, "standby", "? unreachable", None, "node1"),
    )
    sees_node3 = repmgr_view(
        repmgr_row(1, "primary", "- failed", None),
        repmgr_row(2, "standby", "? unreachable", None, "node1"),
        repmgr_row(3, "primary", "* running", 2),
    )
    registry = FakeRegistry(nodes=live("node2", "node3"), master=master_record(1, 1), version=0)
    on_node2 = daemon(replace(settings, node="node2"), registry, sees_node2, timelines(node2=2))
    on_node3 = daemon(settings, registry, sees_node3, timelines(node3=2))
    decisions = [d.round() for _ in range(3) for d in (on_node2, on_node3)]
    names = [type(d).__name__ for d in decisions]
    assert names == ["Publish", "Refuse"] + ["Unchanged", "Refuse"] * 2
    refusals = [d for d in decisions if isinstance(d, Refuse)]
    assert {d.reason for d in refusals} == {Reason.TIMELINE_NOT_NEWER}
    assert [(r.node, r.epoch) for r in registry.history] == [("node2", 2)]


def timelines(**writable_on: int) -> ProbeRound:
    """A round where the named nodes are writable on the given timelines, the others down."""
    return ProbeRound(
        tuple(
            NodeCheck(n, W, 0.01, "", writable_on[n])
            if n in writable_on
            else NodeCheck(n, DOWN, 0.01, "")
            for n in ("node1", "node2", "node3")
        )
    )


def test_a_witness_is_not_checked_and_shows_in_the_evidence(settings: DaemonSettings) -> None:
    with_witness = repmgr_view(
        repmgr_row(1, "primary", "* running", 1),
        repmgr_row(2, "standby", "  running", 1, "node1"),
        repmgr_row(4, "witness", "* running", None, "node1"),
    )
    checked: list[str] = []

    def check_nodes(targets: Sequence[ProbeTarget], _c: CheckSettings, _me: str) -> ProbeRound:
        checked.extend(t.name for t in targets)
        return probe(node1=W, node2=RO)

    registry = FakeRegistry(nodes=live("node1"))
    d = Daemon(
        settings,
        registry,
        DaemonMetrics(),
        Inbox(),
        read_view=lambda _r: with_witness,
        check_nodes=check_nodes,
    )
    decision = d.round()
    assert checked == ["node1", "node2"]
    assert isinstance(decision, Publish) and decision.record.node == "node1"
    assert decision.record.evidence["witnesses"] == ["node4"]
    assert [r["role"] for r in decision.record.evidence["repmgr"]] == [
        "primary",
        "standby",
        "witness",
    ]


def test_the_liveness_record_keeps_the_node_id_and_the_last_verdict_at_a_bounded_rate(
    settings: DaemonSettings,
) -> None:
    registry = FakeRegistry(nodes=live("node1"))
    now = [1000.0]
    d = daemon(settings, registry)
    d.clock = lambda: now[0]
    d.round("start")  # registers with repmgr's id for node3; its publish waits the interval
    record = registry.records["node3"]
    assert (record.node_id, record.decision) == (3, None)
    now[0] += 5
    d.round()  # unchanged: written now
    record = registry.records["node3"]
    assert (record.node_id, record.decision, record.reason) == (3, "unchanged", None)
    writes = registry.nodes["node3"]

    registry.fail["read_master"] = Unavailable("suspended")
    now[0] += 1
    d.round()  # refuse not_connected: a change, but the last write is 1 s old
    assert registry.nodes["node3"] == writes
    del registry.fail["read_master"]
    registry.session = Session.CONNECTED
    registry.master = None  # keep it refusing: split brain from now on
    d.check_nodes = lambda _t, _c, _m: probe(node1=W, node2=W, node3=RO)
    now[0] += 5
    d.round()
    record = registry.records["node3"]
    assert (record.decision, record.reason) == ("refuse", "split_brain")
    assert registry.nodes["node3"] == writes + 1
    decided_at = record.decided_at
    now[0] += 10
    d.round()  # the same verdict: nothing to write, `decided_at` stays
    assert registry.nodes["node3"] == writes + 1 and d.liveness.decided_at == decided_at


@pytest.mark.parametrize("call", ["read_master", "publish"])
def test_a_refusing_acl_stops_the_daemon_instead_of_retrying(
    settings: DaemonSettings, call: str
) -> None:
    """Credentials or ACLs do not heal by themselves: `agrajag daemon` exits with the error."""
    denied = AccessDenied("ZooKeeper read_master main: not allowed by the znode's ACL")
    registry = FakeRegistry(nodes=live("node1"), fail={call: denied})
    d = daemon(settings, registry)
    d.inbox.post(Wake.STOP)  # were the error swallowed, the loop would stop here instead
    with pytest.raises(AccessDenied):
        d.run()


#: node1 back without `node rejoin` before node2 (timeline 2) was published.
BACK_UNREJOINED = repmgr_view(
    repmgr_row(1, "primary", "! running as primary", 1),
    repmgr_row(2, "primary", "* running", 2),
    repmgr_row(3, "standby", "  running", 2, "node2"),
)
BOTH_WRITABLE = ProbeRound(
    (
        NodeCheck("node1", W, 0.01, "", timeline=1),
        NodeCheck("node2", W, 0.01, "", timeline=2),
        NodeCheck("node3", RO, 0.01, ""),
    )
)


def test_a_published_former_primary_is_withdrawn_once_above_the_epoch_floor(
    settings: DaemonSettings,
) -> None:
    """Without a guard (node1's daemon is gone), over the version read, above the highest
    epoch a watcher acknowledged; the next rounds refuse (split brain) and write nothing."""
    registry = FakeRegistry(master=master_record(1, 4), version=3, nodes=live("node2"))
    registry.acks["app1"] = 6
    d = daemon(settings, registry, BACK_UNREJOINED, BOTH_WRITABLE)

    decision = d.round()

    assert isinstance(decision, Withdraw)
    assert registry.published == [(decision.record, 3, None)]
    assert registry.master == decision.record and registry.master.epoch == 7
    assert not registry.master.routes and registry.history == [decision.record]
    metric = d.metrics.registry.get_sample_value
    assert metric("agrajag_withdrawals_total", {"cluster": "main", "result": "withdrawn"}) == 1
    labels = {"cluster": "main", "decision": "withdraw", "reason": "split_brain"}
    assert metric("agrajag_decisions_total", labels) == 1
    assert metric("agrajag_master_info", {"cluster": "main", "node": "node1"}) is None
    assert metric("agrajag_master_epoch", {"cluster": "main"}) == 7
    assert d.liveness.record().decision == "withdraw"
    assert d.liveness.record().reason == "split_brain"  # `agrajag status` lists a suspect

    again = d.round()

    assert again == Refuse(Reason.SPLIT_BRAIN, "writable: node1, node2")
    assert len(registry.published) == 1


def test_a_withdrawal_that_loses_its_race_rereads_at_once(settings: DaemonSettings) -> None:
    registry = FakeRegistry(master=master_record(1, 4), version=3, nodes=live("node2"))
    registry.rival = master_record(2, 5, timeline=2)  # node2 published first
    d = daemon(settings, registry, BACK_UNREJOINED, BOTH_WRITABLE)
    decision = d.round()
    assert decision == Refuse(Reason.LOST_RACE, "lost_race withdrawing node1")
    assert d.reread and registry.master == master_record(2, 5, timeline=2)
