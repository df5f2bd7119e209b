"""`agrajag watch`: on every app host, follow the master znodes and apply them to the sinks.

One loop thread does everything. ZooKeeper's watch callbacks, session changes and signals only
post to an `Inbox`; after every wake-up the loop re-reads every cluster's master (watches are
one-shot and coalesce), and it also reconciles every `reconcile_interval_s`. Each record is
judged by `watch_rules.accept`; what the sinks get is `watch_rules.routed`. Once every sink has
the accepted records, they are saved to the state file and acknowledged in
`watchers/<agent>`. The state file is applied at start, before ZooKeeper answers.

SIGTERM and SIGINT stop the loop and close the session (the acknowledgement disappears);
SIGHUP is ignored: restart the watcher to change its configuration.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from agrajag import __version__
from agrajag.config import Role
from agrajag.inbox import Event, Inbox, SessionChanged, Wake
from agrajag.metrics import WatcherMetrics, serve
from agrajag.record import MasterRecord, WatcherAck, utc_now
from agrajag.registry.client import Registry
from agrajag.registry.errors import AccessDenied, RegistryError
from agrajag.registry.values import Current, Paths, Session
from agrajag.watch.rules import Refused, accept, routed
from agrajag.watch.runner import SinkRunner
from agrajag.watch.settings import WatchConfig
from agrajag.watch.state import Applied, StateError, load_state, save_state

log = logging.getLogger("agrajag.watch")


class WatchRegistry(Protocol):
    """The part of `Registry` the watcher uses (tests pass an in-memory one)."""

    root: str

    @property
    def session(self) -> Session: ...

    def on_session(self, listener: Callable[[Session], None]) -> None: ...

    def read_master(self, cluster: str) -> Current: ...

    def watch_master(self, cluster: str, on_change: Callable[[], None]) -> None: ...

    def acknowledge(self, cluster: str, ack: WatcherAck) -> None: ...


class Watcher:
    """`step()` handles one batch of wake-ups; `run()` loops until a stop is posted."""

    def __init__(
        self,
        config: WatchConfig,
        registry: WatchRegistry,
        metrics: WatcherMetrics,
        inbox: Inbox,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.inbox = inbox
        self.clock = clock
        self.stopping = False
        self.runner = SinkRunner(config.sinks, config.retry_backoff, metrics)
        self.applied: dict[str, Applied] = load_state(config.state_file, config.clusters)
        self.saved = dict(self.applied)
        self.accepted: dict[str, MasterRecord] = {c: a.record for c, a in self.applied.items()}
        self.refusals: dict[str, tuple[int, str]] = {}  # cluster -> (znode version, reason)
        self.acked: dict[str, WatcherAck] = {}
        self.heard_at = clock()  # when ZooKeeper last answered for every cluster
        self.next_reconcile = self.heard_at
        metrics.fail_mode.state(config.fail_mode.value)
        for cluster, applied in self.applied.items():
            log.info("state file: cluster %s at epoch %d", cluster, applied.record.epoch)
            metrics.applied_epoch.labels(cluster).set(applied.record.epoch)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        self.registry.on_session(lambda session: self.inbox.post(SessionChanged(session)))
        threading.Thread(target=self._arm_watches, name="agrajag-arm", daemon=True).start()
        session = self.registry.session  # kazoo says LOST until it first connects
        events: list[Event] = [SessionChanged(session)] if session is Session.CONNECTED else []
        while True:
            self.step(events)
            if self.stopping:
                return
            events = self.inbox.wait(self.next_wake() - self.clock())

    def _arm_watches(self) -> None:
        """Register the DataWatches. Their first read waits for ZooKeeper without a bound,
        hence this thread: the loop must go on applying the state file meanwhile."""
        for cluster in self.config.clusters:
            try:
                self.registry.watch_master(cluster, lambda: self.inbox.post(Wake.CHANGED))
            except AccessDenied:
                return  # the loop's own read of the master stops the watcher with the error

    def step(self, events: Iterable[Event]) -> None:
        """Any wake-up re-reads every master (a watch may hide several changes); then the
        sinks get the routed records, and what they all hold is saved and acknowledged."""
        reread = False
        for event in events:
            if event is Wake.STOP:
                self.stopping = True
                return
            reread = True
            if isinstance(event, SessionChanged):
                self._session_changed(event.session)
        now = self.clock()
        if reread or now >= self.next_reconcile:
            self._reconcile(now)
        view = routed(
            self.accepted,
            self.config.fail_mode,
            now - self.heard_at,
            self.config.fail_closed_after_s,
        )
        if view or self.accepted:  # with nothing ever known, leave the sinks as they are
            self.runner.apply(view, now)
            if view == self.accepted and self.runner.converged(view):
                self._record_applied(view)
        self._save()
        self._acknowledge()

    def next_wake(self) -> float:
        """When the loop must run even if nothing is posted: reconcile, a sink's retry, or
        the moment a fail-closed watcher stops routing."""
        deadlines = [self.next_reconcile]
        retry = self.runner.next_retry()
        if retry is not None:
            deadlines.append(retry)
        if self.config.fail_closed_after_s:
            closing = self.heard_at + self.config.fail_closed_after_s
            if closing > self.clock():
                deadlines.append(closing)
        return min(deadlines)

    # -- the steps -------------------------------------------------------------------------

    def _session_changed(self, session: Session) -> None:
        log.info("ZooKeeper session %s", session)
        self.metrics.connected.set(1 if session is Session.CONNECTED else 0)
        if session is Session.CONNECTED:
            self.acked.clear()  # a new session has lost the ephemeral acknowledgements

    def _reconcile(self, now: float) -> None:
        self.next_reconcile = now + self.config.reconcile_interval_s
        if self.registry.session is not Session.CONNECTED:
            return
        heard = True
        for cluster in self.config.clusters:
            try:
                current = self.registry.read_master(cluster)
            except AccessDenied:
                raise  # wrong identity or ACLs: stop with one clear error, exit nonzero
            except RegistryError as exc:
                log.warning("cluster %s: cannot read the master: %s", cluster, exc)
                heard = False
                continue
            self._judge(cluster, current)
        if heard:
            self.heard_at = now

    def _judge(self, cluster: str, current: Current) -> None:
        znode = Paths(self.registry.root, cluster).master
        if current.record is None and current.problem is None:
            log.debug("cluster %s: no master znode %s yet", cluster, znode)
            return
        read = current.record or str(current.problem).removeprefix(f"{znode}: ")
        verdict = accept(cluster, read, self.accepted.get(cluster))
        if isinstance(verdict, Refused):
            if self.refusals.get(cluster) != (current.version, verdict.reason):
                self.refusals[cluster] = (current.version, verdict.reason)
                self.metrics.refused.labels(cluster, verdict.reason.value).inc()
                log.warning(
                    "refused %s (version %d): %s: %s; keeping the last good config",
                    znode,
                    current.version,
                    verdict.reason,
                    verdict.detail,
                )
            return
        self.refusals.pop(cluster, None)
        record = verdict.record
        self.metrics.published_epoch.labels(cluster).set(record.epoch)
        if verdict.changed:
            log.info(
                "cluster %s: master %s at %s:%d, epoch %d",
                cluster,
                record.node,
                record.host,
                record.port,
                record.epoch,
            )
            self.accepted[cluster] = record

    def _record_applied(self, view: dict[str, MasterRecord]) -> None:
        """Every sink has `view` (the accepted records): it is what this watcher applied."""
        applied_at = utc_now()
        for cluster, record in view.items():
            previous = self.applied.get(cluster)
            if previous is None or previous.record != record:
                self.applied[cluster] = Applied(record, applied_at)
                self.metrics.applied_epoch.labels(cluster).set(record.epoch)
                log.info("cluster %s: epoch %d applied to every sink", cluster, record.epoch)

    def _save(self) -> None:
        if self.applied == self.saved:
            return
        try:
            save_state(self.config.state_file, self.applied)
        except StateError as exc:
            log.error("%s; trying again at the next wake-up", exc)
            return
        self.saved = dict(self.applied)

    def _acknowledge(self) -> None:
        if self.registry.session is not Session.CONNECTED:
            return
        results = self.runner.results()
        for cluster, applied in self.applied.items():
            ack = WatcherAck(self.config.agent, applied.record.epoch, applied.applied_at, results)
            if self.acked.get(cluster) == ack:
                continue
            try:
                self.registry.acknowledge(cluster, ack)
            except AccessDenied:
                raise
            except RegistryError as exc:
                log.warning(
                    "cluster %s: cannot acknowledge epoch %d: %s", cluster, ack.applied_epoch, exc
                )
                continue
            self.acked[cluster] = ack


def run_watch(config_path: str) -> int:
    """The `agrajag watch` process: returns its exit code."""
    config = WatchConfig.load(config_path)
    metrics = WatcherMetrics()
    port = serve(config.metrics, metrics.registry)
    inbox = Inbox()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: inbox.post(Wake.STOP))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info(
        "agrajag watch %s: agent %s, clusters %s, fail_mode %s, %d sink(s), metrics port %s; "
        "SIGHUP is ignored (restart to reload)",
        __version__,
        config.agent,
        ",".join(config.clusters),
        config.fail_mode,
        len(config.sinks),
        port,
    )
    zk = config.zookeeper
    registry = Registry.connect(zk, Role.WATCHER)
    try:
        Watcher(config, registry, metrics, inbox).run()
    finally:
        registry.close()
        inbox.close()
    log.info("stopped")
    return 0
