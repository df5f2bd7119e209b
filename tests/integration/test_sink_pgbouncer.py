"""The PgBouncer sink with the shipped template against real PgBouncer 1.18 and PostgreSQL.

As for HAProxy, node2 is promoted by hand while node1 keeps running, so a client that leaves
node1 was moved by the sink, not by a crash.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.pgbouncer import PgBouncerSink, Settings
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.proxies import (
    PgBouncer,
    client,
    promote_by_hand,
    served_by,
    writes_through,
)

pytestmark = pytest.mark.integration


def pgbouncer_sink(bouncer: PgBouncer, cut: str) -> PgBouncerSink:
    return PgBouncerSink(Settings.from_mapping(bouncer.sink_section(cut), "test"))


def start(bouncer: PgBouncer, sink: PgBouncerSink, node: PgNode) -> None:
    bouncer.write_config("")
    bouncer.start()
    result = sink.apply({"main": master(node, 1)})
    assert (result.action, result.detail) == ("reload", "")  # a new database: nothing to cut


def master(node: PgNode, epoch: int) -> MasterRecord:
    return MasterRecord(
        "main", epoch, node.node_id, node.name, "127.0.0.1", node.port, 1, "t", "t", {}
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
