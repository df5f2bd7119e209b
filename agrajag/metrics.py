"""Prometheus metrics of the daemon and the watcher (names follow Prometheus conventions).

Labels stay bounded: cluster, node (a cluster's few DB nodes), sink, reason, result, outcome.
Each process builds its metrics on its own CollectorRegistry, so tests can run several.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

from agrajag.config import MetricsSettings, MetricsTls
from agrajag.errors import ConfigError
from agrajag.registry.values import Session

SESSION_STATES = ["connected", "suspended", "lost"]


class DaemonMetrics:
    """What `agrajag daemon` exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "agrajag_polls",
            "Decision rounds run, by what woke the daemon.",
            ["cluster", "trigger"],
            registry=r,
        )
        self.wakeups = Counter(
            "agrajag_wakeup_datagrams",
            "Datagrams received on the wake-up socket: accepted, or why dropped.",
            ["cluster", "result"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "agrajag_poll_duration_seconds",
            "Time of one round: repmgr, INSERT check, registry.",
            ["cluster"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.decisions = Counter(
            "agrajag_decisions",
            "Decisions by outcome and reason (publish, unchanged, refuse).",
            ["cluster", "decision", "reason"],
            registry=r,
        )
        self.publishes = Counter(
            "agrajag_publishes",
            "Guarded publish attempts by result.",
            ["cluster", "result"],
            registry=r,
        )
        self.withdrawals = Counter(
            "agrajag_withdrawals",
            "Writes withdrawing a published master found to be a former primary, by result.",
            ["cluster", "result"],
            registry=r,
        )
        self.master_epoch = Gauge(
            "agrajag_master_epoch",
            "Epoch of the master record last read from ZooKeeper.",
            ["cluster"],
            registry=r,
        )
        self.master = Gauge(
            "agrajag_master_info",
            "1 for the node the master record names (none while it is withdrawn).",
            ["cluster", "node"],
            registry=r,
        )
        self.session = Enum(
            "agrajag_zookeeper_session",
            "State of the process's ZooKeeper session.",
            ["cluster"],
            states=SESSION_STATES,
            registry=r,
        )
        self.probe_results = Counter(
            "agrajag_probe_results",
            "INSERT-check results by node and outcome.",
            ["cluster", "node", "outcome"],
            registry=r,
        )
        self.probe_latency = Histogram(
            "agrajag_probe_latency_seconds",
            "INSERT-check latency by node.",
            ["cluster", "node"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
        )
        self.split_brain = Gauge(
            "agrajag_split_brain_suspected",
            "1 when more than one node accepted the INSERT.",
            ["cluster"],
            registry=r,
        )
        self.live_daemons = Gauge(
            "agrajag_live_daemons",
            "Daemons with a liveness node in ZooKeeper.",
            ["cluster"],
            registry=r,
        )
        self.repmgr_nodes = Gauge(
            "agrajag_repmgr_nodes",
            "Nodes in the last repmgr view.",
            ["cluster"],
            registry=r,
        )
        self.last_publish = Gauge(
            "agrajag_last_publish_timestamp_seconds",
            "When this daemon last published.",
            ["cluster"],
            registry=r,
        )


class WatcherMetrics:
    """What `agrajag watch` exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published_epoch = Gauge(
            "agrajag_watch_published_epoch",
            "Epoch of the newest valid record seen in ZooKeeper.",
            ["cluster"],
            registry=r,
        )
        self.applied_epoch = Gauge(
            "agrajag_watch_applied_epoch",
            "Epoch of the record applied to every sink.",
            ["cluster"],
            registry=r,
        )
        self.last_apply = Gauge(
            "agrajag_watch_last_apply_timestamp_seconds",
            "When a sink last applied a change.",
            ["sink"],
            registry=r,
        )
        self.applies = Counter(
            "agrajag_watch_applies",
            "Sink applies by result (changed, unchanged, failed).",
            ["sink", "result"],
            registry=r,
        )
        self.refused = Counter(
            "agrajag_watch_refused_records",
            "Master records refused, by reason.",
            ["cluster", "reason"],
            registry=r,
        )
        self.refusing = Gauge(
            "agrajag_watch_refusing",
            "1 while the current master record of the cluster is refused, with the reason.",
            ["cluster", "reason"],
            registry=r,
        )
        self.connected = Gauge(
            "agrajag_watch_registry_connected",
            "1 while the ZooKeeper session is connected.",
            registry=r,
        )
        self.fail_mode = Enum(
            "agrajag_watch_fail_mode",
            "What the watcher does while ZooKeeper is unreachable.",
            states=["open", "closed"],
            registry=r,
        )


def serve(settings: MetricsSettings, registry: CollectorRegistry) -> int | None:
    """Start the scrape endpoint if configured; returns the bound port (0 picks a free one)."""
    if settings.port is None:
        return None
    tls = settings.tls or MetricsTls("", "")  # empty: prometheus-client serves plain HTTP
    try:
        server, _thread = start_http_server(
            settings.port,
            addr=settings.address,
            registry=registry,
            certfile=tls.cert or None,
            keyfile=tls.key or None,
            client_cafile=tls.client_ca,
            client_auth_required=tls.client_ca is not None,
        )
    except OSError as exc:  # ssl.SSLError included: a bad certificate or key
        where = f"{settings.address}:{settings.port}"
        raise ConfigError(f"metrics: cannot listen on {where}: {exc.strerror or exc}") from None
    return int(server.server_port)


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
