"""A round when repmgr is slow (a dead host that drops packets holds each connection to it
for its connect timeout): the INSERT check runs beside the read, and a round still reading
starts the next round's read when a newer `agrajag notify` comes in. Fakes block on events,
bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from agrajag.daemon.decision import Publish, Refuse, Unchanged
from agrajag.daemon.loop import MAX_READS, SLOW_READ_S, Daemon
from agrajag.daemon.probe_values import Outcome, ProbeRound, ProbeTarget
from agrajag.daemon.settings import CheckSettings, DaemonSettings, RepmgrSettings
from agrajag.daemon.view import ClusterView
from agrajag.inbox import Inbox, Notified
from agrajag.metrics import DaemonMetrics
from tests.factories import FAILED_OVER, HEALTHY, probe, repmgr_row, repmgr_view
from tests.fakes import FakeRegistry

W, RO, SILENT = Outcome.WRITABLE, Outcome.READ_ONLY, Outcome.TIMEOUT
BOUND_S = 5.0  # a fake waits at most this long for the other side, then fails the test


class Io:
    """read_view and check_nodes fakes that record their calls; `views` are returned in turn."""

    def __init__(self, *views: ClusterView, checked: ProbeRound) -> None:
        self.views = list(views)
        self.checked = checked
        self.checks: list[tuple[str, ...]] = []
        self.check_started = threading.Event()
        self.read_started = threading.Event()
        self.reads = 0
        self.before_read: Callable[[], object] = lambda: None

    def read_view(self, _repmgr: RepmgrSettings) -> ClusterView:
        view = self.views.pop(0)  # taken in call order, whenever the call returns
        self.reads += 1
        self.read_started.set()
        self.before_read()
        return view

    def check_nodes(
        self, targets: Sequence[ProbeTarget], _c: CheckSettings, _me: str
    ) -> ProbeRound:
        self.checks.append(tuple(t.name for t in targets))
        self.check_started.set()
        return self.checked


def daemon(settings: DaemonSettings, io: Io, inbox: Inbox | None = None) -> Daemon:
    registry = FakeRegistry(nodes=dict.fromkeys(("node1", "node2", "node3"), 0))
    return Daemon(
        settings,
        registry,
        DaemonMetrics(),
        inbox or Inbox(),
        read_view=io.read_view,
        check_nodes=io.check_nodes,
    )


def test_the_check_of_the_last_views_nodes_runs_while_repmgr_is_read(
    settings: DaemonSettings,
) -> None:
    io = Io(HEALTHY, HEALTHY, checked=probe(node1=W, node2=RO, node3=RO))
    d = daemon(settings, io)
    assert isinstance(d.round(), Publish)
    assert io.checks == [("node1", "node2", "node3")]  # no view before: checked after the read

    def read_needs_the_check() -> None:  # a sequential round would never get past this
        assert io.check_started.wait(BOUND_S), "the check did not start while repmgr was read"

    io.check_started.clear()
    io.before_read = read_needs_the_check
    assert isinstance(d.round(), Unchanged)
    assert io.checks[1:] == [("node1", "node2", "node3")]  # one check in the round, not two


def test_a_view_naming_other_nodes_is_checked_again_before_deciding(
    settings: DaemonSettings,
) -> None:
    grown = repmgr_view(*HEALTHY_ROWS, repmgr_row(4, "standby", "  running", 1, "node1"))
    io = Io(HEALTHY, grown, checked=probe(node1=W, node2=RO, node3=RO, node4=RO))
    d = daemon(settings, io)
    d.round()
    d.round()
    assert io.checks[1:] == [
        ("node1", "node2", "node3"),  # beside the read, from the last view
        ("node1", "node2", "node3", "node4"),  # node4 was not in it: checked again
    ]


def test_after_a_failover_a_silent_old_primary_does_not_block_the_publish(
    settings: DaemonSettings,
) -> None:
    """Rule 2 asks that no other node accepts the write: one that does not answer did not."""
    io = Io(HEALTHY, FAILED_OVER, checked=probe(node1=SILENT, node2=W, node3=RO))
    d = daemon(settings, io)
    assert isinstance(d.round(), Refuse)  # repmgr still shows node1: it is not writable
    decision = d.round()
    assert isinstance(decision, Publish) and decision.record.node == "node2"


def test_a_notify_during_a_read_starts_the_next_rounds_read_at_once(
    settings: DaemonSettings,
) -> None:
    """repmgr raises standby_promote after updating its metadata: a read already running
    may predate it, so the next round's read starts then, not when this round ends."""
    inbox = Inbox()
    io = Io(HEALTHY, FAILED_OVER, checked=probe(node1=SILENT, node2=W, node3=RO))

    def promoted_meanwhile() -> None:
        io.before_read = lambda: None
        io.read_started.clear()
        inbox.post(Notified("standby_promote", time.monotonic()))
        assert io.read_started.wait(BOUND_S), "no read started for the newer event"

    io.before_read = promoted_meanwhile
    d = daemon(settings, io, inbox)
    assert isinstance(d.round("poll"), Refuse)  # decided on its own (older) view
    assert io.reads == 2  # the next round's read began during this one
    assert d.woken(inbox.wait(0)) == "notify_standby_promote"
    decision = d.round("notify_standby_promote")
    assert isinstance(decision, Publish) and decision.record.node == "node2"
    assert io.reads == 2  # the second round used the read the event started


