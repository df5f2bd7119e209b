"""The publishing rules, case by case, on plain values: no ZooKeeper, no PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agrajag.daemon.decision import Publish, Refuse, Situation, Unchanged, decide
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
