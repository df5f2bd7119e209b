"""The publishing rules, case by case, on plain values: no ZooKeeper, no PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agrajag.daemon.decision import Publish, Refuse, Situation, Unchanged, Withdraw, decide
from agrajag.daemon.probe_values import NodeCheck, Outcome, ProbeRound
from agrajag.reasons import Reason
from agrajag.record import MasterRecord
from agrajag.registry.values import Current
from tests.factories import FAILED_OVER, HEALTHY, master_record, probe
from tests.factories import repmgr_row as row
from tests.factories import repmgr_view as view

W, RO, DOWN = Outcome.WRITABLE, Outcome.READ_ONLY, Outcome.UNREACHABLE


def published(node: int, epoch: int, timeline: int | None) -> MasterRecord:
    return master_record(node, epoch, timeline=timeline)


def situation(**changes: object) -> Situation:
    base = Situation(
        cluster="main",
        me="node3",
        view=HEALTHY,
        probe=probe(node1=W, node2=RO, node3=RO),
        current=Current(None, -1, 0),
        guard_version=0,
        now="2026-11-22T01:00:00.000Z",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_first_publish_names_the_primary_at_epoch_one() -> None:
    decision = decide(situation())
    assert isinstance(decision, Publish)
    r = decision.record
    assert (r.node, r.host, r.port, r.epoch, r.timeline) == ("node1", "10.0.0.1", 5432, 1, 1)
    assert r.published_by == "node3"
    assert r.evidence["writable"] == ["node1"]
    assert r.evidence["checks"] == {"node1": "writable", "node2": "read_only", "node3": "read_only"}


def test_failover_publishes_the_new_primary_at_the_next_epoch() -> None:
    current = Current(published(1, 4, 1), version=7, last_epoch=4)
    decision = decide(
        situation(view=FAILED_OVER, probe=probe(node1=DOWN, node2=W, node3=RO), current=current)
    )
    assert isinstance(decision, Publish)
    assert (decision.record.node, decision.record.epoch) == ("node2", 5)


def test_republishing_the_same_master_changes_nothing() -> None:
    current = Current(published(1, 4, 1), version=7, last_epoch=4)
    decision = decide(situation(current=current))
    assert decision == Unchanged(current.record)  # type: ignore[arg-type]


def test_an_unreadable_master_znode_is_replaced_above_the_history_epoch() -> None:
    current = Current(None, version=3, last_epoch=9, problem="not JSON")
    decision = decide(situation(current=current))
    assert isinstance(decision, Publish) and decision.record.epoch == 10


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ((row(1, "primary", "- failed", None), row(2, "standby", "  running", 1)), "no_primary"),
        (
            (row(1, "primary", "* running", 1), row(2, "primary", "* running", 2)),
            "multiple_primaries",
        ),
        (
            # The old primary back without rejoin, as it sees itself: stale metadata.
            (row(1, "primary", "* running", 1), row(2, "standby", "! running as primary", 2)),
            "anomaly",
        ),
    ],
)
def test_no_safe_answer_from_repmgr_is_refused(rows: tuple[str, ...], reason: str) -> None:
    decision = decide(situation(view=view(*rows), probe=probe(node1=W, node2=RO)))
    assert isinstance(decision, Refuse) and decision.reason == Reason(reason)


def test_two_writable_nodes_is_split_brain_whatever_repmgr_says() -> None:
    decision = decide(situation(probe=probe(node1=W, node2=W, node3=RO)))
    assert decision == Refuse(Reason.SPLIT_BRAIN, "writable: node1, node2")


@pytest.mark.parametrize("outcome", [RO, DOWN, Outcome.TIMEOUT, Outcome.AUTH_FAILED])
def test_a_primary_that_does_not_take_the_insert_is_not_published(outcome: Outcome) -> None:
    decision = decide(situation(probe=probe(node1=outcome, node2=RO, node3=RO)))
    assert isinstance(decision, Refuse) and decision.reason is Reason.CHECK_FAILED
    assert decision.detail.startswith(f"node1: {outcome}")


def test_another_writable_node_than_repmgrs_primary_is_refused() -> None:
    decision = decide(situation(probe=probe(node1=DOWN, node2=W, node3=RO)))
    assert isinstance(decision, Refuse) and decision.reason is Reason.CHECK_FAILED


def test_a_lower_timeline_never_rolls_the_master_back() -> None:
    current = Current(published(2, 5, 2), version=1, last_epoch=5)
    decision = decide(situation(current=current))  # node1 on timeline 1
    assert isinstance(decision, Refuse) and decision.reason is Reason.STALE_TIMELINE


def test_the_timeline_the_primary_reports_beats_repmgrs_lagging_column() -> None:
    # Right after a promotion repmgr still shows the old timeline: the node itself knows.
    current = Current(published(2, 5, 2), version=1, last_epoch=5)
    checks = (NodeCheck("node1", W, 0.01, "", timeline=3), NodeCheck("node2", RO, 0.01, ""))
    decision = decide(situation(current=current, probe=ProbeRound(checks)))
    assert isinstance(decision, Publish) and decision.record.timeline == 3


def test_unknown_timelines_do_not_block() -> None:
    current = Current(published(2, 5, None), version=1, last_epoch=5)
    decision = decide(situation(current=current))
    assert isinstance(decision, Publish) and decision.record.epoch == 6


def test_no_liveness_node_for_the_new_master_is_refused() -> None:
    decision = decide(situation(guard_version=None))
    assert isinstance(decision, Refuse) and decision.reason is Reason.GUARD_MISSING


def test_without_zookeeper_nothing_is_published() -> None:
    unusable = Refuse(Reason.NOT_CONNECTED, "ZooKeeper session is suspended")
    assert decide(situation(current=unusable)) is unusable


def test_another_master_on_the_published_timeline_is_refused() -> None:
    # Two standbys promoted from the same parent would both be on timeline 2.
    current = Current(published(2, 5, 2), version=1, last_epoch=5)
    checks = (NodeCheck("node1", W, 0.01, "", timeline=2), NodeCheck("node2", DOWN, 0.01, ""))
    decision = decide(situation(current=current, probe=ProbeRound(checks)))
    assert isinstance(decision, Refuse) and decision.reason is Reason.TIMELINE_NOT_NEWER
    assert "node1 is on timeline 2, node2 was published on the same timeline" in decision.detail


def test_the_same_master_on_the_published_timeline_is_unchanged() -> None:
    current = Current(published(1, 5, 1), version=1, last_epoch=5)
    assert isinstance(decide(situation(current=current)), Unchanged)


def test_a_node_without_a_single_tcp_address_is_refused() -> None:
    sockets = view(
        row(1, "primary", "* running", 1),
        row(2, "standby", "  running", 1, "node1").replace(
            "host=10.0.0.2 port=5432", "host=/var/run/postgresql"
        ),
    )
    decision = decide(situation(view=sockets, probe=probe(node1=W)))
    assert isinstance(decision, Refuse) and decision.reason is Reason.UNUSABLE_CONNINFO
    assert decision.detail.startswith("node2: its conninfo names Unix socket directory")


# -- withdrawing a former primary ------------------------------------------------------------

#: node1 crashed, node2 was promoted (timeline 2), node1 came back without `node rejoin`
#: before anyone published node2: repmgr on node2/node3 shows node1 `! running as primary`.
BACK_UNREJOINED = view(
    row(1, "primary", "! running as primary", 1),
    row(2, "primary", "* running", 2),
    row(3, "standby", "  running", 2, "node2"),
)


def checks(**answers: tuple[Outcome, int | None]) -> ProbeRound:
    """A probe round with timelines: checks(node1=(W, 1), node2=(RO, None))."""
    return ProbeRound(tuple(NodeCheck(n, o, 0.01, "", timeline=t) for n, (o, t) in answers.items()))


BOTH_WRITABLE = checks(node1=(W, 1), node2=(W, 2), node3=(RO, None))


def test_a_published_former_primary_is_withdrawn_at_the_next_epoch() -> None:
    current = Current(published(1, 4, 1), version=7, last_epoch=4)
    decision = decide(situation(view=BACK_UNREJOINED, probe=BOTH_WRITABLE, current=current))
    assert isinstance(decision, Withdraw) and decision.master_version == 7
    r = decision.record
    assert (r.node, r.host, r.port, r.timeline, r.epoch) == ("node1", "10.0.0.1", 5432, 1, 5)
    assert r.published_by == "node3" and not r.routes
    assert r.withdrawn == (
        "node1 takes writes on timeline 1, node2 on timeline 2: node1 is a former primary"
    )
    assert r.evidence["writable"] == ["node1", "node2"]
    assert r.evidence["timelines"] == {"node1": 1, "node2": 2}


def test_a_withdrawal_goes_above_every_epoch_seen() -> None:
    current = Current(published(1, 4, 1), version=7, last_epoch=4)
    decision = decide(
        situation(view=BACK_UNREJOINED, probe=BOTH_WRITABLE, current=current, epoch_floor=9)
    )
    assert isinstance(decision, Withdraw) and decision.record.epoch == 10


def withdrawn(node: int, epoch: int, timeline: int) -> MasterRecord:
    return replace(published(node, epoch, timeline), withdrawn="a former primary")


SPLIT_BRAIN = Refuse(Reason.SPLIT_BRAIN, "writable: node1, node2")


@pytest.mark.parametrize(
    ("current", "round_"),
    [
        # already withdrawn: no second write, no epoch churn
        (Current(withdrawn(1, 5, 1), 8, 5), BOTH_WRITABLE),
        # the published master is the newer one: the usual old primary back, nothing to do
        (Current(published(2, 5, 2), 8, 5), BOTH_WRITABLE),
        # the published master is not writable: writes routed to it fail, none is lost
        (Current(published(3, 5, 2), 8, 5), BOTH_WRITABLE),
        # the same timeline on both (two standbys promoted from one parent): no proof
        (Current(published(1, 5, 2), 8, 5), checks(node1=(W, 2), node2=(W, 2))),
        # a timeline unknown on either side: no proof
        (Current(published(1, 5, 1), 8, 5), checks(node1=(W, 1), node2=(W, None))),
        (Current(published(1, 5, 1), 8, 5), checks(node1=(W, None), node2=(W, 2))),
        # the record names node1 at another address than the one checked: no proof
        (Current(replace(published(1, 5, 1), host="10.9.9.9"), 8, 5), BOTH_WRITABLE),
        # nothing published, or the registry not usable: nothing to withdraw
        (Current(None, -1, 0), BOTH_WRITABLE),
        (Refuse(Reason.NOT_CONNECTED, "ZooKeeper session is suspended"), BOTH_WRITABLE),
    ],
    ids=[
        "already-withdrawn",
        "published-is-newer",
        "published-not-writable",
        "same-timeline",
        "other-timeline-unknown",
        "own-timeline-unknown",
        "other-address",
        "nothing-published",
        "not-connected",
    ],
)
def test_a_split_brain_without_proof_against_the_published_master_only_refuses(
    current: Current | Refuse, round_: ProbeRound
) -> None:
    decision = decide(situation(view=BACK_UNREJOINED, probe=round_, current=current))
    assert decision == SPLIT_BRAIN


def test_once_the_former_primary_is_fenced_the_new_one_is_published() -> None:
    current = Current(withdrawn(1, 5, 1), version=8, last_epoch=5)
    fenced = checks(node1=(DOWN, None), node2=(W, 2), node3=(RO, None))
    decision = decide(situation(view=FAILED_OVER, probe=fenced, current=current))
    assert isinstance(decision, Publish)
    r = decision.record
    assert (r.node, r.epoch, r.timeline, r.routes) == ("node2", 6, 2, True)


def test_the_withdrawn_node_published_again_is_a_new_record_not_unchanged() -> None:
    # The operator fenced node2 instead and kept node1: node1 is published afresh.
    current = Current(withdrawn(1, 5, 1), version=8, last_epoch=5)
    decision = decide(situation(probe=checks(node1=(W, 1), node2=(DOWN, None)), current=current))
    assert isinstance(decision, Publish)
    assert (decision.record.node, decision.record.epoch, decision.record.routes) == (
        "node1",
        6,
        True,
    )
