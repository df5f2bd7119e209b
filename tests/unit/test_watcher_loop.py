"""The watcher's loop, one step at a time, on an in-memory registry, fake sinks and a fake clock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from agrajag.config import MetricsSettings
from agrajag.inbox import Inbox, SessionChanged, Wake
from agrajag.metrics import WatcherMetrics
from agrajag.record import MasterRecord, WatcherAck
from agrajag.registry.errors import Unavailable
from agrajag.registry.values import Current, Session
from agrajag.sinks import ApplyResult, SinkError
from agrajag.watch.loop import Watcher
from agrajag.watch.rules import Backoff, FailMode
from agrajag.watch.settings import WatchConfig
from agrajag.watch.state import Applied, State, load_state, save_state
from agrajag.zookeeper_settings import ZooKeeperSettings
from tests.factories import master_record

CONNECTED = SessionChanged(Session.CONNECTED)
SUSPENDED = SessionChanged(Session.SUSPENDED)


class FakeRegistry:
    """The registry as the watcher sees it, with the znode contents set by the test."""

    root = "/agrajag"

    def __init__(self) -> None:
        self.session = Session.CONNECTED
        self.masters: dict[str, Current] = {}
        self.reads = 0
        self.acks: list[tuple[str, WatcherAck]] = []

    def on_session(self, listener: Callable[[Session], None]) -> None:
        pass

    def watch_master(self, cluster: str, on_change: Callable[[], None]) -> None:
        pass

    def publish(self, rec: MasterRecord, cluster: str = "main") -> None:
        self._set(cluster, Current(rec, self._version(cluster) + 1, rec.epoch))

    def corrupt(self, cluster: str, problem: str) -> None:
        self._set(cluster, Current(None, self._version(cluster) + 1, 0, problem))

    def _version(self, cluster: str) -> int:
        return self.masters[cluster].version if cluster in self.masters else -1

    def _set(self, cluster: str, current: Current) -> None:
        self.masters[cluster] = current

    def read_master(self, cluster: str) -> Current:
        if self.session is not Session.CONNECTED:
            raise Unavailable("not connected")
        self.reads += 1
        return self.masters.get(cluster, Current(None, -1, 0))

    def acknowledge(self, cluster: str, ack: WatcherAck) -> None:
        if self.session is not Session.CONNECTED:
            raise Unavailable("not connected")
        self.acks.append((cluster, ack))


class FakeSink:
    """Remembers every mapping it applied; fails while `failing` is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: list[dict[str, MasterRecord]] = []
        self.attempts = 0
        self.failing = False
        self.resumed: list[dict[str, MasterRecord]] = []

    def resume(self, records: Mapping[str, MasterRecord]) -> None:
        self.resumed.append(dict(records))

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult:
        self.attempts += 1
        if self.failing:
            raise SinkError(self.name, "check", "/etc/fake.cfg", "refused by the check")
        changed = not self.applied or self.applied[-1] != records
        self.applied.append(dict(records))
        return ApplyResult(changed, "written" if changed else "unchanged")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A Watcher wired to fakes; `step` runs one loop iteration."""

    def __init__(
        self,
        tmp_path: Path,
        *sink_names: str,
        fail_mode: FailMode = FailMode.OPEN,
        closed_after: float = 0.0,
        start_wait: float = 5.0,
    ) -> None:
        self.state_file = tmp_path / "state.json"
        self.sinks = [FakeSink(name) for name in sink_names or ("a",)]
        self.registry = FakeRegistry()
        self.clock = Clock()
        self.metrics = WatcherMetrics()
        self.config = WatchConfig(
            source="watch.yaml",
            agent="app1",
            zookeeper=ZooKeeperSettings("127.0.0.1:1"),
            clusters=("main",),
            fail_mode=fail_mode,
            fail_closed_after_s=closed_after,
            state_file=self.state_file,
            reconcile_interval_s=5.0,
            retry_backoff=Backoff(1.0, 8.0),
            metrics=MetricsSettings(),
            sinks=tuple(self.sinks),
            start_wait_s=start_wait,
        )
        self._watcher: Watcher | None = None

    @property
    def watcher(self) -> Watcher:
        if self._watcher is None:  # built on first use, so a test can write the state first
            self._watcher = Watcher(
                self.config, self.registry, self.metrics, Inbox(), clock=self.clock
            )
        return self._watcher

    def step(self, *events: Wake | SessionChanged, after: float = 0.0) -> None:
        self.clock.now += after
        self.watcher.step(events)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def saved(self) -> State:
        return load_state(self.state_file, ["main"], [sink.name for sink in self.sinks])

    @property
    def acked_epochs(self) -> list[int]:
        return [ack.applied_epoch for _, ack in self.registry.acks]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield Rig(tmp_path)


def saved(**clusters: MasterRecord) -> State:
    return State({c: Applied(r, "2026-11-22T00:00:00.000Z") for c, r in clusters.items()})


def test_the_state_file_is_applied_when_zookeeper_does_not_answer_within_start_wait(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, saved(main=master_record(epoch=5)))
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED)
    assert rig.sinks[0].applied == []
    assert rig.watcher.next_wake() == rig.clock.now + 5
    rig.step(after=5)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    assert rig.registry.reads == 0 and rig.registry.acks == []
    assert rig.metric("agrajag_watch_applied_epoch", cluster="main") == 5
    assert rig.metric("agrajag_watch_fail_mode", agrajag_watch_fail_mode="open") == 1


def test_a_restarted_watcher_acknowledges_its_state_once_connected(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, saved(main=master_record(epoch=5)))
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    assert rig.registry.acks == [
        ("main", WatcherAck("app1", 5, "2026-11-22T00:00:00.000Z", {"a": "written"}))
    ]


def test_with_nothing_known_the_sinks_are_left_alone(rig: Rig) -> None:
    rig.step(CONNECTED)
    assert rig.registry.reads == 1
    assert rig.sinks[0].attempts == 0 and rig.registry.acks == []
    assert not rig.state_file.exists()


def test_a_new_record_is_applied_saved_and_acknowledged(rig: Rig) -> None:
    rig.step(CONNECTED)
    rig.registry.publish(master_record(epoch=5))
    rig.step(Wake.CHANGED)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    assert rig.saved().clusters["main"].record == master_record(epoch=5)
    cluster, ack = rig.registry.acks[-1]
    assert (cluster, ack.agent, ack.applied_epoch, ack.sinks) == (
        "main",
        "app1",
        5,
        {"a": "written"},
    )
    assert rig.metric("agrajag_watch_published_epoch", cluster="main") == 5
    assert rig.metric("agrajag_watch_applied_epoch", cluster="main") == 5
    assert rig.metric("agrajag_watch_applies_total", sink="a", result="changed") == 1


def test_rereading_the_same_record_applies_and_acknowledges_nothing_new(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.step(Wake.CHANGED)
    rig.step(after=5)
    assert rig.registry.reads == 3
    assert len(rig.sinks[0].applied) == 1 and rig.acked_epochs == [5]


def test_a_failover_is_followed(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5, node=1))
    rig.step(CONNECTED)
    rig.registry.publish(master_record(epoch=6, node=2))
    rig.step(Wake.CHANGED)
    assert rig.sinks[0].applied[-1] == {"main": master_record(epoch=6, node=2)}
    assert rig.acked_epochs == [5, 6]


def test_the_master_is_reread_on_the_reconcile_timer_without_a_wake_up(rig: Rig) -> None:
    rig.step(CONNECTED)
    rig.registry.publish(master_record(epoch=5))  # a watch event lost, as confd's are
    rig.step(after=4.9)
    assert rig.sinks[0].applied == []
    rig.step(after=0.1)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]


@pytest.mark.parametrize(
    ("publish", "reason"),
    [
        (lambda r: r.corrupt("main", "/agrajag/main/master: key 'host' must be ..."), "invalid"),
        (lambda r: r.publish(master_record(epoch=4, node=2)), "stale_epoch"),
        (lambda r: r.publish(master_record(epoch=7, node=2, cluster="other")), "wrong_cluster"),
    ],
)
def test_a_refused_record_keeps_the_last_good_config_and_is_reported_once(
    rig: Rig,
    caplog: pytest.LogCaptureFixture,
    publish: Callable[[FakeRegistry], None],
    reason: str,
) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    publish(rig.registry)
    with caplog.at_level(logging.WARNING):
        rig.step(Wake.CHANGED)
        rig.step(after=5)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    assert rig.acked_epochs == [5]
    assert rig.metric("agrajag_watch_refused_records_total", cluster="main", reason=reason) == 1
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].startswith(f"refused /agrajag/main/master (version 1): {reason}: ")
    assert "/agrajag/main/master: /agrajag/main/master" not in refusals[0]


def test_a_failing_sink_is_retried_with_backoff_and_the_others_go_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "broken", "ok")
    broken, ok = rig.sinks
    broken.failing = True
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    assert ok.applied == [{"main": master_record(epoch=5)}] and broken.attempts == 1
    assert rig.saved() == State(
        {}, {"ok": {"main": master_record(epoch=5)}}
    )  # not every sink has it
    assert rig.registry.acks == []
    assert rig.watcher.next_wake() == rig.clock.now + 1.0

    rig.step(after=0.5)
    assert broken.attempts == 1
    rig.step(after=0.5)
    assert broken.attempts == 2
    assert rig.watcher.next_wake() == rig.clock.now + 2.0  # doubled

    broken.failing = False
    rig.step(after=2.0)
    assert broken.applied == [{"main": master_record(epoch=5)}]
    assert rig.saved().clusters["main"].record == master_record(epoch=5)
    assert rig.registry.acks[-1][1].sinks == {"broken": "written", "ok": "written"}
    assert rig.metric("agrajag_watch_applies_total", sink="broken", result="failed") == 2


def test_a_sink_raising_an_os_error_is_retried_like_any_failure(rig: Rig) -> None:
    def broken(records: Mapping[str, MasterRecord]) -> ApplyResult:
        raise PermissionError(13, "Permission denied", "/etc/fake.cfg")

    rig.sinks[0].apply = broken  # type: ignore[method-assign]
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    assert rig.metric("agrajag_watch_applies_total", sink="a", result="failed") == 1
    assert rig.watcher.next_wake() == rig.clock.now + 1.0


def test_a_failing_sink_reports_its_failure_in_the_acknowledgement(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.sinks[0].failing = True
    rig.registry.publish(master_record(epoch=6, node=2))
    rig.step(Wake.CHANGED)
    _, ack = rig.registry.acks[-1]
    assert ack.applied_epoch == 5
    assert ack.sinks["a"].startswith("failed: sink 'a': check /etc/fake.cfg: refused")


def test_a_new_record_is_tried_at_once_even_while_a_sink_backs_off(rig: Rig) -> None:
    rig.sinks[0].failing = True
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.registry.publish(master_record(epoch=6, node=2))
    rig.step(Wake.CHANGED)
    assert rig.sinks[0].attempts == 2


def test_fail_open_keeps_routing_while_zookeeper_is_unreachable(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED)
    rig.step(after=3600)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    assert rig.metric("agrajag_watch_registry_connected") == 0


def test_fail_closed_routes_nowhere_after_the_grace_period_and_reopens_on_reconnect(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, fail_mode=FailMode.CLOSED, closed_after=10)
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED, after=1)
    assert rig.watcher.next_wake() == rig.clock.now + 5  # the reconcile comes first
    rig.step(after=8.9)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    assert rig.watcher.next_wake() == rig.clock.now + 0.1  # then the end of the grace period
    rig.step(after=0.1)
    assert rig.sinks[0].applied[-1] == {}
    assert rig.saved().clusters["main"].record == master_record(epoch=5)  # kept for later
    assert rig.saved().sinks["a"] == {}  # what the sink has now

    rig.registry.session = Session.CONNECTED
    rig.step(CONNECTED, after=60)
    assert rig.sinks[0].applied[-1] == {"main": master_record(epoch=5)}
    assert rig.acked_epochs == [5, 5]  # the new session acknowledges again


def test_fail_closed_started_during_an_outage_routes_its_state_for_the_grace_period(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, fail_mode=FailMode.CLOSED, closed_after=10, start_wait=2)
    save_state(rig.state_file, saved(main=master_record(epoch=5)))
    rig.registry.session = Session.SUSPENDED
    rig.step()
    rig.step(after=2)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=5)}]
    rig.step(after=8)
    assert rig.sinks[0].applied[-1] == {}


def test_fail_closed_counts_unanswered_reads_as_silence(tmp_path: Path) -> None:
    rig = Rig(tmp_path, fail_mode=FailMode.CLOSED, closed_after=10)
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)

    def frozen(cluster: str) -> Current:
        raise Unavailable("read timed out")

    rig.registry.read_master = frozen  # type: ignore[method-assign]
    for _ in range(2):
        rig.step(after=5)
    assert rig.sinks[0].applied[-1] == {}


def test_a_reconnected_session_acknowledges_again(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.step(CONNECTED)
    assert rig.acked_epochs == [5, 5]


def test_an_unavailable_acknowledgement_is_retried_at_the_next_step(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.registry.acks.clear()

    def unavailable(cluster: str, ack: WatcherAck) -> None:
        raise Unavailable("timed out")

    real = rig.registry.acknowledge
    rig.registry.acknowledge = unavailable  # type: ignore[method-assign]
    rig.step(CONNECTED)
    rig.registry.acknowledge = real  # type: ignore[method-assign]
    rig.step(after=5)
    assert rig.acked_epochs == [5]


def test_stop_ends_the_step_without_touching_anything(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(Wake.STOP, CONNECTED)
    assert rig.watcher.stopping
    assert rig.registry.reads == 0 and rig.sinks[0].attempts == 0


def test_the_inbox_wakes_the_loop_from_another_thread_and_times_out_otherwise() -> None:
    inbox = Inbox()
    try:
        started = time.monotonic()
        assert inbox.wait(0.05) == []
        assert time.monotonic() - started >= 0.05
        threading.Timer(0.05, inbox.post, [Wake.CHANGED]).start()
        assert inbox.wait(5) == [Wake.CHANGED]
        for _ in range(100_000):  # more wake-ups than the pipe holds: none lost, none blocks
            inbox.post(Wake.CHANGED)
        inbox.post(CONNECTED)
        events = inbox.wait(0)
        assert len(events) == 100_001 and events[-1] == CONNECTED
        assert inbox.wait(0) == []
    finally:
        inbox.close()


def test_a_restart_starts_from_the_newest_record_any_sink_applied(tmp_path: Path) -> None:
    """The issue's sequence: epoch 2 reached sink `h` but not `p`, so the acknowledged state
    is still epoch 1; a restart during an outage must not move `h` back to epoch 1."""
    rig = Rig(tmp_path, "h", "p")
    h, p = rig.sinks
    save_state(
        rig.state_file,
        State(
            saved(main=master_record(epoch=1)).clusters,
            {"h": {"main": master_record(epoch=2, node=2)}, "p": {}},
        ),
    )
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED)
    rig.step(after=5)
    assert h.resumed == [{"main": master_record(epoch=2, node=2)}] and p.resumed == [{}]
    assert h.applied == p.applied == [{"main": master_record(epoch=2, node=2)}]
    assert rig.saved().clusters["main"].record == master_record(epoch=2, node=2)


def test_zookeeper_answering_within_start_wait_is_applied_without_the_state_file(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, saved(main=master_record(epoch=1)))
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED)
    rig.registry.session = Session.CONNECTED
    rig.registry.publish(master_record(epoch=3, node=3))
    rig.step(CONNECTED, after=1)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=3, node=3)}]


def test_each_sink_is_saved_before_the_next_one_is_tried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "first", "second")
    seen: list[State] = []

    def second(records: Mapping[str, MasterRecord]) -> ApplyResult:
        seen.append(rig.saved())
        raise SinkError("second", "reload", "/etc/fake", "hangs, then the host loses power")

    rig.sinks[1].apply = second  # type: ignore[method-assign]
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    assert seen == [State({}, {"first": {"main": master_record(epoch=5)}})]


def test_an_older_record_never_reaches_a_sink_that_has_a_newer_one(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, State({}, {"a": {"main": master_record(epoch=4, node=2)}}))
    rig.registry.publish(master_record(epoch=3))  # ZooKeeper restored from an old snapshot, say
    rig.step(CONNECTED)
    assert rig.sinks[0].applied == [{"main": master_record(epoch=4, node=2)}]
    assert rig.metric("agrajag_watch_refused_records_total", cluster="main", reason="stale_epoch")


def test_known_records_come_from_zookeeper_when_it_answers(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, saved(main=master_record(epoch=4)))
    rig.registry.publish(master_record(epoch=5, node=2))
    assert rig.watcher.known_records() == {"main": master_record(epoch=5, node=2)}
    assert rig.sinks[0].attempts == 0 and rig.registry.acks == []


def test_known_records_fall_back_to_the_state_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    save_state(rig.state_file, saved(main=master_record(epoch=4)))
    rig.registry.session = Session.SUSPENDED
    with caplog.at_level(logging.WARNING):
        assert rig.watcher.known_records() == {"main": master_record(epoch=4)}
    assert f"using the state file {rig.state_file}" in caplog.text
    assert rig.sinks[0].attempts == 0


def test_refusing_the_current_record_shows_as_long_as_it_lasts(rig: Rig) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    rig.registry.publish(master_record(epoch=4, node=2))  # an epoch reset: stale_epoch
    for _ in range(3):
        rig.step(Wake.CHANGED)
        rig.step(after=5)
        assert rig.metric("agrajag_watch_refusing", cluster="main", reason="stale_epoch") == 1
    rig.registry.publish(master_record(epoch=6, node=2))
    rig.step(Wake.CHANGED)
    assert rig.metric("agrajag_watch_refusing", cluster="main", reason="stale_epoch") is None
    assert (
        rig.metric("agrajag_watch_refused_records_total", cluster="main", reason="stale_epoch") == 1
    )


def test_a_withdrawn_master_routes_nowhere_and_is_acknowledged_then_the_new_one_routes(
    rig: Rig,
) -> None:
    rig.registry.publish(master_record(epoch=5))
    rig.step(CONNECTED)
    gone = master_record(epoch=6, withdrawn="node1 is a former primary")
    rig.registry.publish(gone)
    rig.step(Wake.CHANGED)
    assert rig.sinks[0].applied[-1] == {}  # as fail-closed: the sinks cut the old sessions
    assert rig.acked_epochs == [5, 6]
    assert rig.metric("agrajag_watch_applied_epoch", cluster="main") == 6
    assert rig.saved().clusters["main"].record == gone

    rig.registry.publish(master_record(epoch=7, node=2))
    rig.step(Wake.CHANGED)
    assert rig.sinks[0].applied[-1] == {"main": master_record(epoch=7, node=2)}
    assert rig.acked_epochs == [5, 6, 7]


def test_a_restart_after_a_withdrawal_never_routes_to_the_former_primary(tmp_path: Path) -> None:
    gone = master_record(epoch=6, withdrawn="node1 is a former primary")
    rig = Rig(tmp_path)
    save_state(rig.state_file, State(saved(main=gone).clusters, {"a": {}}))
    rig.registry.session = Session.SUSPENDED
    rig.step(SUSPENDED)
    rig.step(after=5)  # ZooKeeper silent past start_wait_s: the state file is what there is
    assert rig.sinks[0].resumed == [{}] and rig.sinks[0].applied == [{}]
