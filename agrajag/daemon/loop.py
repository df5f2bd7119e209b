"""`agrajag daemon`: on every DB node, read repmgr, check, decide, publish.

Every daemon of a cluster runs the same rules; ZooKeeper's compare-and-set decides between
them, not a leader. A round runs every `poll_interval_s`, and at once when `agrajag notify`
(repmgr's event hook) or a ZooKeeper session change wakes the daemon.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

from agrajag.daemon.decision import Decision, Publish, Refuse, Situation, Withdraw, decide
from agrajag.daemon.io import CheckNodes, DaemonRegistry, ReadView, check_nodes, read_view, refusal
from agrajag.daemon.liveness import Liveness
from agrajag.daemon.probe_values import ProbeRound, ProbeTarget
from agrajag.daemon.repmgr import RepmgrError
from agrajag.daemon.report import tell
from agrajag.daemon.settings import DaemonSettings
from agrajag.daemon.view import ClusterView, Node
from agrajag.errors import AgrajagError
from agrajag.inbox import Event, Inbox, Notified, SessionChanged, Wake
from agrajag.metrics import DaemonMetrics, trigger_label
from agrajag.reasons import Reason
from agrajag.record import MasterRecord, utc_now
from agrajag.registry.errors import AccessDenied, RegistryError
from agrajag.registry.values import Current, Session

log = logging.getLogger("agrajag.daemon")


#: How often a round reading repmgr looks for a newer `agrajag notify` (seconds).
NOTIFY_POLL_S = 0.02
#: `repmgr cluster show` running at once at most: the round's own and reads started for the
#: next round by newer events (a dead primary holds one read 8 s: standby_promote can come
#: while two wait, 0.75 s lost with two). Each is bounded by repmgr.timeout_s.
MAX_READS = 3
#: How long the newest read runs before a newer event starts another beside it: repmgr's
#: events come in bursts (3 within 100 ms of a promotion), and reads beside the one that
#: would publish slowed it (148-207 ms instead of 40-80 ms); a quick one is followed anyway.
SLOW_READ_S = 0.25


class Daemon:
    """One daemon: `round()` is one decision with its I/O; `run()` loops until stopped.

    Its I/O comes in as `registry`, `read_view` and `check_nodes`, and its wake-ups through
    `inbox`, so that a round is unit-tested with plain fakes.

    A dead host that drops packets holds every connection to it for its connect timeout, so
    a round does not wait on it twice in a row or behind itself: the INSERT check of the
    previous view's nodes runs while repmgr is read (used when the view names the same
    nodes), and an `agrajag notify` that comes in while a round reads repmgr starts the next
    round's read once the running one is slow (SLOW_READ_S): the current round still decides
    on its view, the next one on a view read after the event. repmgr raises several events
    per failover, so the publish follows the event by one read, not by a round plus a read.
    """

    def __init__(
        self,
        settings: DaemonSettings,
        registry: DaemonRegistry,
        metrics: DaemonMetrics,
        inbox: Inbox,
        *,
        read_view: ReadView = read_view,
        check_nodes: CheckNodes = check_nodes,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,  # the clock of the reads and events
        config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.registry = registry
        self.metrics = metrics
        self.inbox = inbox
        self.read_view = read_view
        self.check_nodes = check_nodes
        self.clock, self.monotonic = clock, monotonic
        #: Run the next round at once: a publish lost its compare-and-set, or this round's
        #: repmgr read began before the latest `agrajag notify`.
        self.reread = False
        self._woken_at: float | None = None
        self._laps: list[tuple[str, float]] = []
        self._layout_ready = False
        self._targets: tuple[ProbeTarget, ...] = ()  # the last view's, checked while reading
        self._reads: list[Future[ClusterView]] = []  # running `repmgr cluster show`
        self._next_read: tuple[float, Future[ClusterView]] | None = None  # (started, read)
        self._early: Future[tuple[Current, int]] | None = None  # master, floor: after an event
        #: The highest epoch this daemon has read or written: a floor that survives a wiped
        #: registry (rule 6), so watchers never see an epoch go back while daemons run.
        self.highest_epoch = 0
        self.liveness = Liveness(settings.node, started_at=utc_now())
        self._export_session(registry.session)

    # -- one round -------------------------------------------------------------------------

    def round(self, trigger: str = "poll") -> Decision:
        """Read repmgr, check every node, read the registry, decide, publish; log one line."""
        cluster = self.settings.cluster
        self.metrics.polls.labels(cluster, trigger_label(trigger)).inc()
        self._laps = [("start", time.monotonic())]
        pool = ThreadPoolExecutor(2 + MAX_READS, thread_name_prefix="agrajag-round")
        try:
            with self.metrics.poll_duration.labels(cluster).time():
                checked = self._targets
                early = pool.submit(self._check_nodes, checked) if checked else None
                event = trigger.startswith("notify_")  # the promotion? read the registry early
                self._early = pool.submit(self._read_early) if event else None
                started, reading = self._read_started_early() or self._read(pool)
                self._await_read(started, reading, pool)
                decision = self._after_read(reading, early, checked)
        finally:
            pool.shutdown(wait=False)
        tell(decision, self.settings.cluster, trigger, self.metrics.decisions)
        self._log_laps(trigger)
        self._tell_liveness(decision)
        return decision

    def _read(self, pool: ThreadPoolExecutor) -> tuple[float, Future[ClusterView]]:
        started = self.monotonic()  # the read begins after this: it sees all posted before
        reading = pool.submit(self.read_view, self.settings.repmgr)
        self._reads.append(reading)
        return started, reading

    def _read_started_early(self) -> tuple[float, Future[ClusterView]] | None:
        """The read a newer event started during the last round. If yet another event came
        after it began (repmgr raises them in bursts), this round still decides on it, and
        the next round runs at once on a fresh read."""
        early, self._next_read = self._next_read, None
        latest = self.inbox.last_notified_at
        if early is not None and latest is not None and latest > early[0]:
            self.reread = True
        return early

    def _await_read(
        self, started: float, reading: Future[ClusterView], pool: ThreadPoolExecutor
    ) -> None:
        """Wait for this round's read; an `agrajag notify` posted after it began (repmgr
        raises its event after updating its metadata, so this read may predate it) starts
        the next round's read once the newest read has run SLOW_READ_S, at most MAX_READS at
        a time."""
        while not wait([reading], timeout=NOTIFY_POLL_S).done:
            latest = self.inbox.last_notified_at
            newest = self._next_read[0] if self._next_read else started
            if latest is None or latest <= newest or self.monotonic() - newest < SLOW_READ_S:
                continue
            self._reads = [r for r in self._reads if not r.done()]
            if len(self._reads) < MAX_READS:
                self._next_read = self._read(pool)

    def _after_read(
        self,
        reading: Future[ClusterView],
        early: Future[ProbeRound] | None,
        checked: tuple[ProbeTarget, ...],
    ) -> Decision:
        try:
            view = reading.result()
        except RepmgrError as exc:
            self._forget_check()
            self._lap("repmgr")
            self._read_registry(None)  # no view, but the registry metrics stay current
            return Refuse(Reason.REPMGR_FAILED, str(exc))
        self._lap("repmgr")
        me = view.by_name(self.settings.node)
        self.liveness.saw_node_id(me.node_id if me else None)
        targets = self._targets_of(view)
        self._targets = targets
        # The check that ran beside the read counts only if it checked exactly these nodes.
        probe = early.result() if early and checked == targets else self._check_nodes(targets)
        decision = self._act(self._decide(self._situation(view, probe)))
        self._lap("publish")
        return decision

    def _tell_liveness(self, decision: Decision) -> None:
        """Keep this round's verdict in `nodes/<node>` for `agrajag status`, at a bounded
        rate (writing bumps the guard's version); a failed write is tried again later."""
        self.liveness.decided(decision, utc_now())
        now = self.clock()
        if not self.liveness.due(now) or self.registry.session is not Session.CONNECTED:
            return
        try:
            self.registry.update_node(self.settings.cluster, self.liveness.record())
        except RegistryError as exc:
            log.debug("cluster=%s liveness record not updated: %s", self.settings.cluster, exc)
            return
        self.liveness.written(now)

    def _lap(self, name: str) -> None:
        self._laps.append((name, time.monotonic()))

    def _log_laps(self, trigger: str) -> None:
        """DEBUG: where the round's time went (ms per phase), and how long a wake-up waited."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        laps = self._laps
        phases = " ".join(
            f"{name}_ms={(t - prev) * 1e3:.1f}" for (_, prev), (name, t) in itertools.pairwise(laps)
        )
        waited = (laps[0][1] - self._woken_at) * 1e3 if self._woken_at is not None else 0.0
        log.debug(
            "cluster=%s round trigger=%s woke_ms=%.1f %s total_ms=%.1f",
            self.settings.cluster, trigger, waited, phases, (laps[-1][1] - laps[0][1]) * 1e3,
        )  # fmt: skip

    def _situation(self, view: ClusterView, probe: ProbeRound) -> Situation:
        self._export_check(view, probe)
        self._lap("check")
        current, guard = self._read_registry(view.primary)
        self._lap("registry")
        return Situation(
            cluster=self.settings.cluster,
            me=self.settings.node,
            view=view,
            probe=probe,
            current=current,
            guard_version=guard,
            now=utc_now(),
            epoch_floor=self.highest_epoch,
        )

    def _decide(self, situation: Situation) -> Decision:
        """decide(), with the registry's whole epoch floor read when a publish is in sight
        (rule 6): reading every history entry and acknowledgement each round would cost a
        read per entry per daemon per poll."""
        decision = decide(situation)
        if not isinstance(decision, Publish | Withdraw) or self._early:  # floor read already
            return decision
        try:
            floor = self.registry.epoch_floor(self.settings.cluster)
        except RegistryError as exc:
            return refusal(exc, "reading the epoch floor failed: ")
        self.highest_epoch = max(self.highest_epoch, floor)
        return decide(replace(situation, epoch_floor=self.highest_epoch))

    def _read_early(self) -> tuple[Current, int]:
        """Beside repmgr after an event: all a publish reads in the registry but the guard."""
        self._register()
        cluster = self.settings.cluster
        return self.registry.read_master(cluster), self.registry.epoch_floor(cluster)

    def _targets_of(self, view: ClusterView) -> tuple[ProbeTarget, ...]:
        """Rule 2: every data node is checked; a witness is writable by design."""
        dbname = self.settings.check.dbname
        return tuple(
            ProbeTarget(n.name, n.host, n.port, dbname or n.dbname or "postgres")
            for n in view.data_nodes
            if n.host and n.port
        )

    def _check_nodes(self, targets: Sequence[ProbeTarget]) -> ProbeRound:
        return self.check_nodes(targets, self.settings.check, self.settings.node)

    def _export_check(self, view: ClusterView, probe: ProbeRound) -> None:
        cluster = self.settings.cluster
        for c in probe.checks:
            self.metrics.probe_results.labels(cluster, c.name, str(c.outcome)).inc()
            self.metrics.probe_latency.labels(cluster, c.name).observe(c.latency_s)
        self.metrics.split_brain.labels(cluster).set(1 if probe.split_brain else 0)
        self.metrics.repmgr_nodes.labels(cluster).set(len(view.nodes))

    def _forget_check(self) -> None:
        """No repmgr view, so no INSERT check this round: stop exporting the last one's
        verdict (a daemon whose own node is down would keep a split brain "suspected", and
        its alert firing, long after the other daemons saw it end)."""
        self.metrics.split_brain.clear()

    def _read_registry(self, candidate: Node | None) -> tuple[Current | Refuse, int | None]:
        """The master as read (or why the registry is not usable) and the candidate's guard
        version. Also keeps this daemon registered and its registry metrics current."""
        cluster = self.settings.cluster
        try:
            if self._early:
                current, floor = self._early.result()
                self.highest_epoch = max(self.highest_epoch, floor)
            else:
                self._register()
                current = self.registry.read_master(cluster)
            guard = self.registry.guard_version(cluster, candidate.name) if candidate else None
            self.metrics.live_daemons.labels(cluster).set(len(self.registry.live_nodes(cluster)))
        except AccessDenied:
            raise  # credentials or ACLs: no later round can fix it (see run)
        except RegistryError as exc:
            log.warning("cluster=%s registry not usable: %s", cluster, exc)
            return refusal(exc), None
        self.highest_epoch = max(self.highest_epoch, current.last_epoch)
        self._export_master(current.record)
        return current, guard

    def _register(self) -> None:
        """Create the layout at start and after a publish found it missing, and this daemon's
        liveness node whenever it is missing (after a lost session, or a wiped subtree)."""
        cluster = self.settings.cluster
        if not self._layout_ready:
            self.registry.ensure_layout(cluster)
            self._layout_ready = True
        if self.registry.register_node(cluster, self.liveness.record()):
            self.liveness.written(self.clock())
            log.info("cluster=%s node=%s registered liveness node", cluster, self.settings.node)

    def _export_master(self, record: MasterRecord | None) -> None:
        cluster = self.settings.cluster
        self.metrics.master.clear()
        if record:
            self.metrics.master_epoch.labels(cluster).set(record.epoch)
        if record and record.routes:  # a withdrawn record names no master
            self.metrics.master.labels(cluster, record.node).set(1)

    def _act(self, decision: Decision) -> Decision:
        """Carry out a Publish or Withdraw with the versions it was decided on: if anything
        changed since, the compare-and-set fails and the next round re-reads (no blind retry)."""
        if not isinstance(decision, Publish | Withdraw):
            return decision
        cluster = self.settings.cluster
        record = decision.record
        publish = isinstance(decision, Publish)
        guard = decision.guard_version if isinstance(decision, Publish) else None
        counter = self.metrics.publishes if publish else self.metrics.withdrawals
        verb = "publishing" if publish else "withdrawing"
        try:
            refused = self.registry.publish(record, decision.master_version, guard)
        except AccessDenied:
            raise
        except RegistryError as exc:
            counter.labels(cluster, "error").inc()
            return refusal(exc, f"{verb} {record.node} failed: ")
        counter.labels(cluster, refused or ("published" if publish else "withdrawn")).inc()
        if refused is None:
            self.highest_epoch = max(self.highest_epoch, record.epoch)
            if publish:
                self.metrics.last_publish.labels(cluster).set(self.clock())
            self._export_master(record)
            return decision
        # Someone else published first, the new master's daemon went, or someone deleted
        # history/: re-read at once (rule 7), with the layout recreated first if need be.
        self.reread = True
        if refused is Reason.LAYOUT_MISSING:
            self._layout_ready = False
        return Refuse(refused, f"{refused} {verb} {record.node}")

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Rounds until a stop is posted; any wake-up runs the next round at once."""
        self.registry.on_session(lambda session: self.inbox.post(SessionChanged(session)))
        trigger: str | None = "start"
        while trigger is not None:
            try:
                self.round(trigger)
            except AccessDenied:
                raise  # wrong identity or ACLs: stop with one clear error, exit nonzero
            except AgrajagError as exc:
                log.error("cluster=%s round failed: %s", self.settings.cluster, exc)
            wait = 0.0 if self.reread else self.settings.poll_interval_s
            trigger = self.woken(self.inbox.wait(wait))

    def woken(self, events: Iterable[Event]) -> str | None:
        """Handle a batch of wake-ups; the trigger of the next round, None to stop."""
        trigger = "reread" if self.reread else "poll"
        self.reread = False
        self._woken_at = None
        for event in events:
            if event is Wake.STOP:
                return None
            if event is Wake.RELOAD:
                self.reload()
                trigger = "sighup"
            elif isinstance(event, SessionChanged):
                self._export_session(event.session)
                trigger = f"session_{event.session.value}"
            elif isinstance(event, Notified):
                self._woken_at = event.at
                trigger = f"notify_{event.event}"
        return trigger

    def _export_session(self, session: Session) -> None:
        self.metrics.session.labels(self.settings.cluster).state(session.value)

    def reload(self) -> None:
        """SIGHUP: take the new configuration; what identifies the session needs a restart."""
        if self.config_path is None:
            return
        try:
            new = DaemonSettings.load(self.config_path)
        except AgrajagError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        fixed = ("cluster", "node", "zookeeper", "wakeup_socket", "wakeup_group", "metrics")
        changed = [k for k in fixed if getattr(new, k) != getattr(self.settings, k)]
        if changed:
            log.error("reload refused: %s change only with a restart", ", ".join(changed))
            return
        self.settings = new
        log.info("cluster=%s configuration reloaded", new.cluster)
