"""`agrajag watch`'s YAML configuration (example: conf.d/watch.example.yaml).

Everything is checked at start, sinks included, and every error names the file and the key:
a watcher that starts is one whose config can be applied.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from agrajag.config import MetricsSettings, Role, Section, ZooKeeperSettings, load_yaml
from agrajag.record import is_plain_name
from agrajag.sinks import Sink, build_sink
from agrajag.watch.rules import Backoff, FailMode

KEYS = {
    "agent",
    "zookeeper",
    "clusters",
    "fail_mode",
    "fail_closed_after_s",
    "state_file",
    "reconcile_interval_s",
    "retry_backoff",
    "metrics",
    "sinks",
}


def _backoff(s: Section) -> Backoff:
    s.reject_unknown({"initial_s", "max_s"})
    initial = s.number("initial_s", 1.0, minimum=0.01, maximum=300)
    return Backoff(initial, s.number("max_s", max(30.0, initial), minimum=initial, maximum=3600))


def _clusters(s: Section) -> tuple[str, ...]:
    names = s.string_list("clusters")
    if not names:
        raise s.error("clusters", "must name at least one cluster")
    for i, name in enumerate(names):
        if not is_plain_name(name):
            raise s.error(f"clusters[{i}]", f"must be a plain name, got {name!r}")
        if name in names[:i]:
            raise s.error(f"clusters[{i}]", f"{name!r} is listed twice")
    return tuple(names)


def _sinks(s: Section) -> tuple[Sink, ...]:
    sections = s.sections("sinks")
    if not sections:
        raise s.error("sinks", "must list at least one sink")
    sinks: list[Sink] = []
    for i, section in enumerate(sections):
        sink = build_sink(section.data, section.where("").rstrip("."))
        if any(other.name == sink.name for other in sinks):
            raise s.error(f"sinks[{i}]", f"another sink is already named {sink.name!r}")
        sinks.append(sink)
    return tuple(sinks)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """What one `agrajag watch` process follows and where it applies it."""

    source: str
    agent: str  # the name of watchers/<agent> in every cluster's subtree
    zookeeper: ZooKeeperSettings
    clusters: tuple[str, ...]
    fail_mode: FailMode
    fail_closed_after_s: float  # fail-closed only: how long ZooKeeper may stay silent
    state_file: Path
    reconcile_interval_s: float
    retry_backoff: Backoff
    metrics: MetricsSettings
    sinks: tuple[Sink, ...]

    @classmethod
    def load(cls, path: str | Path) -> WatchConfig:
        s = load_yaml(path)
        s.reject_unknown(KEYS)
        interval = s.number("reconcile_interval_s", 5.0, minimum=0.1, maximum=300)
        fail_mode = FailMode(s.choice("fail_mode", [m.value for m in FailMode]))
        if fail_mode is FailMode.CLOSED:
            # every reconcile is a sign of life: the grace period must outlast several
            closed_after = s.number("fail_closed_after_s", 30.0, minimum=2 * interval)
        elif "fail_closed_after_s" in s.data:
            raise s.error("fail_closed_after_s", "applies only with fail_mode: closed")
        else:
            closed_after = 0.0
        return cls(
            source=str(path),
            agent=s.name("agent", socket.gethostname()),
            zookeeper=ZooKeeperSettings.from_section(s.section("zookeeper"), Role.WATCHER),
            clusters=_clusters(s),
            fail_mode=fail_mode,
            fail_closed_after_s=closed_after,
            state_file=Path(s.string("state_file")),
            reconcile_interval_s=interval,
            retry_backoff=_backoff(s.section("retry_backoff", {})),
            metrics=MetricsSettings.from_section(s.section("metrics", {})),
            sinks=_sinks(s),
        )
