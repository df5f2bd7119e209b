"""The harness drives the real processes: these prove it before anything is built on it."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from tools.harness.postgres import PgCluster
from tools.harness.procs import wait_until
from tools.harness.proxies import HAProxy, PgBouncer, client
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


def test_ensemble_serves_with_one_server_down_and_stops_at_two(zk3: ZkEnsemble) -> None:
    client = KazooClient(hosts=zk3.hosts, timeout=4)
    client.start(timeout=10)
    try:
        client.create("/smoke", b"0")
        zk3.servers[0].kill()
        wait_until(lambda: len(zk3.serving()) == 2, timeout=20, what="2 servers to serve")
        client.retry(client.set, "/smoke", b"1")
        assert client.retry(client.get, "/smoke")[0] == b"1"

        zk3.servers[1].stop()
        wait_until(lambda: not zk3.serving(), timeout=20, what="the last server to stop serving")
        # While SUSPENDED kazoo queues calls instead of failing them: only a bound ends the wait.
        with pytest.raises((KazooException, KazooTimeoutError)):
            client.set_async("/smoke", b"2").get(timeout=3)
    finally:
        client.stop()
        client.close()


def test_frozen_server_stops_answering_and_resumes(zk3: ZkEnsemble) -> None:
    server = zk3.servers[2]
    server.freeze()
    assert not server.serving()
    server.resume()
    wait_until(server.serving, timeout=20, what="the resumed server to serve again")


def _upstream_port(node_sql: list[tuple[object, ...]]) -> int | None:
    return int(str(node_sql[0][0])) if node_sql and node_sql[0][0] is not None else None


def test_repmgrd_promotes_a_standby_and_the_other_follows(pg_cluster: PgCluster) -> None:
    old, *_ = pg_cluster.nodes
    old.sql("CREATE TABLE smoke (v int)")
    old.crash()
    new = pg_cluster.wait_promotion(old, timeout=30)
    other = next(n for n in pg_cluster.nodes if n not in (old, new))
    assert not new.in_recovery()
    assert new.timeline() == 2

    query = "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'"
    wait_until(
        lambda: _upstream_port(other.sql(query)) == new.port,
        timeout=30,
        what=f"{other.name} to stream from {new.name}",
    )
    new.sql("INSERT INTO smoke VALUES (42)")
    wait_until(
        lambda: other.sql("SELECT v FROM smoke") == [(42,)],
        timeout=10,
        what="the write on the new primary to reach the other standby",
    )


def _is_primary_through(port: int) -> bool:
    with client(port) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return row[0] is False


def test_haproxy_forwards_a_client_to_the_primary(pg_cluster: PgCluster, haproxy: HAProxy) -> None:
    haproxy.write_config(pg_cluster.nodes[0].port)
    haproxy.start()
    assert _is_primary_through(haproxy.port)
    (state,) = haproxy.server_states()
    assert (state["be_name"], state["srv_name"]) == ("postgres", "primary")
    assert (state["srv_addr"], state["srv_port"]) == ("127.0.0.1", str(pg_cluster.nodes[0].port))
    assert state["srv_op_state"] == "2"  # running, health check passed
    assert "worker" in haproxy.master("show proc")


def test_pgbouncer_forwards_a_client_to_the_primary(
    pg_cluster: PgCluster, pgbouncer: PgBouncer
) -> None:
    primary = pg_cluster.nodes[0]
    pgbouncer.write_config(f"repmgr = host=127.0.0.1 port={primary.port} dbname=repmgr")
    pgbouncer.start()
    assert _is_primary_through(pgbouncer.port)
    databases = pgbouncer.admin("SHOW DATABASES")
    assert any(row[0] == "repmgr" and row[2] == primary.port for row in databases)
