"""The PgBouncer sink with the shipped template against real PgBouncer 1.18 and PostgreSQL.

As for HAProxy, node2 is promoted by hand while node1 keeps running, so a client that leaves
node1 was moved by the sink, not by a crash; then real failovers (a crash with repmgrd, a
clean switchover), and PgBouncer frozen or refusing a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.base import SinkError
from agrajag.sinks.pgbouncer import PgBouncerSink, Settings
from agrajag.sinks.pgbouncer_admin import AdminError, AdminSettings, open_console
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import free_port, wait_until
from tools.harness.proxies import (
    PGBOUNCER_ADMIN,
    PgBouncer,
    client,
    promote_by_hand,
    served_by,
    switch_over_by_hand,
    writes_through,
)
from tools.harness.watch import Publisher, WatchProc, example_sinks
from tools.harness.writer import TABLE, ClientWriter
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


def pgbouncer_sink(bouncer: PgBouncer, cut: str, timeout_s: float = 10) -> PgBouncerSink:
    section = {**bouncer.sink_section(cut), "timeout_s": timeout_s}
    return PgBouncerSink(Settings.from_mapping(section, "test"))


def start(bouncer: PgBouncer, sink: PgBouncerSink, node: PgNode) -> None:
    bouncer.write_config("")
    bouncer.start()
    result = sink.apply({"main": master(node, 1)})
    assert (result.action, result.detail) == ("reload", "")  # a new database: nothing to cut


def master(node: PgNode, epoch: int) -> MasterRecord:
    return at_port(node.port, epoch, node.node_id)


def at_port(port: int, epoch: int, node_id: int = 1) -> MasterRecord:
    return MasterRecord(
        "main", epoch, node_id, f"node{node_id}", "127.0.0.1", port, 1, "t", "t", {}
    )


def server_ports(bouncer: PgBouncer) -> set[int]:
    """The ports of PgBouncer's server connections (SHOW SERVERS: addr, then port)."""
    return {int(str(row[5])) for row in bouncer.admin("SHOW SERVERS")}


@pytest.fixture
def session_pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer(pool_mode="session")
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(params=[("transaction", "reconnect"), ("session", "kill")], ids=lambda p: p[0])
def pooled(request: pytest.FixtureRequest) -> Iterator[tuple[PgBouncer, str]]:
    """PgBouncer with its default settings in each pooling mode, with the cut its users
    would configure."""
    pool_mode, cut = request.param
    bouncer = PgBouncer(pool_mode=pool_mode, fast_connect=False)
    try:
        yield bouncer, cut
    finally:
        bouncer.stop()


def test_transaction_pooling_reconnect_moves_the_same_client(
    pg_cluster: PgCluster, pgbouncer: PgBouncer
) -> None:
    node1, node2, _ = pg_cluster.nodes
    sink = pgbouncer_sink(pgbouncer, "reconnect")
    start(pgbouncer, sink, node1)
    assert writes_through(pgbouncer.port) == node1.port
    with client(pgbouncer.port) as held:
        assert served_by(held)[0] == node1.port

        promote_by_hand(pg_cluster, node2)
        result = sink.apply({"main": master(node2, 2)})

        assert (result.action, result.detail) == ("reload", "reconnect: repmgr")
        assert served_by(held) == (node2.port, False)  # the same client, on the new primary
        wait_until(
            lambda: node1.port not in server_ports(pgbouncer),
            timeout=1,
            what="PgBouncer to close its server connections to node1",
        )
    assert node1.running() and not node1.in_recovery()
    assert writes_through(pgbouncer.port) == node2.port


def test_session_pooling_kill_cuts_the_client_holding_the_old_primary(
    pg_cluster: PgCluster, session_pgbouncer: PgBouncer
) -> None:
    node1, node2, _ = pg_cluster.nodes
    sink = pgbouncer_sink(session_pgbouncer, "kill")
    start(session_pgbouncer, sink, node1)
    with client(session_pgbouncer.port) as held:
        assert served_by(held)[0] == node1.port

        promote_by_hand(pg_cluster, node2)
        result = sink.apply({"main": master(node2, 2)})

        assert result.detail == "kill: repmgr"
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    assert node1.port not in server_ports(session_pgbouncer)
    assert node1.running() and not node1.in_recovery()
    assert writes_through(session_pgbouncer.port) == node2.port


