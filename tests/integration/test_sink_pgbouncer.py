"""The PgBouncer sink with the shipped template against real PgBouncer 1.18 and PostgreSQL.

As for HAProxy, node2 is promoted by hand while node1 keeps running, so a client that leaves
node1 was moved by the sink, not by a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.pgbouncer import PgBouncerSink, Settings
from tests.harness.postgres import PgCluster, PgNode
from tests.harness.procs import wait_until
from tests.harness.proxies import PGBOUNCER_ADMIN, PgBouncer, client, served_by

pytestmark = pytest.mark.integration

CONF_D = Path(__file__).resolve().parents[2] / "conf.d"


def pgbouncer_sink(bouncer: PgBouncer, cut: str) -> PgBouncerSink:
    """A sink writing the harness's %include file from the shipped template."""
    section = {
        "name": "pgbouncer",
        "template": str(CONF_D / "pgbouncer-databases.ini.j2"),
        "dest": str(bouncer.databases),
        "admin": {"host": "127.0.0.1", "port": bouncer.port, "user": PGBOUNCER_ADMIN},
        "cut": cut,
        "clusters": ["main"],
        "params": {"databases": {"main": ["repmgr"]}},
    }
    return PgBouncerSink(Settings.from_mapping(section, "test"))


def start(bouncer: PgBouncer, sink: PgBouncerSink, node: PgNode) -> None:
    bouncer.write_config("")
    bouncer.start()
    result = sink.apply({"main": master(node, 1)})
    assert (result.action, result.detail) == ("reload", "")  # a new database: nothing to cut


def master(node: PgNode, epoch: int) -> MasterRecord:
    return MasterRecord(
        "main", epoch, node.node_id, node.name, "127.0.0.1", node.port, 1, "t", "t", {}
    )


def promote_by_hand(cluster: PgCluster, node: PgNode) -> None:
    for each in cluster.nodes:
        each.stop_repmgrd()
    node.pg_ctl("promote", "-w")
    wait_until(lambda: not node.in_recovery(), timeout=30, what=f"{node.name} to take writes")


def server_ports(bouncer: PgBouncer) -> set[int]:
    """The ports of PgBouncer's server connections (SHOW SERVERS: addr, then port)."""
    return {int(str(row[5])) for row in bouncer.admin("SHOW SERVERS")}


def writes_through(port: int) -> int:
    with client(port) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS through_bouncer (at timestamptz)")
        conn.execute("INSERT INTO through_bouncer VALUES (now())")
        server_port, in_recovery = served_by(conn)
    assert not in_recovery
    return server_port


@pytest.fixture
def session_pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer(pool_mode="session")
    try:
        yield bouncer
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
