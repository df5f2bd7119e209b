"""`agrajag watch`'s YAML configuration (example: conf.d/watch.example.yaml).

Everything is checked at start, sinks included, and every error names the file and the key:
a watcher that starts is one whose config can be applied.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from agrajag.config import MetricsSettings, Problems, Section, load_yaml
from agrajag.sinks import Sink, build_sink
from agrajag.watch.rules import Backoff, FailMode
from agrajag.zookeeper_settings import Role, ZooKeeperSettings

KEYS = {
    "agent",
    "zookeeper",
    "clusters",
    "fail_mode",
    "fail_closed_after_s",
    "state_file",
    "start_wait_s",
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
    names = s.name_list("clusters")
    if not names:
        raise s.error("clusters", "must name at least one cluster")
    return tuple(names)


def _sinks(s: Section) -> tuple[Sink, ...]:
    """Every sink, and every problem of every sink at once."""
    sections = s.sections("sinks")
    if not sections:
        raise s.error("sinks", "must list at least one sink")
    p = Problems()
    sinks: list[Sink] = []
    for i, section in enumerate(sections):
        sink = p.read(partial(build_sink, section.data, section.where("").rstrip(".")))
        if sink is None:
            continue
        if any(other.name == sink.name for other in sinks):
            p.found.append(s.error(f"sinks[{i}]", f"another sink is already named {sink.name!r}"))
        sinks.append(sink)
    p.raise_any()
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
    start_wait_s: float = 5.0  # at start, how long ZooKeeper may take before the state file

    @classmethod
    def load(cls, path: str | Path) -> WatchConfig:
        """Every problem of the file at once (ConfigErrors), each naming its key."""
        s = load_yaml(path)
        p = Problems()
        p.read(lambda: s.reject_unknown(KEYS))
        interval = p.read(
            lambda: s.number("reconcile_interval_s", 5.0, minimum=0.1, maximum=300), 5.0
        )
        fail_mode = p.read(
            lambda: FailMode(s.choice("fail_mode", [m.value for m in FailMode])), FailMode.OPEN
        )
        config = cls(
            source=str(path),
            agent=p.read(lambda: s.name("agent", socket.gethostname())),
            zookeeper=p.read(
                lambda: ZooKeeperSettings.from_section(s.section("zookeeper"), Role.WATCHER)
            ),
            clusters=p.read(lambda: _clusters(s)),
            fail_mode=fail_mode,
            fail_closed_after_s=p.read(lambda: _fail_closed_after(s, fail_mode, interval)),
            state_file=p.read(lambda: Path(s.string("state_file"))),
            start_wait_s=p.read(lambda: s.number("start_wait_s", 5.0, minimum=0, maximum=300), 5.0),
            reconcile_interval_s=interval,
            retry_backoff=p.read(lambda: _backoff(s.section("retry_backoff", {}))),
            metrics=p.read(lambda: MetricsSettings.from_section(s.section("metrics", {}))),
            sinks=p.read(lambda: _sinks(s)),
        )
        p.raise_any()
        return config


def _fail_closed_after(s: Section, fail_mode: FailMode, interval: float) -> float:
    if fail_mode is FailMode.CLOSED:
        # every reconcile is a sign of life: the grace period must outlast several
        return s.number("fail_closed_after_s", 30.0, minimum=2 * interval)
    if "fail_closed_after_s" in s.data:
        raise s.error("fail_closed_after_s", "applies only with fail_mode: closed")
    return 0.0