@pytest.mark.parametrize("failover", ["crash", "switchover"])
def test_after_a_failover_clients_write_again_as_soon_as_the_sink_moved_them(
    pg_cluster: PgCluster, pooled: tuple[PgBouncer, str], failover: str
) -> None:
    """PgBouncer's first login to the crashed (or shutting down) primary fails, and it then
    holds the pool for server_login_retry (15 s); the sink's apply must end that."""
    bouncer, cut = pooled
    node1, node2, _ = pg_cluster.nodes
    node1.sql(TABLE)
    sink = pgbouncer_sink(bouncer, cut)
    start(bouncer, sink, node1)
    with ClientWriter(bouncer.port) as writer:
        wait_until(lambda: len(writer.written) > 5, timeout=10, what="writes through PgBouncer")
        stopped = time.monotonic()
        if failover == "crash":
            node1.crash()
            new = pg_cluster.wait_promotion(node1)  # repmgrd's failover
        else:
            switch_over_by_hand(pg_cluster, node1, node2)
            new = node2
        promotion = time.monotonic() - stopped
        sink.apply({"main": master(new, 2)})
        applied = time.monotonic()
        wait_until(lambda: writer.wrote_after(applied), timeout=20, what="a write after the apply")

    gap = writer.longest_gap(stopped, applied).seconds
    assert gap < promotion + 1.0, f"writes stopped {gap:.2f} s, promotion took {promotion:.2f} s"
    assert writes_through(bouncer.port) == new.port


@pytest.fixture
def one_node() -> Iterator[PgNode]:
    """A lone PostgreSQL primary (no standby, no repmgrd): a server to move to."""
    cluster = PgCluster(1)
    try:
        cluster.create()
        yield cluster.nodes[0]
    finally:
        cluster.destroy()


def test_a_held_pool_nobody_waits_in_any_more_is_killed(
    one_node: PgNode, pgbouncer: PgBouncer
) -> None:
    """A client made PgBouncer log in to a dead server, then PgBouncer dropped it
    (query_wait_timeout): the pool is held for server_login_retry (15 s) with nobody waiting,
    so no login can lift the hold. (A client that merely goes away still counts as waiting:
    PgBouncer does not read its socket meanwhile, and the release serves that pool.)"""
    sink = pgbouncer_sink(pgbouncer, "reconnect")
    pgbouncer.write_config("")
    pgbouncer.start()
    sink.apply({"main": at_port(free_port(), 1)})  # nothing listens there
    pgbouncer.admin("SET query_wait_timeout = 1")  # the sink's RELOAD puts 120 s back
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
        client(pgbouncer.port)

    result = sink.apply({"main": at_port(one_node.port, 2)})

    assert writes_through(pgbouncer.port) == one_node.port  # within the client's 3 s
    assert result.detail == "kill: repmgr"


def test_a_frozen_pgbouncer_fails_the_apply_within_its_timeout(pgbouncer: PgBouncer) -> None:
    sink = pgbouncer_sink(pgbouncer, "reconnect", timeout_s=2)
    old_port, new_port = free_port(), free_port()  # routing only: no server is needed
    pgbouncer.write_config("")
    pgbouncer.start()
    sink.apply({"main": at_port(old_port, 1)})
    old = pgbouncer.databases.read_text()
    pgbouncer.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(SinkError, match="timeout") as caught:
            sink.apply({"main": at_port(new_port, 2)})
        elapsed = time.monotonic() - started
    finally:
        pgbouncer.resume()

    assert elapsed < 2.5, f"the apply took {elapsed:.1f} s"
    assert caught.value.step == "reload"
    assert pgbouncer.databases.read_text() == old  # the last good file stays
    assert sink.apply({"main": at_port(new_port, 2)}).action == "reload"  # the retry
    assert pgbouncer.route("repmgr") == new_port


