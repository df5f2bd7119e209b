"""`agrajag daemon` on every node of a real repmgr cluster, publishing into real ZooKeeper."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from agrajag.zookeeper_settings import Role
from tools.harness.agrajag import Daemons
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgCluster
from tools.harness.procs import wait_until
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration

BASE = "/agrajag/main"


class Observer:
    """Reads the registry with its own client, as an operator would."""

    def __init__(self, hosts: str) -> None:
        self.client = KazooClient(hosts=hosts, timeout=10, auth_data=kazoo_auth(Role.WATCHER))
        self.client.start(timeout=20)

    def master(self) -> dict[str, Any] | None:
        if not self.client.exists(f"{BASE}/master"):
            return None
        data, _ = self.client.get(f"{BASE}/master")
        result: dict[str, Any] = json.loads(data)
        return result

    def history(self) -> list[dict[str, Any]]:
        names = sorted(self.client.get_children(f"{BASE}/history"))
        return [json.loads(self.client.get(f"{BASE}/history/{n}")[0]) for n in names]

    def live(self) -> list[str]:
        return sorted(self.client.get_children(f"{BASE}/nodes"))

    def wait_master(self, node: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (m := self.master()) and m["node"] == node and m,
            timeout=timeout,
            what=f"the master znode to name {node}",
        )

    def close(self) -> None:
        self.client.stop()
        self.client.close()


class Setup:
    def __init__(self, zk: ZkEnsemble, cluster: PgCluster) -> None:
        self.zk = zk
        self.cluster = cluster
        self.daemons = Daemons(zk.hosts, cluster.nodes)
        self.observer: Observer | None = None

    def start(self) -> Observer:
        self.daemons.start()
        self.observer = Observer(self.zk.hosts)
        return self.observer

    def logs(self) -> str:
        return self.daemons.logs()

    def stop(self) -> None:
        if self.observer:
            self.observer.close()
        self.daemons.stop()


@pytest.fixture
def setup(zk: ZkEnsemble, cluster_with_hook: PgCluster) -> Iterator[Setup]:
    s = Setup(zk, cluster_with_hook)
    try:
        yield s
    finally:
        s.stop()


def _assert_history_monotonic(history: list[dict[str, Any]]) -> None:
    epochs = [h["epoch"] for h in history]
    assert epochs == list(range(1, len(epochs) + 1)), epochs


def test_first_publish_and_failover_publish_exactly_once(setup: Setup) -> None:
    observer = setup.start()
    first = observer.wait_master("node1")
    assert first["epoch"] == 1 and first["port"] == setup.cluster.nodes[0].port
    assert first["evidence"]["writable"] == ["node1"]
    wait_until(lambda: observer.live() == ["node1", "node2", "node3"], timeout=10, what="3 daemons")

    old = setup.cluster.nodes[0]
    old.crash()
    new = setup.cluster.wait_promotion(old, timeout=30)
    record = observer.wait_master(new.name, timeout=15)
    assert record["epoch"] == 2 and record["port"] == new.port
    assert (first["timeline"], record["timeline"]) == (1, 2)  # as the new primary reports it
    time.sleep(3)  # three more poll rounds of three daemons: no churn
    history = observer.history()
    assert [(h["epoch"], h["node"]) for h in history] == [(1, "node1"), (2, new.name)], setup.logs()
    # repmgr's events on the promoted node reached its daemon through conf.d's hook
    assert "trigger=notify_" in setup.daemons.procs[new.name].output(), setup.logs()


def test_old_primary_back_without_rejoin_never_flips_the_master_back(setup: Setup) -> None:
    observer = setup.start()
    observer.wait_master("node1")
    old = setup.cluster.nodes[0]
    setup.cluster.nodes[0].stop_repmgrd()
    old.crash()
    new = setup.cluster.wait_promotion(old, timeout=30)
    observer.wait_master(new.name, timeout=15)

    old.start()  # comes back as a primary on the old timeline: two writable nodes
    wait_until(
        lambda: "reason=split_brain" in setup.logs(),
        timeout=15,
        what="a daemon to refuse with reason split_brain",
    )
    time.sleep(2)
    assert observer.master()["node"] == new.name  # type: ignore[index]
    _assert_history_monotonic(observer.history())
    assert [h["node"] for h in observer.history()] == ["node1", new.name]


def test_a_frozen_daemon_never_overwrites_with_its_stale_view(setup: Setup) -> None:
    observer = setup.start()
    observer.wait_master("node1")
    frozen = setup.daemons.procs["node3"]
    frozen.proc.freeze()
    try:
        old = setup.cluster.nodes[0]
        old.crash()
        new = setup.cluster.wait_promotion(old, timeout=30)
        observer.wait_master(new.name, timeout=15)
        # Past its session timeout (4 s): its liveness node goes, its session expires.
        wait_until(lambda: "node3" not in observer.live(), timeout=15, what="node3's session")
    finally:
        frozen.proc.resume()
    wait_until(lambda: "node3" in observer.live(), timeout=15, what="node3 to register again")
    time.sleep(2)
    assert observer.master()["node"] == new.name  # type: ignore[index]
    assert [h["node"] for h in observer.history()] == ["node1", new.name]


def test_nothing_is_published_without_quorum_and_the_master_catches_up_after(
    zk3: ZkEnsemble, cluster_with_hook: PgCluster
) -> None:
    setup = Setup(zk3, cluster_with_hook)
    try:
        observer = setup.start()
        observer.wait_master("node1")
        zk3.servers[0].stop()
        zk3.servers[1].freeze()
        old = cluster_with_hook.nodes[0]
        old.crash()
        new = cluster_with_hook.wait_promotion(old, timeout=30)
        wait_until(
            lambda: "reason=not_connected" in setup.logs(),
            timeout=20,
            what="a daemon to refuse with reason not_connected",
        )
        zk3.servers[1].resume()
        zk3.servers[0].start()
        record = observer.wait_master(new.name, timeout=30)
        assert record["epoch"] == 2
        assert [h["node"] for h in observer.history()] == ["node1", new.name]
    finally:
        setup.stop()


def test_sigterm_stops_cleanly_and_sighup_reloads(setup: Setup) -> None:
    observer = setup.start()
    observer.wait_master("node1")
    wait_until(lambda: observer.live() == ["node1", "node2", "node3"], timeout=10, what="3 daemons")
    daemon = setup.daemons.procs["node3"]

    conf = yaml.safe_load(daemon.config.read_text())
    conf["poll_interval_s"] = 0.5
    daemon.config.write_text(yaml.safe_dump(conf))
    daemon.proc.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in daemon.output(), timeout=10, what="reload")

    conf["cluster"] = "other"
    daemon.config.write_text(yaml.safe_dump(conf))
    daemon.proc.signal(signal.SIGHUP)
    wait_until(
        lambda: "reload refused: cluster change only with a restart" in daemon.output(),
        timeout=10,
        what="the reload to be refused",
    )

    started = time.monotonic()
    daemon.proc.signal(signal.SIGTERM)
    assert daemon.proc.popen is not None and daemon.proc.popen.wait(10) == 0
    # Its liveness node is deleted at once, not after the session timeout.
    wait_until(lambda: observer.live() == ["node1", "node2"], timeout=2, what="node3 gone")
    assert time.monotonic() - started < 4
    assert not (daemon.node.dir / "agrajag.sock").exists()
