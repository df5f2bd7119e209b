"""Every key agrajag reads is in the example files, where users look for it: each reader
lists the keys it accepts in its own "unknown key" error, and each must appear in the
example (set, or commented out with its default)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from agrajag.config import MetricsSettings, Section
from agrajag.daemon.settings import CheckSettings, DaemonSettings, RepmgrSettings
from agrajag.errors import ConfigError
from agrajag.sinks import SINK_TYPES, build_sink
from agrajag.sinks.pgbouncer import AdminSettings
from agrajag.watch.settings import WatchConfig
from agrajag.zookeeper_settings import ZooKeeperSettings
from tools.harness.shipped import CONF_D

BOGUS = "not_a_key"


def accepted(read: Callable[[], object]) -> set[str]:
    """The keys a reader accepts, as its error for a bogus key lists them."""
    with pytest.raises(ConfigError) as info:
        read()
    line = next(line for line in str(info.value).splitlines() if f"{BOGUS}: unknown" in line)
    known = re.search(r"\(known: ([^)]*)\)", line)
    assert known, line
    return set(known[1].split(", "))


def section(prefix: str = "") -> Section:
    return Section({BOGUS: 1}, "x.yaml", prefix)


def from_file(tmp_path: Path, load: Callable[[Path], object], text: str) -> Callable[[], object]:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return lambda: load(path)


def in_example(name: str, keys: set[str]) -> set[str]:
    """The keys that do not appear in conf.d/<name>, set or commented out."""
    text = (CONF_D / name).read_text()
    return {k for k in keys if not re.search(rf"^[\s#-]*{k}:|[{{,]\s*{k}:", text, re.M)}


def test_every_daemon_key_is_in_the_example(tmp_path: Path) -> None:
    keys = accepted(from_file(tmp_path, DaemonSettings.load, f"{BOGUS}: 1\n"))
    for read in (ZooKeeperSettings, RepmgrSettings, CheckSettings, MetricsSettings):
        keys |= accepted(partial(read.from_section, section()))
    assert len(keys) > 20  # the readers were really asked
    assert in_example("daemon.example.yaml", keys) == set()


def test_every_watcher_key_is_in_the_example(tmp_path: Path) -> None:
    keys = accepted(from_file(tmp_path, WatchConfig.load, f"{BOGUS}: 1\n"))
    keys |= accepted(
        from_file(tmp_path, WatchConfig.load, f"retry_backoff: {{{BOGUS}: 1}}\nfail_mode: open\n")
    )
    for read in (ZooKeeperSettings, MetricsSettings):
        keys |= accepted(partial(read.from_section, section()))
    assert len(keys) > 15
    assert in_example("watch.example.yaml", keys) == set()


@pytest.mark.parametrize("kind", sorted(SINK_TYPES))
def test_every_key_of_every_sink_is_in_the_sinks_example(kind: str) -> None:
    keys = accepted(lambda: build_sink({"type": kind, BOGUS: 1}, "x.yaml: sinks[0]"))
    if kind == "pgbouncer":
        keys |= accepted(lambda: AdminSettings.from_section(section()))
    assert in_example("watch-sinks.example.yaml", keys) == set()


def test_a_key_missing_from_an_example_is_found() -> None:
    assert in_example("daemon.example.yaml", {"poll_interval_s", "poll_intervall_s"}) == {
        "poll_intervall_s"
    }
