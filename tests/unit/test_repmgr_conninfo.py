"""Connection strings in `repmgr cluster show`, read with libpq's rules: where the INSERT check
connects and what the master record would carry, or why a node has no such address."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agrajag.daemon.repmgr import parse_cluster_show
from tests.factories import REPMGR_HEADER


def node(conninfo: str, default_port: int = 5432) -> tuple[object, ...]:
    row = f" 1 | node1 | primary | * running | | default | 100 | 1 | {conninfo}\n"
    n = parse_cluster_show(REPMGR_HEADER + row, default_port=default_port).nodes[0]
    return (n.host, n.port, n.dbname, n.address_problem)


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        # repmgr's usual form names no port: libpq's default
        (
            "host=pg2.db.example.net user=repmgr dbname=repmgr connect_timeout=2",
            ("pg2.db.example.net", 5432, "repmgr", None),
        ),
        ("host=10.0.0.2 port=6432 dbname=repmgr", ("10.0.0.2", 6432, "repmgr", None)),
        ("postgresql://repmgr@pg2.example.net/repmgr", ("pg2.example.net", 5432, "repmgr", None)),
        ("postgresql://repmgr@[::1]:5433/repmgr", ("::1", 5433, "repmgr", None)),
        ("host='pg2.example.net' dbname='repmgr db'", ("pg2.example.net", 5432, "repmgr db", None)),
        ("hostaddr=10.0.0.2 dbname=repmgr", ("10.0.0.2", 5432, "repmgr", None)),
    ],
)
def test_a_single_tcp_address_with_libpqs_default_port(
    conninfo: str, expected: tuple[object, ...]
) -> None:
    assert node(conninfo) == expected


def test_the_default_port_is_the_callers() -> None:
    assert node("host=db1 dbname=repmgr", default_port=6543)[1] == 6543


@pytest.mark.parametrize(
    ("conninfo", "why"),
    [
        ("host=db1,db2 dbname=repmgr", "names several hosts or ports (db1,db2:)"),
        ("postgresql://db1:5432,db2:5433/repmgr", "names several hosts or ports"),
        ("host=/var/run/postgresql dbname=repmgr", "Unix socket directory '/var/run/postgresql'"),
        ("dbname=repmgr user=repmgr", "names no host (a Unix socket)"),
    ],
)
def test_no_single_tcp_address_is_a_clear_refusal(conninfo: str, why: str) -> None:
    host, port, _, problem = node(conninfo)
    assert (host, port) == (None, None)
    assert why in str(problem)


def test_libpqs_default_port_follows_pgport() -> None:
    code = "from agrajag.daemon.repmgr import libpq_default_port as p; print(p())"
    env = {k: v for k, v in os.environ.items() if k != "PGPORT"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True
        ).stdout.strip()
        for e in (env, {**env, "PGPORT": "6543"})
    ]
    assert runs == ["5432", "6543"]