def test_a_read_older_than_a_later_notify_is_used_then_read_again(
    settings: DaemonSettings,
) -> None:
    """repmgr raises events in bursts: the round decides on the read the first one started
    (it may already show the promotion), and the next round runs at once on a fresh read."""
    inbox = Inbox()
    io = Io(HEALTHY, HEALTHY, FAILED_OVER, checked=probe(node1=SILENT, node2=W, node3=RO))

    def promoted_meanwhile() -> None:
        io.before_read = lambda: None
        io.read_started.clear()
        inbox.post(Notified("repmgrd_failover_promote", time.monotonic()))
        assert io.read_started.wait(BOUND_S)

    io.before_read = promoted_meanwhile
    d = daemon(settings, io, inbox)
    d.round()
    assert io.reads == 2
    inbox.post(Notified("standby_promote", time.monotonic() + 1e-6))  # after that read began
    d.woken(inbox.wait(0))
    assert isinstance(d.round("notify_standby_promote"), Refuse)  # the early read's view
    assert io.reads == 2 and d.reread
    assert d.woken(inbox.wait(0)) == "reread"
    decision = d.round("reread")
    assert isinstance(decision, Publish) and decision.record.node == "node2"
    assert io.reads == 3


def test_events_during_a_quick_read_start_no_read_beside_it(settings: DaemonSettings) -> None:
    """repmgr raises standby_promote, repmgrd_failover_promote and repmgrd_reload within
    100 ms: a read beside the one that may publish would slow it down, so another read
    starts only once the running one has taken SLOW_READ_S (a silent host)."""
    inbox, now = Inbox(), [100.0]
    io = Io(HEALTHY, FAILED_OVER, checked=probe(node1=SILENT, node2=W, node3=RO))

    def burst_then_slow() -> None:
        io.before_read = lambda: None
        io.read_started.clear()
        inbox.post(Notified("repmgrd_failover_promote", now[0] + 0.01))
        assert not io.read_started.wait(0.2), "a read started beside a quick one"
        now[0] += SLOW_READ_S + 0.01
        assert io.read_started.wait(BOUND_S), "no read started beside a slow one"

    io.before_read = burst_then_slow
    d = Daemon(
        settings,
        FakeRegistry(nodes=dict.fromkeys(("node1", "node2", "node3"), 0)),
        DaemonMetrics(),
        inbox,
        read_view=io.read_view,
        check_nodes=io.check_nodes,
        monotonic=lambda: now[0],
    )
    assert isinstance(d.round("notify_standby_promote"), Refuse)
    assert io.reads == 2


def test_reads_running_at_once_are_bounded(settings: DaemonSettings) -> None:
    """A flood of events does not pile up repmgr processes: MAX_READS at once, whatever
    else comes in meanwhile."""
    inbox = Inbox()
    io = Io(*[HEALTHY] * (MAX_READS + 1), checked=probe(node1=W, node2=RO, node3=RO))
    release = threading.Event()

    def flood() -> None:
        io.before_read = lambda: release.wait(BOUND_S) and None
        for _ in range(MAX_READS + 1):
            inbox.post(Notified("standby_promote", time.monotonic()))
            io.read_started.clear()
            assert not io.read_started.wait(0.2) or io.reads <= MAX_READS
        release.set()

    io.before_read = flood
    daemon(settings, io, inbox).round()
    assert io.reads == MAX_READS


class FloorWatch(FakeRegistry):
    """A registry that tells when the epoch floor is read."""

    def __init__(self, **fields: object) -> None:
        super().__init__(**fields)  # type: ignore[arg-type]
        self.floor_read = threading.Event()

    def epoch_floor(self, cluster: str) -> int:
        self.floor_read.set()
        return super().epoch_floor(cluster)


def test_after_a_repmgr_event_the_epoch_floor_is_read_while_repmgr_is_read(
    settings: DaemonSettings,
) -> None:
    """The event may be the promotion: what a publish needs besides repmgr's view and the
    check is read beside them, and the publish is still above every epoch seen (rule 6)."""
    io = Io(HEALTHY, FAILED_OVER, checked=probe(node1=SILENT, node2=W, node3=RO))
    registry = FloorWatch(nodes=dict.fromkeys(("node1", "node2", "node3"), 0), acks={"app": 7})
    d = Daemon(
        settings,
        registry,
        DaemonMetrics(),
        Inbox(),
        read_view=io.read_view,
        check_nodes=io.check_nodes,
    )
    assert isinstance(d.round("poll"), Refuse)  # node1 silent: no publish, no floor read
    assert not registry.floor_read.is_set()

    def read_needs_the_floor() -> None:  # a sequential round would never get past this
        assert registry.floor_read.wait(BOUND_S), "the floor was not read beside repmgr"

    io.before_read = read_needs_the_floor
    decision = d.round("notify_standby_promote")
    assert isinstance(decision, Publish) and decision.record.node == "node2"
    assert decision.record.epoch == 8  # above the watcher's acknowledgement


HEALTHY_ROWS = (
    repmgr_row(1, "primary", "* running", 1),
    repmgr_row(2, "standby", "  running", 1, "node1"),
    repmgr_row(3, "standby", "  running", 1, "node1"),
)