def test_a_frozen_pgbouncer_does_not_hold_up_the_watchers_other_sinks(
    tmp_path: Path, zk: ZkEnsemble, pgbouncer: PgBouncer, watchers: Callable[..., WatchProc]
) -> None:
    """The watcher applies its sinks one after the other: the PgBouncer sink (first here)
    gives up by its timeout, the next sink follows the failover, the watcher says why."""
    pgbouncer.write_config("")
    pgbouncer.start()
    sinks = example_sinks(tmp_path / "app1")
    sinks["pgbouncer"].update(
        dest=str(pgbouncer.databases),
        admin={"host": "127.0.0.1", "port": pgbouncer.port, "user": PGBOUNCER_ADMIN},
        timeout_s=2,
    )
    publisher = Publisher(zk.hosts)
    try:
        publisher.write(at_port(free_port(), 1))
        watch = watchers(sinks=[sinks["pgbouncer"], sinks["template"]])
        wait_until(lambda: publisher.acked_epoch("app1") == 1, timeout=30, what="epoch 1")
        new_port = free_port()
        pgbouncer.freeze()
        try:
            publisher.write(at_port(new_port, 2, node_id=2))
            wait_until(
                lambda: watch.routed_to() == ("127.0.0.1", new_port, 2),
                timeout=10,
                what="the template sink to follow while PgBouncer is frozen",
            )

            def pgbouncer_result() -> str:
                ack = publisher.ack("app1")
                return ack.sinks.get("pgbouncer", "") if ack else ""

            wait_until(
                lambda: "timeout" in pgbouncer_result(), timeout=10, what="a timeout reported"
            )
            assert pgbouncer_result().startswith("failed")
        finally:
            pgbouncer.resume()
        wait_until(lambda: publisher.acked_epoch("app1") == 2, timeout=30, what="epoch 2")
        assert pgbouncer.route("app") == new_port
    finally:
        publisher.close()


def test_an_admin_session_frozen_after_login_ends_by_its_deadline(pgbouncer: PgBouncer) -> None:
    pgbouncer.write_config("")
    pgbouncer.start()
    settings = AdminSettings("127.0.0.1", pgbouncer.port, PGBOUNCER_ADMIN)
    started = time.monotonic()
    with open_console(settings, started + 2.0) as console:
        assert console.run("SHOW VERSION")
        pgbouncer.freeze()
        try:
            with pytest.raises(AdminError, match="RELOAD: timeout"):
                console.run("RELOAD")
        finally:
            pgbouncer.resume()
    assert time.monotonic() - started < 2.5


def test_a_refused_cut_keeps_the_new_routing_and_the_retry_finishes_it(
    pgbouncer: PgBouncer,
) -> None:
    """KILL fails while PgBouncer is PAUSEd: RELOAD has moved the routing already, and putting
    the old file back would send clients to the old primary again."""
    sink = pgbouncer_sink(pgbouncer, "kill")
    old_port, new_port = free_port(), free_port()
    pgbouncer.write_config("")
    pgbouncer.start()
    sink.apply({"main": at_port(old_port, 1)})
    pgbouncer.admin("PAUSE")

    with pytest.raises(SinkError, match="already suspended/paused") as caught:
        sink.apply({"main": at_port(new_port, 2)})

    assert caught.value.step == "cut"
    assert f"port={new_port}" in pgbouncer.databases.read_text()
    assert pgbouncer.route("repmgr") == new_port
    pgbouncer.admin("RESUME")
    retry = sink.apply({"main": at_port(new_port, 2)})
    assert (retry.action, retry.detail) == ("cut", "kill: repmgr")
    assert pgbouncer.route("repmgr") == new_port


def test_no_master_any_more_cuts_the_clients_and_server_connections_of_the_old_one(
    one_node: PgNode, pooled: tuple[PgBouncer, str]
) -> None:
    """A withdrawn master (or fail-closed) renders the cluster without its databases: a
    client that PgBouncer keeps on the former primary must not go on writing there."""
    bouncer, cut = pooled
    sink = pgbouncer_sink(bouncer, cut)
    start(bouncer, sink, one_node)
    with client(bouncer.port) as held:
        assert served_by(held)[0] == one_node.port

        result = sink.apply({})

        assert result.action == "reload"
        with pytest.raises(psycopg.OperationalError, match="database removed"):
            held.execute("SELECT 1")  # RELOAD itself disconnects them
    assert server_ports(bouncer) == set()
    with pytest.raises(psycopg.OperationalError):
        client(bouncer.port)
