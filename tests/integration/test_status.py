"""`agrajag status` against a real ZooKeeper holding a published master and watchers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agrajag.config import ZooKeeperSettings
from agrajag.record import NodeRecord, WatcherAck
from agrajag.registry.client import Registry
from tests.factories import master_record
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


@pytest.fixture
def populated(zk: ZkEnsemble) -> Iterator[Registry]:
    r = Registry.connect(ZooKeeperSettings(zk.hosts), start_timeout=10)
    r.ensure_layout("main")
    for node in ("node1", "node2"):
        r.register_node("main", NodeRecord(node, None, 1, "test", "2026-11-22T00:00:00Z"))
    assert (
        r.publish(master_record(1, 1, host="127.0.0.1"), r.read_master("main").version, 0) is None
    )
    assert (
        r.publish(master_record(2, 2, host="127.0.0.1"), r.read_master("main").version, 0) is None
    )
    r.acknowledge("main", WatcherAck("app1", 2, "2026-11-22T00:00:01Z", {"haproxy": "ok"}))
    r.acknowledge("main", WatcherAck("app2", 1, "2026-11-22T00:00:01Z", {}))
    try:
        yield r
    finally:
        r.close()


def status(zk: ZkEnsemble, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agrajag", "status", "--zookeeper", zk.hosts, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_shows_master_daemons_watchers_and_history(
    zk: ZkEnsemble, populated: Registry
) -> None:
    done = status(zk)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("main: master node2 (127.0.0.1:5434)  epoch 2  timeline 1")
    assert "daemons (2 live): node1 node2" in done.stdout
    assert "app1: applied epoch 2 at 2026-11-22T00:00:01Z  converged" in done.stdout
    assert "app2: applied epoch 1 at 2026-11-22T00:00:01Z  BEHIND by 1" in done.stdout
    history = [line.strip() for line in lines if line.strip().startswith("epoch ")]
    assert [h.split(":")[0] for h in history] == ["epoch 2", "epoch 1"]


def test_status_json_is_machine_readable(zk: ZkEnsemble, populated: Registry) -> None:
    done = status(zk, "--json", "--cluster", "main")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["main"]["master"]["node"] == "node2"
    assert state["main"]["watchers"]["app2"]["behind"] == 1
    assert sorted(state["main"]["daemons"]) == ["node1", "node2"]


def test_status_names_an_unknown_cluster(zk: ZkEnsemble, populated: Registry) -> None:
    done = status(zk, "--cluster", "nosuch")
    assert done.returncode == 2
    assert "no such cluster under /agrajag: nosuch" in done.stderr


def test_status_says_when_zookeeper_is_unreachable(zk: ZkEnsemble) -> None:
    zk.stop()
    done = status(zk)
    assert done.returncode == 2
    assert f"cannot reach ZooKeeper at {zk.hosts}" in done.stderr
