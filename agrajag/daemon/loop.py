"""`agrajag daemon`: on every DB node, read repmgr, check, decide, publish.

Every daemon of a cluster runs the same rules; ZooKeeper's compare-and-set decides between
them, not a leader. A round runs every `poll_interval_s`, and at once when `agrajag notify`
(repmgr's event hook) or a ZooKeeper session change wakes the daemon.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from agrajag import __version__
from agrajag.daemon.decision import Decision, Publish, Reason, Refuse, Situation, Unchanged, decide
from agrajag.daemon.probe import ProbeRound, ProbeTarget, check_round
from agrajag.daemon.repmgr import ClusterView, Node, RepmgrError, run_cluster_show
from agrajag.daemon.settings import DaemonSettings
from agrajag.daemon.wakeup import WakeupListener
from agrajag.errors import AgrajagError
from agrajag.metrics import DaemonMetrics, serve
from agrajag.record import NodeRecord, utc_now
from agrajag.registry.client import Current, Published, Registry, RegistryError, Session

log = logging.getLogger("agrajag.daemon")


def trigger_label(trigger: str) -> str:
    """The metric label of a round's trigger: bounded, whatever the wake-up socket was sent.

    The log line keeps the repmgr event; the label drops it (anyone who can write to the
    socket could otherwise create a series per string).

    >>> trigger_label("notify_repmgrd_failover_promote"), trigger_label("session_lost")
    ('notify', 'session_lost')
    """
    if trigger.startswith("notify_"):
        return "notify"
    return trigger if trigger in _TRIGGERS else "other"


_TRIGGERS = frozenset(
    {"start", "poll", "reread", "sighup", *(f"session_{s.value}" for s in Session)}
)


class Daemon:
    """One daemon: `round()` is one decision with its I/O; `run()` loops until stopped."""

    def __init__(
        self,
        settings: DaemonSettings,
        registry: Registry,
        metrics: DaemonMetrics,
        clock: Callable[[], float] = time.time,
        config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.reload_requested = False
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._trigger = "poll"
        self._poked_at = 0.0
        self._laps: list[tuple[str, float]] = []
        self._layout_ready = False
        registry.on_session(self._on_session)
        self._on_session(registry.session)

    # -- wake-ups (called from other threads; never block) ---------------------------------

    def _on_session(self, session: Session) -> None:
        self.metrics.session.labels(self.settings.cluster).state(session.value)
        self.poke(f"session_{session.value}")

    def poke(self, trigger: str) -> None:
        self._trigger = trigger
        self._poked_at = time.monotonic()
        self.wake.set()

    # -- one round -------------------------------------------------------------------------

    def round(self, trigger: str = "poll") -> Decision:
        """Read repmgr, check every node, read the registry, decide, publish; log one line."""
        cluster = self.settings.cluster
        self.metrics.polls.labels(cluster, trigger_label(trigger)).inc()
        self._laps = [("start", time.monotonic())]
        with self.metrics.poll_duration.labels(cluster).time():
            try:
                view = run_cluster_show(
                    self.settings.repmgr.bin,
                    self.settings.repmgr.config,
                    timeout=self.settings.repmgr.timeout_s,
                ).view
            except RepmgrError as exc:
                self._forget_check()
                self._lap("repmgr")
                self._read_registry(None)  # no view, but the registry metrics stay current
                decision: Decision = Refuse(Reason.REPMGR_FAILED, str(exc))
            else:
                self._lap("repmgr")
                situation = self._situation(view)
                decision = self._act(decide(situation), situation)
                self._lap("publish")
        self._log(decision, trigger)
        self._log_laps(trigger)
        return decision

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
        waited = (laps[0][1] - self._poked_at) * 1e3 if trigger != "poll" else 0.0
        log.debug(
            "cluster=%s round trigger=%s woke_ms=%.1f %s total_ms=%.1f",
            self.settings.cluster, trigger, waited, phases, (laps[-1][1] - laps[0][1]) * 1e3,
        )  # fmt: skip

    def _situation(self, view: ClusterView) -> Situation:
        probe = self._check(view)
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
        )

    def _check(self, view: ClusterView) -> ProbeRound:
        check = self.settings.check
        targets = [
            ProbeTarget(n.name, n.host, n.port, check.dbname or n.dbname or "postgres")
            for n in view.nodes
            if n.host and n.port
        ]
        probe = check_round(
            targets,
            check.credentials,
            checker=self.settings.node,
            deadline_s=check.deadline_s,
            connect_timeout_s=check.connect_timeout_s,
        )
        cluster = self.settings.cluster
        for c in probe.checks:
            self.metrics.probe_results.labels(cluster, c.name, str(c.outcome)).inc()
            self.metrics.probe_latency.labels(cluster, c.name).observe(c.latency_s)
        self.metrics.split_brain.labels(cluster).set(1 if probe.split_brain else 0)
        self.metrics.repmgr_nodes.labels(cluster).set(len(view.nodes))
        return probe

    def _forget_check(self) -> None:
        """No repmgr view, so no INSERT check this round: stop exporting the last one's
        verdict (a daemon whose own node is down would keep a split brain "suspected", and
        its alert firing, long after the other daemons saw it end)."""
        self.metrics.split_brain.clear()

    def _read_registry(self, candidate: Node | None) -> tuple[Current | None, int | None]:
        """The master as read and the candidate's guard version; (None, None) when unusable.
        Also keeps this daemon registered and its registry metrics current."""
        cluster = self.settings.cluster
        try:
            self._register()
            current = self.registry.read_master(cluster)
            guard = self.registry.guard_version(cluster, candidate.name) if candidate else None
            self.metrics.live_daemons.labels(cluster).set(len(self.registry.live_nodes(cluster)))
        except RegistryError as exc:
            log.warning("cluster=%s registry not usable: %s", cluster, exc)
            return None, None
        self._export_master(current)
        return current, guard

    def _register(self) -> None:
        """Create the layout once and this daemon's liveness node whenever it is missing
        (at start, and after the session was lost and its ephemeral node went with it)."""
        cluster = self.settings.cluster
        if not self._layout_ready:
            self.registry.ensure_layout(cluster)
            self._layout_ready = True
        record = NodeRecord(
            node=self.settings.node,
            node_id=None,
            pid=os.getpid(),
            version=__version__,
            started_at=utc_now(),
        )
        if self.registry.register_node(cluster, record):
            log.info("cluster=%s node=%s registered liveness node", cluster, self.settings.node)

    def _export_master(self, current: Current) -> None:
        cluster = self.settings.cluster
        self.metrics.master.clear()
        if current.record:
            self.metrics.master_epoch.labels(cluster).set(current.record.epoch)
            self.metrics.master.labels(cluster, current.record.node).set(1)

    def _act(self, decision: Decision, seen: Situation) -> Decision:
        """Carry out a Publish with the versions the decision was made on: if anything changed
        since, the compare-and-set fails and the next round re-reads (never a blind retry)."""
        if not isinstance(decision, Publish):
            return decision
        assert seen.current is not None and seen.guard_version is not None
        cluster = self.settings.cluster
        try:
            result = self.registry.publish(decision.record, seen.current, seen.guard_version)
        except RegistryError as exc:
            self.metrics.publishes.labels(cluster, "error").inc()
            return Refuse(Reason.NOT_CONNECTED, f"publish failed: {exc}")
        self.metrics.publishes.labels(cluster, result.value).inc()
        if result is Published.PUBLISHED:
            self.metrics.last_publish.labels(cluster).set(self.clock())
            self.metrics.master.clear()
            self.metrics.master_epoch.labels(cluster).set(decision.record.epoch)
            self.metrics.master.labels(cluster, decision.record.node).set(1)
            return decision
        # Someone else published first, or the new master's daemon went: re-read at once.
        self.poke("reread")
        return Refuse(Reason(result.value), f"{result.value} publishing {decision.record.node}")

    def _log(self, decision: Decision, trigger: str) -> None:
        cluster = self.settings.cluster
        if isinstance(decision, Publish):
            r = decision.record
            self.metrics.decisions.labels(cluster, "publish", "ok").inc()
            log.info(
                "cluster=%s decision=publish node=%s host=%s port=%d epoch=%d trigger=%s",
                cluster, r.node, r.host, r.port, r.epoch, trigger,
            )  # fmt: skip
        elif isinstance(decision, Unchanged):
            self.metrics.decisions.labels(cluster, "unchanged", "ok").inc()
            log.debug(
                "cluster=%s decision=unchanged node=%s epoch=%d trigger=%s",
                cluster, decision.record.node, decision.record.epoch, trigger,
            )  # fmt: skip
        else:
            self.metrics.decisions.labels(cluster, "refuse", decision.reason.value).inc()
            log.warning(
                "cluster=%s decision=refuse reason=%s trigger=%s detail=%r",
                cluster, decision.reason.value, trigger, decision.detail,
            )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Rounds until `stopping` is set; a wake-up runs the next round at once."""
        trigger = "start"
        while not self.stopping.is_set():
            if self.reload_requested:
                self.reload()
            try:
                self.round(trigger)
            except AgrajagError as exc:
                log.error("cluster=%s round failed: %s", self.settings.cluster, exc)
            woken = self.wake.wait(self.settings.poll_interval_s)
            self.wake.clear()
            trigger = self._trigger if woken else "poll"

    def reload(self) -> None:
        """SIGHUP: take the new configuration; what identifies the session needs a restart."""
        self.reload_requested = False
        if self.config_path is None:
            return
        try:
            new = DaemonSettings.load(self.config_path)
        except AgrajagError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        fixed = ("cluster", "node", "zookeeper", "wakeup_socket", "metrics")
        changed = [k for k in fixed if getattr(new, k) != getattr(self.settings, k)]
        if changed:
            log.error("reload refused: %s change only with a restart", ", ".join(changed))
            return
        self.settings = new
        log.info("cluster=%s configuration reloaded", new.cluster)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()


