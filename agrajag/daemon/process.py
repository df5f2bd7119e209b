"""The `agrajag daemon` process: settings, metrics endpoint, wake-up socket, ZooKeeper
session and signals around one `Daemon` loop, and a clean shutdown (the liveness node goes
at once)."""

from __future__ import annotations

import functools
import logging
import signal
import time

from agrajag.daemon.io import check_nodes
from agrajag.daemon.loop import Daemon
from agrajag.daemon.probe import KeptConnections
from agrajag.daemon.settings import DaemonSettings
from agrajag.daemon.wakeup import WakeupListener
from agrajag.inbox import Inbox, Notified, Wake
from agrajag.metrics import DaemonMetrics, serve
from agrajag.registry.client import Registry
from agrajag.registry.errors import RegistryError
from agrajag.zookeeper_settings import Role

log = logging.getLogger("agrajag.daemon")


def run_daemon(config_path: str) -> int:
    """The `agrajag daemon` process: wiring, signals, clean shutdown."""
    settings = DaemonSettings.load(config_path)
    metrics = DaemonMetrics()
    port = serve(settings.metrics, metrics.registry)
    inbox = Inbox()
    # Before ZooKeeper: a wrong socket path is a configuration error, reported at once.
    listener = WakeupListener(
        settings.wakeup_socket,
        lambda event: inbox.post(Notified(event, time.monotonic())),
        on_result=lambda result: metrics.wakeups.labels(settings.cluster, result).inc(),
        group=settings.wakeup_group,
    )
    zk = settings.zookeeper
    registry = Registry.connect(zk, Role.DAEMON, start_timeout=zk.call_timeout_s)
    kept = KeptConnections()
    daemon = Daemon(
        settings,
        registry,
        metrics,
        inbox,
        check_nodes=functools.partial(check_nodes, kept=kept),
        config_path=config_path,
    )
    signal.signal(signal.SIGHUP, lambda _sig, _frame: inbox.post(Wake.RELOAD))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: inbox.post(Wake.STOP))
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
        kept.close()
        inbox.close()
        log.info("cluster=%s node=%s stopped", settings.cluster, settings.node)
    return 0
