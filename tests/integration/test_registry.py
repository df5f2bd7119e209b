"""The registry's guarded compare-and-set and bounded calls, against a real ZooKeeper."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from agrajag.reasons import Reason
from agrajag.record import MasterRecord, WatcherAck
from agrajag.registry.client import Registry
from agrajag.registry.errors import AgentNameTaken, NodeNameTaken, Unavailable
from agrajag.registry.values import Session
from agrajag.zookeeper_settings import ZooKeeperSettings
from tests.factories import master_record, node_record
from tools.harness.procs import wait_until
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


def record(node: str, epoch: int) -> MasterRecord:
    """node<N> at 127.0.0.1:5432+N."""
    n = int(node[-1])
    return master_record(n, epoch, host="127.0.0.1", port=5432 + n, published_by="test")


@pytest.fixture
def registries(zk: ZkEnsemble) -> Iterator[list[Registry]]:
    made: list[Registry] = []

    def make() -> Registry:
        settings = ZooKeeperSettings(zk.hosts, session_timeout_s=4, call_timeout_s=1)
        r = Registry.connect(settings, start_timeout=10)
        made.append(r)
        return r

    first = make()
    first.ensure_layout("main")
    first.register_node("main", node_record("node1"))
    for _ in range(7):
        make()
    try:
        yield made
    finally:
        for r in made:
            r.close()


def test_publish_creates_then_compares_and_sets(registries: list[Registry]) -> None:
    r = registries[0]
    current = r.read_master("main")
    assert (current.record, current.version, current.last_epoch) == (None, -1, 0)
    guard = r.guard_version("main", "node1")
    assert guard is not None
    assert r.publish(record("node1", 1), current.version, guard) is None
    # A second publish on the same stale read loses: someone (here: us) wrote since.
    assert r.publish(record("node1", 1), current.version, guard) is Reason.LOST_RACE
    fresh = r.read_master("main")
    assert fresh.record == record("node1", 1) and fresh.version == 0
    assert [h.epoch for h in r.history("main")] == [1]


def test_publish_without_the_new_masters_liveness_node_is_refused(
    registries: list[Registry],
) -> None:
    r = registries[0]
    assert r.publish(record("node2", 1), r.read_master("main").version, 0) is Reason.GUARD_MISSING
    assert r.read_master("main").record is None
    assert r.history("main") == []


def test_racing_publishers_make_exactly_one_write(registries: list[Registry]) -> None:
    reads = [(r, r.read_master("main")) for r in registries]
    barrier = threading.Barrier(len(reads))
    results: list[Reason | None] = []

    def race(r: Registry, current: object) -> None:
        barrier.wait()
        results.append(r.publish(record("node1", 1), current.version, 0))  # type: ignore[arg-type]

    threads = [threading.Thread(target=race, args=pair) for pair in reads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results.count(None) == 1 and results.count(Reason.LOST_RACE) == 7
    assert len(registries[0].history("main")) == 1


def test_a_second_daemon_with_the_same_node_name_is_refused(registries: list[Registry]) -> None:
    with pytest.raises(NodeNameTaken):
        registries[1].register_node("main", node_record("node1"))
    assert registries[0].register_node("main", node_record("node1")) is False  # already ours


def test_a_second_watcher_with_the_same_agent_name_is_refused(registries: list[Registry]) -> None:
    first, second = registries[0], registries[1]
    first.acknowledge("main", WatcherAck("app1", 1, "t"))
    with pytest.raises(AgentNameTaken, match=r"/agrajag/main/watchers/app1 belongs to .* session"):
        second.acknowledge("main", WatcherAck("app1", 2, "t"))
    first.acknowledge("main", WatcherAck("app1", 3, "t"))
    assert second.watchers("main") == {"app1": WatcherAck("app1", 3, "t")}


def test_the_liveness_node_goes_with_its_session(registries: list[Registry]) -> None:
    owner, other = registries[0], registries[1]
    assert other.guard_version("main", "node1") == 0
    owner.close()
    assert other.guard_version("main", "node1") is None
    assert other.publish(record("node1", 1), other.read_master("main").version, 0) is (
        Reason.GUARD_MISSING
    )


def test_calls_are_bounded_while_zookeeper_is_frozen(
    zk: ZkEnsemble, registries: list[Registry]
) -> None:
    r = registries[0]
    current = r.read_master("main")
    zk.servers[0].freeze()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            r.publish(replace(record("node1", 1)), current.version, 0)
        assert time.monotonic() - started < 3
        wait_until(lambda: r.session is Session.SUSPENDED, timeout=10, what="SUSPENDED")
        started = time.monotonic()
        with pytest.raises(Unavailable):
            r.read_master("main")
        assert time.monotonic() - started < 0.5  # not even queued while suspended
    finally:
        zk.servers[0].resume()
    wait_until(lambda: r.session is Session.CONNECTED, timeout=20, what="reconnection")
    # A timed-out request may still be executed by the server once it runs again; the
    # multi-op then lands whole and still compare-and-set: at most once, never half.
    after = r.read_master("main")
    history = r.history("main")
    assert (after.record, history) in [(None, []), (record("node1", 1), [record("node1", 1)])]


def test_a_deleted_history_is_reported_and_ensure_layout_repairs_it(
    registries: list[Registry],
) -> None:
    r = registries[0]
    assert r.publish(record("node1", 1), -1, 0) is None
    r.client.delete("/agrajag/main/history", recursive=True)
    assert r.publish(record("node1", 2), 0, 0) is Reason.LAYOUT_MISSING
    assert r.read_master("main").record == record("node1", 1)  # nothing half-written
    r.ensure_layout("main")
    assert r.publish(record("node1", 2), 0, 0) is None
    assert [h.epoch for h in r.history("main")] == [2]


def test_the_epoch_floor_is_the_highest_epoch_shown_anywhere(registries: list[Registry]) -> None:
    r = registries[0]
    assert r.epoch_floor("main") == 0
    assert r.publish(record("node1", 3), -1, 0) is None
    r.acknowledge("main", WatcherAck("app1", 9, "2026-11-22T00:00:00Z", {}))
    assert r.epoch_floor("main") == 9
    r.client.delete("/agrajag/main/master")
    r.client.delete("/agrajag/main/watchers", recursive=True)
    assert r.epoch_floor("main") == 3  # the history entry
