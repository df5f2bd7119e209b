"""`agrajag watch`: on every app host, follow the master znodes and apply them to the sinks.

One loop thread does everything. ZooKeeper's watch callbacks, session changes and signals only
post to an `Inbox`; after every wake-up the loop re-reads every cluster's master (watches are
one-shot and coalesce), and it also reconciles every `reconcile_interval_s`. Each record is
judged by `watch_rules.accept`; what the sinks get is `watch_rules.routed`. What each sink
has applied is saved to the state file after its apply; once every sink has the accepted
records, they are acknowledged in `watchers/<agent>`. At start the watcher follows the
newest record any sink applied, and waits up to `start_wait_s` for ZooKeeper before it
applies anything from the state file, so a restart never routes a proxy back.

SIGTERM and SIGINT stop the loop and close the session (the acknowledgement disappears).
SIGHUP reads the configuration file again: sinks may be added, removed or changed, and the
timings and fail mode changed; what names the watcher or its session (agent, zookeeper,
clusters, state_file, metrics) needs a restart. A file that does not load, or changes those,
is refused with the reason in the log, and the running configuration stays.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from agrajag import __version__
from agrajag.errors import AgrajagError
from agrajag.inbox import Event, Inbox, SessionChanged, Wake
from agrajag.metrics import WatcherMetrics, serve
from agrajag.record import MasterRecord, WatcherAck, utc_now
from agrajag.registry.client import Registry
from agrajag.registry.errors import AccessDenied, RegistryError
from agrajag.registry.values import Current, Paths, Session
from agrajag.sinks import SinkError
from agrajag.watch.rules import Refused, accept, routable, routed
from agrajag.watch.runner import SinkRunner
from agrajag.watch.settings import WatchConfig
from agrajag.watch.state import Applied, State, StateError, load_state, save_state
from agrajag.zookeeper_settings import Role

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
        names = [sink.name for sink in config.sinks]
        self.saved = load_state(config.state_file, config.clusters, names)
        self.applied: dict[str, Applied] = dict(self.saved.clusters)
        self.sink_state = {name: dict(records) for name, records in self.saved.sinks.items()}
        self.accepted: dict[str, MasterRecord] = self.saved.newest()
        self.runner = self._start_sinks(config)
        self.refusals: dict[str, tuple[int, str]] = {}  # cluster -> (znode version, reason)
        self.acked: dict[str, WatcherAck] = {}
        self.ack_problems: dict[str, str] = {}  # cluster -> why the last acknowledgement failed
        self.heard_at = clock()  # when ZooKeeper last answered for every cluster
        self.waiting = True  # for ZooKeeper's first answer, before the sinks are touched
        self.start_wait_until = self.heard_at + config.start_wait_s
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
            elif event is Wake.RELOAD:
                self.reload()
        now = self.clock()
        if reread or now >= self.next_reconcile:
            self._reconcile(now)
        if self._waiting_for_registry(now):
            return
        view = routed(
            self.accepted,
            self.config.fail_mode,
            now - self.heard_at,
            self.config.fail_closed_after_s,
        )
        if view or self.accepted:  # with nothing ever known, leave the sinks as they are
            self.runner.apply(view, now)
            if view == routable(self.accepted) and self.runner.converged(view):
                self._record_applied()
        self._save()
        self._acknowledge()

    def next_wake(self) -> float:
        """When the loop must run even if nothing is posted: reconcile, a sink's retry, or
        the moment a fail-closed watcher stops routing."""
        deadlines = [self.next_reconcile]
        if self.waiting:
            deadlines.append(self.start_wait_until)
        retry = self.runner.next_retry()
        if retry is not None:
            deadlines.append(retry)
        if self.config.fail_closed_after_s:
            closing = self.heard_at + self.config.fail_closed_after_s
            if closing > self.clock():
                deadlines.append(closing)
        return min(deadlines)

    def reload(self) -> None:
        """SIGHUP: take the configuration file again. Every sink is built anew and told what
        its name last applied, so an unchanged sink finds nothing to do and a changed one
        renders again; a removed sink's file is left as it is."""
        try:
            new = WatchConfig.load(self.config.source)
        except AgrajagError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        fixed = ("agent", "zookeeper", "clusters", "state_file", "metrics")
        changed = [key for key in fixed if getattr(new, key) != getattr(self.config, key)]
        if changed:
            log.error(
                "reload refused, keeping the running configuration: %s change only with a restart",
                ", ".join(changed),
            )
            return
        old_names = {sink.name for sink in self.config.sinks}
        names = {sink.name for sink in new.sinks}
        self.config = new
        self.sink_state = {n: r for n, r in self.sink_state.items() if n in names}
        self.runner = self._start_sinks(new)
        self.next_reconcile = min(self.next_reconcile, self.clock() + new.reconcile_interval_s)
        self.metrics.fail_mode.state(new.fail_mode.value)
        log.info(
            "configuration reloaded from %s: sinks %s (added: %s, removed: %s)",
            new.source,
            ", ".join(sorted(names)),
            ", ".join(sorted(names - old_names)) or "none",
            ", ".join(sorted(old_names - names)) or "none",
        )

    def known_records(self) -> dict[str, MasterRecord]:
        """Every master as ZooKeeper says it now, else as the state file has it: what
        `--render-only` renders."""
        self._reconcile(self.clock())
        if self.waiting:
            log.warning(
                "ZooKeeper did not answer within start_wait_s (%gs): using the state file %s",
                self.config.start_wait_s,
                self.config.state_file,
            )
        return dict(self.accepted)

    # -- the steps -------------------------------------------------------------------------

    def _start_sinks(self, config: WatchConfig) -> SinkRunner:
        """A runner for the configured sinks, each told what it last applied."""
        for sink in config.sinks:
            if sink.name in self.sink_state:
                sink.resume(self.sink_state[sink.name])
        return SinkRunner(config.sinks, config.retry_backoff, self.metrics, self._sink_applied)

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
            self.waiting = False

    def _waiting_for_registry(self, now: float) -> bool:
        """At start, until ZooKeeper answers or `start_wait_s` passes, the sinks are left as
        they are: the state file may be older than what ZooKeeper is about to say."""
        if not self.waiting or now < self.start_wait_until:
            return self.waiting
        self.waiting = False  # from now on, the state file is what there is
        log.warning(
            "ZooKeeper did not answer within start_wait_s (%gs): applying the state file",
            self.config.start_wait_s,
        )
        return False

    def _judge(self, cluster: str, current: Current) -> None:
        znode = Paths(self.registry.root, cluster).master
        if current.record is None and current.problem is None:
            log.debug("cluster %s: no master znode %s yet", cluster, znode)
            return
        read = current.record or str(current.problem).removeprefix(f"{znode}: ")
        verdict = accept(cluster, read, self.accepted.get(cluster))
        if isinstance(verdict, Refused):
            if self.refusals.get(cluster) != (current.version, verdict.reason):
                self._stop_refusing(cluster)
                self.refusals[cluster] = (current.version, verdict.reason)
                self.metrics.refusing.labels(cluster, verdict.reason.value).set(1)
                self.metrics.refused.labels(cluster, verdict.reason.value).inc()
                log.warning(
                    "refused %s (version %d): %s: %s; keeping the last good config",
                    znode,
                    current.version,
                    verdict.reason,
                    verdict.detail,
                )
            return
        self._stop_refusing(cluster)
        record = verdict.record
        self.metrics.published_epoch.labels(cluster).set(record.epoch)
        if verdict.changed:
            where = f"{record.host}:{record.port}"
            if record.withdrawn:
                where += f", WITHDRAWN ({record.withdrawn}): routing nowhere"
            log.info(
                "cluster %s: master %s at %s, epoch %d", cluster, record.node, where, record.epoch
            )
            self.accepted[cluster] = record

    def _stop_refusing(self, cluster: str) -> None:
        """The refusal of `cluster`'s record, if any, is over: its gauge (and alert) ends."""
        refusal = self.refusals.pop(cluster, None)
        if refusal is not None:
            self.metrics.refusing.remove(cluster, str(refusal[1]))

    def _record_applied(self) -> None:
        """Every sink routes by the accepted records (a withdrawn one: nowhere): they are
        what this watcher applied."""
        applied_at = utc_now()
        for cluster, record in self.accepted.items():
            previous = self.applied.get(cluster)
            if previous is None or previous.record != record:
                self.applied[cluster] = Applied(record, applied_at)
                self.metrics.applied_epoch.labels(cluster).set(record.epoch)
                log.info("cluster %s: epoch %d applied to every sink", cluster, record.epoch)

    def _sink_applied(self, name: str, view: Mapping[str, MasterRecord]) -> None:
        """A sink has `view`: saved at once, before the next sink is tried."""
        self.sink_state[name] = dict(view)
        self._save()

    def _save(self) -> None:
        state = State(dict(self.applied), {n: dict(r) for n, r in self.sink_state.items()})
        if state == self.saved:
            return
        try:
            save_state(self.config.state_file, state)
        except StateError as exc:
            log.error("%s; trying again at the next wake-up", exc)
            return
        self.saved = state

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
                if self.ack_problems.get(cluster) != str(exc):  # once, not every reconcile
                    self.ack_problems[cluster] = str(exc)
                    log.warning(
                        "cluster %s: cannot acknowledge epoch %d, trying again: %s",
                        cluster,
                        ack.applied_epoch,
                        exc,
                    )
                continue
            if self.ack_problems.pop(cluster, None) is not None:
                log.info("cluster %s: acknowledged epoch %d", cluster, ack.applied_epoch)
            self.acked[cluster] = ack


