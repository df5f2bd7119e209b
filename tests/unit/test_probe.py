"""The pure parts of the INSERT check, and its deadline against sockets that never answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agrajag.daemon.probe import SCHEMA_DDL, check_round, classify
from agrajag.daemon.probe_values import Credentials, NodeCheck, Outcome, ProbeRound, ProbeTarget
from agrajag.errors import ConfigError

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "conf.d" / "agrajag-schema.sql"
CREDS = Credentials("agrajag", "secret")


def checks(*outcomes: Outcome) -> ProbeRound:
    return ProbeRound(
        tuple(NodeCheck(f"node{i}", o, 0.01, "") for i, o in enumerate(outcomes, start=1))
    )


def test_outcome_values_are_stable() -> None:
    assert [str(o) for o in Outcome] == [
        "writable",
        "read_only",
        "timeout",
        "unreachable",
        "auth_failed",
        "error",
    ]


@pytest.mark.parametrize(
    ("outcomes", "writable"),
    [
        ((), ()),
        ((Outcome.READ_ONLY, Outcome.TIMEOUT), ()),
        ((Outcome.WRITABLE, Outcome.READ_ONLY, Outcome.UNREACHABLE), ("node1",)),
        ((Outcome.READ_ONLY, Outcome.WRITABLE, Outcome.WRITABLE), ("node2", "node3")),
    ],
)
def test_writable_names_and_split_brain(
    outcomes: tuple[Outcome, ...], writable: tuple[str, ...]
) -> None:
    probe = checks(*outcomes)
    assert probe.writable == writable
    assert probe.split_brain is (len(writable) > 1)


def test_by_name() -> None:
    probe = checks(Outcome.WRITABLE, Outcome.AUTH_FAILED)
    found = probe.by_name("node2")
    assert found is not None and found.outcome is Outcome.AUTH_FAILED
    assert probe.by_name("node9") is None


# Messages as psycopg 3.3 / libpq 18 / PostgreSQL 15 give them.
REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    "\n\tIs the server running on that host and accepting TCP/IP connections?"
)
AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '


@pytest.mark.parametrize(
    ("sqlstate", "message", "outcome"),
    [
        ("25006", "cannot execute INSERT in a read-only transaction", Outcome.READ_ONLY),
        ("25006", "cannot execute CREATE SCHEMA in a read-only transaction", Outcome.READ_ONLY),
        ("28P01", 'password authentication failed for user "agrajag"', Outcome.AUTH_FAILED),
        ("28000", 'role "nobody" does not exist', Outcome.AUTH_FAILED),
        (
            None,
            AT + 'FATAL:  password authentication failed for user "agrajag"',
            Outcome.AUTH_FAILED,
        ),
        (None, AT + "fe_sendauth: no password supplied", Outcome.AUTH_FAILED),
        (None, AT + 'FATAL:  role "nobody" does not exist', Outcome.AUTH_FAILED),
        (None, AT + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9"', Outcome.AUTH_FAILED),
        (None, AT + 'FATAL:  database "nope" does not exist', Outcome.ERROR),
        (None, AT + "FATAL:  sorry, too many clients already", Outcome.ERROR),
        (None, REFUSED, Outcome.UNREACHABLE),
        (None, AT + "No route to host", Outcome.UNREACHABLE),
        (None, "connection timeout expired", Outcome.UNREACHABLE),
        (
            None,
            "consuming input failed: server closed the connection unexpectedly",
            Outcome.UNREACHABLE,
        ),
        ("57P01", "terminating connection due to administrator command", Outcome.UNREACHABLE),
        ("08006", "connection failure", Outcome.UNREACHABLE),
        ("57014", "canceling statement due to statement timeout", Outcome.TIMEOUT),
        ("42501", "permission denied for table heartbeat", Outcome.ERROR),
        ("42P01", 'relation "agrajag.heartbeat" does not exist', Outcome.ERROR),
        ("53100", "could not extend file: No space left on device", Outcome.ERROR),
    ],
)
def test_classify(sqlstate: str | None, message: str, outcome: Outcome) -> None:
    assert classify(sqlstate, message) is outcome


def test_password_stays_out_of_repr() -> None:
    assert "secret" not in repr(CREDS)


def test_shipped_schema_sql_holds_the_ddl_the_probe_runs() -> None:
    assert SCHEMA_DDL in SCHEMA_SQL.read_text()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deadline_s": 0},
        {"deadline_s": -1.0},
        {"deadline_s": float("nan")},
        {"deadline_s": float("inf")},
        {"connect_timeout_s": 0},
        {"checker": ""},
    ],
)
def test_invalid_arguments_are_config_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"checker": "node1", **kwargs}
    with pytest.raises(ConfigError):
        check_round([], CREDS, **args)  # type: ignore[arg-type]


def test_duplicate_target_names_are_a_config_error() -> None:
    target = ProbeTarget("node1", "127.0.0.1", 5432, "repmgr")
    with pytest.raises(ConfigError, match="distinct"):
        check_round([target, target], CREDS, checker="node1")


def test_no_targets_is_an_empty_round() -> None:
    assert check_round([], CREDS, checker="node1") == ProbeRound(())


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections nobody reads: a frozen server, seen from afar."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_round_ends_at_its_deadline_when_a_node_never_answers(
    silent_port: int, closed_port: int
) -> None:
    targets = [
        ProbeTarget("silent", "127.0.0.1", silent_port, "repmgr"),
        ProbeTarget("closed", "127.0.0.1", closed_port, "repmgr"),
    ]
    started = time.monotonic()
    probe = check_round(targets, CREDS, checker="node1", deadline_s=0.3, connect_timeout_s=5)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.2
    silent, closed = probe.checks
    assert (silent.name, silent.outcome) == ("silent", Outcome.TIMEOUT)
    assert silent.detail == "no answer within 0.3s"
    assert (closed.name, closed.outcome) == ("closed", Outcome.UNREACHABLE)
    assert "Connection refused" in closed.detail
    assert probe.writable == ()
