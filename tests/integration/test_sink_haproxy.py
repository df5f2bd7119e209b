"""The HAProxy sink with the shipped template against real HAProxy 2.6 and PostgreSQL.

To prove that a session to the old primary is cut by the sink and not by a crash, repmgrd is
stopped and node2 promoted by hand while node1 keeps running: both accept writes, and only
HAProxy decides where a client lands.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.base import SinkError
from agrajag.sinks.haproxy import HAProxySink, Settings
from agrajag.sinks.haproxy_plan import Processes
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import wait_until
from tools.harness.proxies import (
    CONF_D,
    HAProxy,
    client,
    promote_by_hand,
    served_by,
    writes_through,
)
from tools.harness.watch import Backend, greeting, still_open

pytestmark = pytest.mark.integration


def haproxy_sink(haproxy: HAProxy, template: Path = CONF_D / "haproxy.cfg.j2") -> HAProxySink:
    return HAProxySink(Settings.from_mapping(haproxy.sink_section(template), "test"))


def start_without_master(haproxy: HAProxy, sink: HAProxySink) -> None:
    """Start HAProxy on what the sink renders before any master is known."""
    haproxy.config.write_text(sink.render({}))
    haproxy.start()


def master(node: PgNode, epoch: int, host: str = "127.0.0.1") -> MasterRecord:
    return MasterRecord("main", epoch, node.node_id, node.name, host, node.port, 1, "t", "t", {})


def state_file_ports(haproxy: HAProxy) -> list[str]:
    """The srv_port column of the server-state file the sink wrote."""
    lines = (haproxy.dir / "server-state").read_text().splitlines()
    header = lines[1].lstrip("# ").split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    return [dict(zip(header, row, strict=True))["srv_port"] for row in rows]


def running_workers(haproxy: HAProxy) -> frozenset[int]:
    return Processes.parse(haproxy.master("show proc")).workers


def is_cut(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


@pytest.fixture
def held() -> Iterator[list[psycopg.Connection[tuple[object, ...]]]]:
    """Client sessions a test keeps open; closed at the end."""
    sessions: list[psycopg.Connection[tuple[object, ...]]] = []
    yield sessions
    for conn in sessions:
        conn.close()


def hold(held: list[psycopg.Connection[tuple[object, ...]]], port: int, expect: int) -> None:
    conn = client(port)
    held.append(conn)
    assert served_by(conn)[0] == expect


def test_ip_move_switches_at_runtime_and_cuts_sessions_to_the_old_primary(
    pg_cluster: PgCluster, haproxy: HAProxy, held: list[psycopg.Connection[tuple[object, ...]]]
) -> None:
    node1, node2, _ = pg_cluster.nodes
    sink = haproxy_sink(haproxy)
    start_without_master(haproxy, sink)
    assert sink.apply({"main": master(node1, 1)}).action == "reload"
    assert writes_through(haproxy.port) == node1.port
    hold(held, haproxy.port, expect=node1.port)
    workers = running_workers(haproxy)

    promote_by_hand(pg_cluster, node2)
    result = sink.apply({"main": master(node2, 2)})

    assert (result.action, result.cut_sessions) == ("runtime", 1)
    assert running_workers(haproxy) == workers  # no reload
    wait_until(lambda: is_cut(held[0]), timeout=1, what="the old primary's session to be cut")
    assert node1.running() and not node1.in_recovery()  # the sink cut it, not a crash
    assert writes_through(haproxy.port) == node2.port
    assert state_file_ports(haproxy) == [str(node2.port)]  # a later reload agrees


def test_a_runtime_switch_away_from_a_dead_primary_routes_at_once(
    pg_cluster: PgCluster, haproxy: HAProxy
) -> None:
    """The crashed primary's server is DOWN by its health check; the new address must not
    wait for checks to rise again before HAProxy sends clients to it."""
    node1, node2, _ = pg_cluster.nodes
    sink = haproxy_sink(haproxy)
    start_without_master(haproxy, sink)
    sink.apply({"main": master(node1, 1)})
    assert writes_through(haproxy.port) == node1.port
    for each in pg_cluster.nodes:
        each.stop_repmgrd()
    node1.crash()
    wait_until(
        lambda: [s["srv_op_state"] for s in haproxy.server_states()] == ["0"],
        timeout=10,
        what="HAProxy's health check to mark node1 down",
    )
    node2.pg_ctl("promote", "-w")

    assert sink.apply({"main": master(node2, 2)}).action == "runtime"
    assert writes_through(haproxy.port) == node2.port


def test_reload_cuts_the_sessions_its_old_worker_keeps(
    pg_cluster: PgCluster, haproxy: HAProxy, held: list[psycopg.Connection[tuple[object, ...]]]
) -> None:
    node1, node2, _ = pg_cluster.nodes
    sink = haproxy_sink(haproxy)
    start_without_master(haproxy, sink)
    sink.apply({"main": master(node1, 1)})
    hold(held, haproxy.port, expect=node1.port)

    promote_by_hand(pg_cluster, node2)
    # A host name cannot be set at runtime: HAProxy reloads, its old worker keeps the session.
    result = sink.apply({"main": master(node2, 2, host="localhost")})

    assert (result.action, result.cut_sessions) == ("reload", 1)
    wait_until(lambda: is_cut(held[0]), timeout=1, what="the old worker's session to be cut")
    assert writes_through(haproxy.port) == node2.port
    (state,) = haproxy.server_states()
    assert state["srv_port"] == str(node2.port)  # the rewritten state file did not win


def test_a_config_haproxy_refuses_changes_nothing(haproxy: HAProxy, tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg.j2"
    broken.write_text((CONF_D / "haproxy.cfg.j2").read_text() + "    no-such-directive on\n")
    sink = haproxy_sink(haproxy)
    start_without_master(haproxy, sink)
    sink.apply({"main": MasterRecord("main", 1, 1, "node1", "127.0.0.1", 1, 1, "t", "t", {})})
    before = (haproxy.config.read_bytes(), running_workers(haproxy), haproxy.server_states())

    with pytest.raises(SinkError, match="no-such-directive") as caught:
        moved = MasterRecord("main", 2, 2, "node2", "127.0.0.1", 2, 1, "t", "t", {})
        haproxy_sink(haproxy, broken).apply({"main": moved})

    assert caught.value.step == "check"
    after = (haproxy.config.read_bytes(), running_workers(haproxy), haproxy.server_states())
    assert after[:2] == before[:2]
    assert [s["srv_port"] for s in after[2]] == [s["srv_port"] for s in before[2]] == ["1"]
    assert sorted(p.name for p in haproxy.config.parent.glob(".haproxy.cfg.*")) == []


def test_a_wrong_master_socket_after_a_runtime_switch_never_cuts_the_new_primarys_sessions(
    haproxy: HAProxy,
) -> None:
    """The switch succeeds through the stats socket, the cut of old workers fails on the
    master socket: the new file stays (it is what HAProxy routes by), and every retry leaves
    a client of the new primary alone; once the socket answers, the retry finishes."""
    old, new = Backend("old"), Backend("new")
    held: list[socket.socket] = []
    try:
        section = haproxy.sink_section()
        wrong = haproxy.dir / "master-not-yet.sock"
        sink = HAProxySink(Settings.from_mapping({**section, "master_socket": str(wrong)}, "t"))
        first = MasterRecord("main", 1, 1, "node1", "127.0.0.1", old.port, 1, "t", "t", {})
        haproxy.config.write_text(sink.render({"main": first}))
        haproxy.start()
        moved = MasterRecord("main", 2, 2, "node2", "127.0.0.1", new.port, 1, "t", "t", {})

        for attempt in range(3):
            with pytest.raises(SinkError, match=r"master-not-yet\.sock") as caught:
                sink.apply({"main": moved})
            assert caught.value.took_effect, attempt
            sock, greeted = greeting(haproxy.port)
            held.append(sock)
            assert greeted == "new"
            assert all(still_open(s) for s in held), f"a session was cut at try {attempt}"
            assert f":{new.port} check" in haproxy.config.read_text()
            assert [s["srv_port"] for s in haproxy.server_states()] == [str(new.port)]

        wrong.symlink_to(haproxy.master_socket)
        result = sink.apply({"main": moved})

        assert (result.changed, result.action, result.cut_sessions) == (True, "runtime", 0)
        assert all(still_open(s) for s in held)
        assert state_file_ports(haproxy) == [str(new.port)]
        assert sink.apply({"main": moved}).action == "unchanged"
    finally:
        for sock in held:
            sock.close()
        old.close()
        new.close()


def test_no_master_any_more_cuts_the_sessions_to_the_old_one_and_takes_no_new_client(
    pg_cluster: PgCluster, haproxy: HAProxy, held: list[psycopg.Connection[tuple[object, ...]]]
) -> None:
    """A withdrawn master (or fail-closed) renders the listen section without its server:
    a client HAProxy already sent to the former primary must not go on writing there."""
    node1, _, _ = pg_cluster.nodes
    sink = haproxy_sink(haproxy)
    start_without_master(haproxy, sink)
    sink.apply({"main": master(node1, 1)})
    hold(held, haproxy.port, expect=node1.port)

    result = sink.apply({})

    assert (result.action, result.cut_sessions) == ("reload", 1)
    wait_until(lambda: is_cut(held[0]), timeout=1, what="the old worker's session to be cut")
    with pytest.raises(psycopg.OperationalError):
        writes_through(haproxy.port)
    assert node1.running() and not node1.in_recovery()  # the sink cut it, not a crash
