"""watch.yaml: the shipped example loads, and every mistake is named by file and key."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from agrajag.errors import ConfigError
from agrajag.watch.rules import Backoff, FailMode
from agrajag.watch.settings import WatchConfig
from agrajag.zookeeper_settings import Role
from tests.factories import shipped_config
from tools.harness.watch import example_sinks


def write(tmp_path: Path, **changes: Any) -> Path:
    """conf.d/watch.example.yaml with its sinks' files in tmp_path, then `changes` (None
    removes a key)."""
    conf = shipped_config("watch.example.yaml", tmp_path, Role.WATCHER)
    conf["sinks"] = list(example_sinks(tmp_path).values())
    conf["state_file"] = str(tmp_path / "state.json")
    for key, value in changes.items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    path = tmp_path / "watch.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_the_example_loads(tmp_path: Path) -> None:
    config = WatchConfig.load(write(tmp_path))
    assert config.agent == "app1"
    assert config.clusters == ("main",)
    assert config.fail_mode is FailMode.OPEN
    assert config.fail_closed_after_s == 0
    assert config.reconcile_interval_s == 5
    assert config.retry_backoff == Backoff(1, 30)
    assert config.state_file == tmp_path / "state.json"
    assert config.start_wait_s == 5
    assert [sink.name for sink in config.sinks] == ["haproxy", "pgbouncer", "app-env"]
    assert config.metrics.port == 9188


def test_defaults(tmp_path: Path) -> None:
    config = WatchConfig.load(
        write(
            tmp_path,
            agent=None,
            reconcile_interval_s=None,
            retry_backoff=None,
            metrics=None,
            start_wait_s=None,
        )
    )
    assert config.agent == socket.gethostname()
    assert config.start_wait_s == 5
    assert config.reconcile_interval_s == 5
    assert config.retry_backoff == Backoff(1, 30)
    assert config.metrics.port is None


def test_fail_closed_has_a_grace_period(tmp_path: Path) -> None:
    config = WatchConfig.load(write(tmp_path, fail_mode="closed"))
    assert (config.fail_mode, config.fail_closed_after_s) == (FailMode.CLOSED, 30)
    config = WatchConfig.load(write(tmp_path, fail_mode="closed", fail_closed_after_s=10))
    assert config.fail_closed_after_s == 10


@pytest.mark.parametrize(
    ("changes", "where", "why"),
    [
        ({"fail_mode": None}, "fail_mode", "missing"),
        ({"fail_mode": "maybe"}, "fail_mode", "must be one of open, closed"),
        ({"fail_closed_after_s": 10}, "fail_closed_after_s", "applies only with fail_mode: closed"),
        (
            {"fail_mode": "closed", "fail_closed_after_s": 9},
            "fail_closed_after_s",
            "must be >= 10",
        ),
        ({"agent": "app 1"}, "agent", "must be a plain name"),
        ({"agent": "../x"}, "agent", "must be a plain name"),
        ({"clusters": []}, "clusters", "must name at least one cluster"),
        ({"clusters": "main"}, "clusters", "must be a list"),
        ({"clusters": ["main", "a/b"]}, "clusters[1]", "must be a plain name"),
        ({"clusters": ["main", "main"]}, "clusters[1]", "'main' is listed twice"),
        ({"state_file": None}, "state_file", "missing"),
        ({"reconcile_interval_s": 0}, "reconcile_interval_s", "must be >= 0.1"),
        ({"retry_backoff": {"initial_s": 5, "max_s": 1}}, "retry_backoff.max_s", "must be >= 5"),
        ({"retry_backoff": {"first": 1}}, "retry_backoff.first", "unknown key"),
        ({"zookeeper": {"root": "/agrajag"}}, "zookeeper.hosts", "missing"),
        ({"metrics": {"port": "x"}}, "metrics.port", "must be an integer"),
        ({"sinks": []}, "sinks", "must list at least one sink"),
        ({"sinks": [{"type": "nginx"}]}, "sinks[0].type", "must be one of"),
        ({"sinks": [{"type": "template"}]}, "sinks[0].name", "missing"),
        ({"sink": []}, "sink", "unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key(
    tmp_path: Path, changes: dict[str, Any], where: str, why: str
) -> None:
    path = write(tmp_path, **changes)
    with pytest.raises(ConfigError) as error:
        WatchConfig.load(path)
    assert str(error.value).startswith(f"{path}: {where}: {why}")


def test_two_sinks_with_one_name_are_refused(tmp_path: Path) -> None:
    template = example_sinks(tmp_path)["template"]
    other = template | {"dest": str(tmp_path / "other.env")}
    path = write(tmp_path, sinks=[template, other])
    with pytest.raises(ConfigError, match=r"sinks\[1\]: another sink is already named 'app-env'"):
        WatchConfig.load(path)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent.yaml: cannot read"):
        WatchConfig.load(tmp_path / "absent.yaml")


def test_start_wait_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, start_wait_s=-1)
    with pytest.raises(ConfigError, match=f"{path}: start_wait_s: must be >= 0"):
        WatchConfig.load(path)
