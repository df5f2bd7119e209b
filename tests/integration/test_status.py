"""`agrajag status` against a real ZooKeeper holding a published master and watchers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from agrajag.reasons import Reason
from agrajag.record import NodeRecord, WatcherAck, utc_now
from agrajag.registry.client import Registry
from agrajag.registry.errors import RegistryError
from agrajag.zookeeper_settings import ZooKeeperSettings
from tests.factories import master_record
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


@pytest.fixture
def populated(zk: ZkEnsemble) -> Iterator[Registry]:
    r = Registry.connect(ZooKeeperSettings(zk.hosts), start_timeout=10)
    r.ensure_layout("main")
    verdicts = {"node1": ("unchanged", None), "node2": ("refuse", "split_brain")}
    for i, (node, (decision, reason)) in enumerate(verdicts.items(), start=1):
        record = NodeRecord(node, i, 1, "test", "2026-11-22T00:00:00Z", decision, reason, utc_now())
        r.register_node("main", record)
    for n in (1, 2):
        record = master_record(n, n, host="127.0.0.1", port=5432 + n, published_by="test")
        assert r.publish(record, r.read_master("main").version, 0) is None
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
    assert "daemons (2 live):" in done.stdout
    assert re.search(r"^    node1: id 1  unchanged for \d+s$", done.stdout, re.M), done.stdout
    assert re.search(r"^    node2: id 2  refuse split_brain for \d+s$", done.stdout, re.M)
    assert lines[1].startswith("  !! SPLIT BRAIN SUSPECTED by node2: "), done.stdout
    assert done.stderr == ""  # no library log lines at the default level
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
    node2 = state["main"]["daemons"]["node2"]
    assert (node2["node_id"], node2["decision"], node2["reason"]) == (2, "refuse", "split_brain")
    assert 0 <= node2["age_s"] < 60
    assert state["main"]["split_brain_suspected_by"] == ["node2"]


def test_status_names_an_unknown_cluster(zk: ZkEnsemble, populated: Registry) -> None:
    done = status(zk, "--cluster", "nosuch")
    assert done.returncode == 2
    assert "no such cluster under /agrajag: nosuch" in done.stderr


def test_status_says_when_zookeeper_is_unreachable(zk: ZkEnsemble) -> None:
    zk.stop()
    done = status(zk)
    assert done.returncode == 2
    assert f"cannot reach ZooKeeper at {zk.hosts}" in done.stderr


def test_a_withdrawn_master_is_written_without_a_guard_and_shown_plainly(
    zk: ZkEnsemble, populated: Registry
) -> None:
    current = populated.read_master("main")
    assert current.record is not None
    why = "node2 takes writes on timeline 1, node3 on timeline 2: node2 is a former primary"
    gone = replace(current.record, epoch=3, published_by="node3", withdrawn=why)
    populated.unregister_node("main", "node2")  # the former primary's daemon may be gone

    with pytest.raises(RegistryError, match="without its guard"):
        populated.publish(current.record, current.version, None)  # a master needs one
    assert populated.publish(gone, current.version - 1, None) is Reason.LOST_RACE
    assert populated.publish(gone, current.version, None) is None

    assert populated.read_master("main").record == gone
    assert populated.history("main")[-1] == gone
    done = status(zk)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("main: NO MASTER: node2 (127.0.0.1:5434) WITHDRAWN at epoch 3 "), first
    assert first.endswith(f"by node3: {why}; nothing routes to it")
    assert re.search(
        r"^    epoch 3: node2 \(127.0.0.1:5434\) at .* by node3  WITHDRAWN$", done.stdout, re.M
    )
    state = json.loads(status(zk, "--json").stdout)
    assert state["main"]["master"]["withdrawn"] == why
