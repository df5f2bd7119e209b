"""The INSERT check against a real 3-node repmgr cluster, logged in as the `agrajag` role."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agrajag.daemon.probe import KeptConnections, check_round
from agrajag.daemon.probe_values import Credentials, Outcome, ProbeRound, ProbeTarget
from tools.harness.postgres import CHECK_PASSWORD, CHECK_USER, PgCluster, PgNode
from tools.harness.procs import wait_until

pytestmark = pytest.mark.integration

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "conf.d" / "agrajag-schema.sql"
CREDS = Credentials(CHECK_USER, CHECK_PASSWORD)
DEADLINE_S = 1.0
#: What a round may take beyond its deadline: thread scheduling, never a node's doing.
SLACK_S = 0.5
HEARTBEAT_EXISTS = "SELECT to_regclass('agrajag.heartbeat') IS NOT NULL"


def targets(cluster: PgCluster) -> list[ProbeTarget]:
    return [ProbeTarget(n.name, "127.0.0.1", n.port, "repmgr") for n in cluster.nodes]


def outcomes(probe: ProbeRound) -> dict[str, Outcome]:
    return {check.name: check.outcome for check in probe.checks}


def timed_round(
    cluster: PgCluster, credentials: Credentials = CREDS, **kwargs: Any
) -> tuple[ProbeRound, float]:
    started = time.monotonic()
    probe = check_round(
        targets(cluster), credentials, checker="node2", deadline_s=DEADLINE_S, **kwargs
    )
    return probe, time.monotonic() - started


def probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("agrajag-probe")]


def stop_failover(cluster: PgCluster) -> None:
    """Keep repmgrd from promoting a standby while a test stops or freezes the primary."""
    for node in cluster.nodes:
        node.stop_repmgrd()


def eventually(node: PgNode, query: str) -> None:
    """Wait until `query` (one boolean) is true on `node`: replication and exits take a moment."""
    wait_until(lambda: node.sql(query)[0][0], timeout=10, what=f"{node.name}: {query}")


@pytest.fixture
def cluster(pg_cluster: PgCluster) -> PgCluster:
    """The cluster with `conf.d/agrajag-schema.sql` applied on the primary, as a DBA would."""
    pg_cluster.nodes[0].sql(SCHEMA_SQL.read_text())
    for node in pg_cluster.nodes[1:]:
        eventually(node, HEARTBEAT_EXISTS)
    return pg_cluster


def test_primary_is_writable_standbys_read_only_and_the_heartbeat_replicates(
    cluster: PgCluster,
) -> None:
    primary = cluster.nodes[0]
    probe, elapsed = timed_round(cluster)
    assert outcomes(probe) == {
        "node1": Outcome.WRITABLE,
        "node2": Outcome.READ_ONLY,
        "node3": Outcome.READ_ONLY,
    }
    assert probe.writable == ("node1",) and not probe.split_brain
    assert probe.checks[1].detail == "cannot execute INSERT in a read-only transaction"
    assert probe.checks[0].detail == "" and elapsed < DEADLINE_S
    assert [c.timeline for c in probe.checks] == [1, None, None]

    first = primary.sql("SELECT checker, checked_at FROM agrajag.heartbeat")
    assert [row[0] for row in first] == ["node2"]
    assert timed_round(cluster)[0].writable == ("node1",)
    second = primary.sql("SELECT checker, checked_at FROM agrajag.heartbeat")
    assert second[0][1] > first[0][1]  # type: ignore[operator]
    for standby in cluster.nodes[1:]:
        eventually(
            standby,
            f"SELECT checked_at = '{second[0][1]}' FROM agrajag.heartbeat WHERE checker = 'node2'",
        )
    sessions = "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = 'agrajag'"
    eventually(primary, sessions)  # every connection the probe opened is closed


def test_kept_connections_serve_the_next_round_and_a_restarted_node_gets_a_new_one(
    cluster: PgCluster,
) -> None:
    """The daemon keeps one session per node between rounds (no backend start and SCRAM
    exchange every round); a node restarted meanwhile is checked on a new session, not
    reported unreachable for the one its restart closed."""
    standby = cluster.nodes[2]
    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = 'agrajag-probe'"
    kept = KeptConnections()
    try:
        first, _ = timed_round(cluster, kept=kept)
        before = [node.sql(sessions) for node in cluster.nodes]
        second, _ = timed_round(cluster, kept=kept)
        assert (
            outcomes(first)
            == outcomes(second)
            == {
                "node1": Outcome.WRITABLE,
                "node2": Outcome.READ_ONLY,
                "node3": Outcome.READ_ONLY,
            }
        )
        assert [node.sql(sessions) for node in cluster.nodes] == before  # the same sessions
        assert all(len(pids) == 1 for pids in before)
        stop_failover(cluster)
        standby.stop()
        standby.start()
        third, _ = timed_round(cluster, kept=kept)
        assert outcomes(third) == outcomes(first)
    finally:
        kept.close()
    eventually(cluster.nodes[0], f"SELECT count(*) = 0 FROM ({sessions}) AS probes")


def test_the_table_is_created_on_first_use_where_the_role_may(pg_cluster: PgCluster) -> None:
    probe, _ = timed_round(pg_cluster)
    assert outcomes(probe)["node1"] is Outcome.ERROR
    assert probe.checks[0].detail == "permission denied for database repmgr"
    assert {probe.checks[1].outcome, probe.checks[2].outcome} == {Outcome.READ_ONLY}

    superuser = Credentials("repmgr")  # pg_hba trusts it: no password
    probe, _ = timed_round(pg_cluster, superuser)
    assert probe.writable == ("node1",)
    assert {probe.checks[1].outcome, probe.checks[2].outcome} == {Outcome.READ_ONLY}
    assert pg_cluster.nodes[0].sql("SELECT checker FROM agrajag.heartbeat") == [("node2",)]


def test_stopped_primary_is_unreachable(cluster: PgCluster) -> None:
    stop_failover(cluster)
    cluster.nodes[0].stop()
    probe, elapsed = timed_round(cluster)
    assert outcomes(probe) == {
        "node1": Outcome.UNREACHABLE,
        "node2": Outcome.READ_ONLY,
        "node3": Outcome.READ_ONLY,
    }
    assert "Connection refused" in probe.checks[0].detail
    assert probe.writable == () and elapsed < DEADLINE_S


def test_frozen_primary_is_a_timeout_and_the_round_ends_on_time(cluster: PgCluster) -> None:
    primary = cluster.nodes[0]
    stop_failover(cluster)
    primary.freeze()
    try:
        # connect_timeout (2 s at least) outlasts the deadline: only the deadline ends it.
        probe, elapsed = timed_round(cluster, connect_timeout_s=2)
        assert elapsed < DEADLINE_S + SLACK_S
        assert outcomes(probe) == {
            "node1": Outcome.TIMEOUT,
            "node2": Outcome.READ_ONLY,
            "node3": Outcome.READ_ONLY,
        }
        # The thread stuck in connect ends by connect_timeout, while the node is still frozen.
        wait_until(lambda: not probe_threads(), timeout=5, what="probe threads to end")
    finally:
        primary.resume()
    assert timed_round(cluster)[0].writable == ("node1",)


def test_commit_waiting_for_a_missing_sync_standby_is_a_timeout(cluster: PgCluster) -> None:
    primary = cluster.nodes[0]
    primary.set_config("synchronous_standby_names", "missing")
    probe, elapsed = timed_round(cluster)
    assert elapsed < DEADLINE_S + SLACK_S
    assert outcomes(probe)["node1"] is Outcome.TIMEOUT
    assert probe.checks[0].detail == f"no answer within {DEADLINE_S}s"
    # The cancel released the backend (its commit stays done locally) and the thread ended.
    wait_until(lambda: not probe_threads(), timeout=5, what="probe threads to end")
    assert primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == [
        (0,)
    ]

    primary.set_config("synchronous_standby_names", None)
    assert timed_round(cluster)[0].writable == ("node1",)


def test_node_frozen_mid_commit_cannot_keep_the_probe_thread(cluster: PgCluster) -> None:
    primary = cluster.nodes[0]
    stop_failover(cluster)
    primary.set_config("synchronous_standby_names", "missing")
    freeze = threading.Timer(DEADLINE_S / 2, primary.freeze)  # the INSERT waits in SyncRep
    freeze.start()
    try:
        probe, elapsed = timed_round(cluster, connect_timeout_s=1)
        assert elapsed < DEADLINE_S + SLACK_S
        assert outcomes(probe)["node1"] is Outcome.TIMEOUT
        # The cancel request gets no answer either: the socket is shut down under the thread.
        wait_until(lambda: not probe_threads(), timeout=10, what="probe threads to end")
    finally:
        freeze.join()
        primary.resume()


def test_old_primary_back_without_rejoin_is_a_split_brain(cluster: PgCluster) -> None:
    old = cluster.nodes[0]
    old.crash()
    new = cluster.wait_promotion(old, timeout=30)
    stop_failover(cluster)
    old.start()
    probe, _ = timed_round(cluster)
    assert probe.writable == ("node1", new.name)
    assert probe.split_brain
    timelines = {c.name: c.timeline for c in probe.checks if c.timeline}
    assert timelines == {"node1": 1, new.name: 2}  # the old primary writes on the old timeline


def test_credentials_wrong_password_missing_password_and_passfile(
    cluster: PgCluster, tmp_path: Path
) -> None:
    probe, _ = timed_round(cluster, Credentials(CHECK_USER, "wrong"))
    assert set(outcomes(probe).values()) == {Outcome.AUTH_FAILED}
    assert all("password authentication failed" in c.detail for c in probe.checks)

    passfile = tmp_path / "pgpass"
    passfile.write_text("")
    passfile.chmod(0o600)
    probe, _ = timed_round(cluster, Credentials(CHECK_USER, passfile=str(passfile)))
    assert set(outcomes(probe).values()) == {Outcome.AUTH_FAILED}
    assert all("no password supplied" in c.detail for c in probe.checks)

    passfile.write_text(f"127.0.0.1:*:*:{CHECK_USER}:{CHECK_PASSWORD}\n")
    probe, _ = timed_round(cluster, Credentials(CHECK_USER, passfile=str(passfile)))
    assert probe.writable == ("node1",)