def run_daemon(config_path: str) -> int:
    """The `agrajag daemon` process: wiring, signals, clean shutdown."""
    settings = DaemonSettings.load(config_path)
    metrics = DaemonMetrics()
    port = serve(settings.metrics, metrics.registry)
    zk = settings.zookeeper
    registry = Registry.connect(
        zk.hosts,
        zk.root,
        session_timeout=zk.session_timeout_s,
        call_timeout=zk.call_timeout_s,
        start_timeout=zk.call_timeout_s,
    )
    daemon = Daemon(settings, registry, metrics, config_path=config_path)
    listener = WakeupListener(
        settings.wakeup_socket, lambda event: daemon.poke(f"notify_{event.get('event', '')}")
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            daemon.reload_requested = True
            daemon.poke("sighup")
        else:
            daemon.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log.info(
        "cluster=%s node=%s started (zookeeper=%s metrics_port=%s wakeup=%s)",
        settings.cluster, settings.node, zk.hosts, port, settings.wakeup_socket,
    )  # fmt: skip
    try:
        daemon.run()
    finally:
        listener.close()
        try:
            registry.unregister_node(settings.cluster, settings.node)
        except RegistryError as exc:
            log.warning("could not delete the liveness node: %s", exc)
        registry.close()
        log.info("cluster=%s node=%s stopped", settings.cluster, settings.node)
    return 0
