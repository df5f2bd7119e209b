"""Partitions between real hosts: every DB node, ZooKeeper server and app host in its own
network namespace (tools/harness/netns.py), links cut with nftables, traffic only on a
bridge the machine's own namespace has no route to."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psycopg
import pytest

from tools.harness.netns import Topology
from tools.harness.postgres import PgNode
from tools.harness.procs import wait_until
from tools.harness.proxies import client, lands_on
from tools.harness.reader import RegistryReader
from tools.harness.system import System

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
]


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    topo = Topology(System.host_names()).create()
    try:
        yield topo
    finally:
        topo.destroy()


@pytest.fixture(scope="module")
def system(topology: Topology) -> Iterator[System]:
    """The whole deployment, reached from the observer host for the module's tests."""
    with topology.entered():
        sys_ = System(topology)
        try:
            sys_.start()
            sys_.wait_routed(sys_.cluster.nodes[0])
            yield sys_
        finally:
            sys_.stop()


@pytest.fixture
def registry(system: System) -> Iterator[RegistryReader]:
    reader = RegistryReader(system.zk.hosts)
    try:
        yield reader
    finally:
        system.topology.heal()
        reader.close()


def lands_on_from(system: System, app: str, port: int, node: PgNode) -> bool:
    """A client on app host `app` lands through its proxy on `port` on `node`, writable."""
    with system.topology.entered(app):
        return lands_on(system.apps[app].address, port, node)


def reachable(system: System, src: str, address: str, port: int) -> bool:
    with system.topology.entered(src):
        try:
            client(port, address, timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True


def test_db_node_cut_from_zookeeper_keeps_the_master_and_the_daemon(
    system: System, registry: RegistryReader
) -> None:
    primary = system.cluster.nodes[0]
    app = system.apps["app1"]
    before = registry.master()
    assert before is not None and before["node"] == primary.name
    wait_until(lambda: registry.live() == ["node1", "node2", "node3"], timeout=20, what="daemons")
    published = len(registry.history())

    system.topology.cut("db1", system.zk_names)
    assert not reachable(system, "zk1", primary.host.address, primary.port)
    assert reachable(system, "app1", primary.host.address, primary.port)
    # Its session expires on the servers (4 s): its liveness node goes.
    wait_until(lambda: "node1" not in registry.live(), timeout=30, what="node1's session to end")
    time.sleep(3)  # three more rounds of the other daemons
    assert registry.master() == before  # nobody else published, nothing rolled
    assert len(registry.history()) == published
    for port in (app.haproxy.port, app.pgbouncer.port):
        assert lands_on_from(system, "app1", port, primary)

    system.topology.heal()
    wait_until(lambda: "node1" in registry.live(), timeout=30, what="node1 to register again")
    assert system.daemons["node1"].proc.alive(), system.daemons["node1"].output()[-3000:]
    time.sleep(2)
    assert registry.master() == before
    assert len(registry.history()) == published


def test_app_host_cut_from_zookeeper_routes_fail_open_then_converges(
    system: System, registry: RegistryReader
) -> None:
    old = system.cluster.nodes[0]
    app = system.apps["app1"]
    epoch = registry.acks()["app1"]

    system.topology.cut("app1", system.zk_names)
    wait_until(lambda: "app1" not in registry.acks(), timeout=30, what="app1's session to end")
    for port in (app.haproxy.port, app.pgbouncer.port):
        assert lands_on_from(system, "app1", port, old)  # fail-open: the last good master

    system.crash_node(old)  # a failover app1 cannot hear about
    new = system.cluster.wait_promotion(old, timeout=60)
    wait_until(
        lambda: (m := registry.master()) is not None and m["node"] == new.name,
        timeout=30,
        what=f"the master znode to name {new.name}",
    )
    time.sleep(2)
    assert app.watcher.proc.alive(), app.watcher.output()[-3000:]
    assert f"epoch {epoch}" in app.haproxy.config.read_text()  # still the last good config

    system.topology.heal()
    system.wait_routed(new, timeout=20)
    wait_until(lambda: registry.acks().get("app1") == epoch + 1, timeout=20, what="app1's ack")
    assert app.watcher.proc.alive()