def _connect(config: WatchConfig, start_timeout: float) -> Registry:
    return Registry.connect(config.zookeeper, Role.WATCHER, start_timeout=start_timeout)


def render_only(config_path: str) -> int:
    """`agrajag watch --render-only`: the first start. Write every sink's file from
    ZooKeeper (or the state file) without activating anything; 1 if a sink failed."""
    config = WatchConfig.load(config_path)
    registry = _connect(config, start_timeout=config.start_wait_s)
    inbox = Inbox()
    try:
        records = Watcher(config, registry, WatcherMetrics(), inbox).known_records()
    finally:
        registry.close()
        inbox.close()
    for cluster in config.clusters:
        record = records.get(cluster)
        where = f"{record.node} at {record.host}:{record.port}" if record else "no master"
        where += "" if record is None or record.routes else " WITHDRAWN: routing nowhere"
        log.info("cluster %s: %s, epoch %s", cluster, where, record.epoch if record else "-")
    failed = 0
    for sink in config.sinks:
        try:
            log.info("sink %s: %s", sink.name, sink.render_only(routable(records)))
        except SinkError as exc:
            log.error("%s", exc)
            failed += 1
    return 1 if failed else 0


def run_watch(config_path: str) -> int:
    """The `agrajag watch` process: returns its exit code."""
    config = WatchConfig.load(config_path)
    metrics = WatcherMetrics()
    port = serve(config.metrics, metrics.registry)
    inbox = Inbox()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: inbox.post(Wake.STOP))
    signal.signal(signal.SIGHUP, lambda _sig, _frame: inbox.post(Wake.RELOAD))
    log.info(
        "agrajag watch %s: agent %s, clusters %s, fail_mode %s, %d sink(s), metrics port %s",
        __version__,
        config.agent,
        ",".join(config.clusters),
        config.fail_mode,
        len(config.sinks),
        port,
    )
    registry = _connect(config, start_timeout=0)
    try:
        Watcher(config, registry, metrics, inbox).run()
    finally:
        registry.close()
        inbox.close()
    log.info("stopped")
    return 0
