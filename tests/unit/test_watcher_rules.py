"""The watcher's pure rules: which record is followed, what is routed, how long sinks wait."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from agrajag.record import MasterRecord
from agrajag.watch.rules import (
    Accepted,
    Backoff,
    FailMode,
    Reason,
    Refused,
    accept,
    routable,
    routed,
)
from tests.factories import master_record


def test_the_first_record_is_accepted() -> None:
    assert accept("main", master_record(), None) == Accepted(master_record(), changed=True)


def test_a_higher_epoch_replaces_the_last_record() -> None:
    assert accept("main", master_record(epoch=6, node=2), master_record(epoch=5)) == Accepted(
        master_record(epoch=6, node=2), True
    )


def test_the_same_master_again_changes_nothing_and_keeps_the_last_record() -> None:
    last = master_record(epoch=5)
    again = replace(last, published_at="2026-11-22T01:00:00.000Z")
    verdict = accept("main", again, last)
    assert verdict == Accepted(last, changed=False)


def test_a_lower_epoch_is_refused_as_stale() -> None:
    verdict = accept("main", master_record(epoch=4, node=2), master_record(epoch=5))
    assert isinstance(verdict, Refused)
    assert verdict.reason is Reason.STALE_EPOCH
    assert "epoch 4 is lower than epoch 5" in verdict.detail


def test_the_same_epoch_naming_another_master_is_refused() -> None:
    verdict = accept("main", master_record(epoch=5, node=2), master_record(epoch=5, node=1))
    assert isinstance(verdict, Refused)
    assert verdict.reason is Reason.STALE_EPOCH
    assert "already names node1 at 10.0.0.1:5432" in verdict.detail


def test_a_record_of_another_cluster_is_refused() -> None:
    verdict = accept("main", master_record(cluster="other"), None)
    assert verdict == Refused(
        Reason.WRONG_CLUSTER, "the record names cluster 'other', its znode belongs to 'main'"
    )


def test_an_unreadable_znode_is_refused_as_invalid() -> None:
    assert accept("main", "key 'port' must be int", master_record()) == Refused(
        Reason.INVALID, "key 'port' must be int"
    )


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 3)), max_size=30))
def test_the_followed_epoch_never_goes_back(reads: list[tuple[int, int]]) -> None:
    last: MasterRecord | None = None
    for epoch, node in reads:
        verdict = accept("main", master_record(node, epoch), last)
        if isinstance(verdict, Accepted):
            assert last is None or verdict.record.epoch >= last.epoch
            assert last is None or verdict.record.epoch > last.epoch or not verdict.changed
            last = verdict.record


def test_fail_open_routes_the_last_record_however_long_zookeeper_is_silent() -> None:
    assert routed({"main": master_record()}, FailMode.OPEN, 1e9, 0) == {"main": master_record()}


def test_fail_closed_routes_until_the_grace_period_ends_then_nothing() -> None:
    accepted = {"main": master_record()}
    assert routed(accepted, FailMode.CLOSED, 29.9, 30) == accepted
    assert routed(accepted, FailMode.CLOSED, 30, 30) == {}


WITHDRAWN = "node1 takes writes on timeline 1, node2 on timeline 2: node1 is a former primary"


def test_a_withdrawn_record_is_followed_by_its_epoch_and_routes_nowhere() -> None:
    published = master_record(epoch=5)
    gone = master_record(epoch=6, withdrawn=WITHDRAWN)
    assert accept("main", gone, published) == Accepted(gone, changed=True)
    assert accept("main", gone, gone) == Accepted(gone, changed=False)
    assert routable({"main": gone, "other": published}) == {"other": published}
    assert routed({"main": gone}, FailMode.OPEN, 0, 0) == {}


def test_the_same_epoch_withdrawn_or_not_differs_and_is_refused() -> None:
    gone = master_record(epoch=6, withdrawn=WITHDRAWN)
    for read, last in [(gone, master_record(epoch=6)), (master_record(epoch=6), gone)]:
        verdict = accept("main", read, last)
        assert isinstance(verdict, Refused) and verdict.reason is Reason.STALE_EPOCH
    assert "already names node1 at 10.0.0.1:5432 (withdrawn)" in verdict.detail


def test_a_master_published_after_a_withdrawal_routes_again() -> None:
    gone = master_record(epoch=6, withdrawn=WITHDRAWN)
    new = master_record(epoch=7, node=2, timeline=2)
    assert accept("main", new, gone) == Accepted(new, changed=True)
    assert routed({"main": new}, FailMode.OPEN, 0, 0) == {"main": new}


def test_backoff_doubles_up_to_its_maximum_even_after_many_failures() -> None:
    backoff = Backoff(0.5, 4)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert backoff.delay(10_000) == 4
