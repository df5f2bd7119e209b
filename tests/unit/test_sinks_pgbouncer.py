"""The PgBouncer sink: which databases moved, which admin commands follow, and rollback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.base import FileSettings, SinkError
from agrajag.sinks.pgbouncer import (
    AdminSettings,
    PgBouncerSink,
    Settings,
    Target,
    moved_databases,
    parse_databases,
)
from tools.harness.shipped import CONF_D

DATABASES = """\
; comment
[databases]
app = host=10.0.0.1 port=5432 dbname=app pool_size=20
reports = host=10.0.0.1 dbname=reports
local = dbname=x
* = host=10.0.0.1
[pgbouncer]
listen_port = 6432
"""


def test_entries_are_read_with_pgbouncer_defaults() -> None:
    assert parse_databases(DATABASES) == {
        "app": Target("10.0.0.1", 5432),
        "reports": Target("10.0.0.1", 5432),
        "local": Target("", 5432),
        "*": Target("10.0.0.1", 5432),
    }
    quoted = parse_databases("[databases]\nq = host='db one' port=5433 password='it''s'\n")
    assert quoted == {"q": Target("db one", 5433)}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("app host=10.0.0.1", "not a `name = key=value"),
        ("app = host=10.0.0.1 port=x", "port 'x' is not a number"),
        ("app = host='unterminated", "cannot read"),
        ("a;b = host=h", "not a `name = key=value"),
    ],
)
def test_malformed_entries_name_the_line(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"line 3: {why}"):
        parse_databases(f"[databases]\nok = host=h\n{line}\n")


def test_moved_databases_are_those_whose_host_or_port_changed() -> None:
    new = DATABASES.replace("10.0.0.1", "10.0.0.2").replace(
        "app = host=10.0.0.2 port=5432", "app = host=10.0.0.1 port=5432"
    )
    assert moved_databases(DATABASES, new) == ["reports"]  # `*` is not cut, app stayed
    assert moved_databases(DATABASES, DATABASES.replace("port=5432", "port=5433")) == ["app"]
    assert moved_databases(DATABASES, DATABASES.replace("pool_size=20", "pool_size=5")) == []
    assert moved_databases(None, DATABASES) == []
    assert moved_databases("[databases]\napp = host=10.0.0.1\n", DATABASES) == []  # new ones
    assert moved_databases("[databases]\nbroken\n", DATABASES) == ["app", "local", "reports"]


class FakeAdmin:
    """Records admin-console batches; fails the batch that starts with `fail_on`."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, commands: Sequence[str]) -> None:
        self.batches.append(list(commands))
        if self.fail_on and commands[0].startswith(self.fail_on):
            raise psycopg.OperationalError("server closed the connection unexpectedly")


def master(host: str, port: int = 5432) -> MasterRecord:
    return MasterRecord("main", 1, 1, "node1", host, port, 1, "node1", "t", {})


def sink(
    tmp_path: Path,
    admin: FakeAdmin,
    cut: str = "reconnect",
    databases: Sequence[str] = ("app", "reports"),
) -> PgBouncerSink:
    files = FileSettings(
        name="pgbouncer",
        template=CONF_D / "pgbouncer-databases.ini.j2",
        dest=tmp_path / "databases.ini",
        clusters=frozenset({"main"}),
        params={"databases": {"main": list(databases)}},
    )
    admin_settings = AdminSettings("127.0.0.1", 6432, "pgbouncer_admin")
    return PgBouncerSink(Settings(files, admin_settings, cut), admin=admin)


@pytest.mark.parametrize(
    ("cut", "commands"),
    [
        ("reconnect", ["RECONNECT app", "RECONNECT reports"]),
        ("kill", ["KILL app", "RESUME app", "KILL reports", "RESUME reports"]),
    ],
)
def test_reload_then_cut_the_moved_databases(tmp_path: Path, cut: str, commands: list[str]) -> None:
    admin = FakeAdmin()
    bouncer = sink(tmp_path, admin, cut)
    first = bouncer.apply({"main": master("10.0.0.1")})
    assert (first.action, admin.batches) == ("reload", [["RELOAD"]])
    assert "app = host=10.0.0.1 port=5432 dbname=app\n" in (tmp_path / "databases.ini").read_text()

    result = bouncer.apply({"main": master("10.0.0.2")})

    assert (result.changed, result.action) == (True, "reload")
    assert result.detail == f"{cut}: app, reports"
    assert admin.batches[1:] == [["RELOAD"], commands]
    assert bouncer.apply({"main": master("10.0.0.2")}).action == "unchanged"
    assert len(admin.batches) == 3


def test_fail_closed_drops_the_databases_and_cuts_nothing_itself(tmp_path: Path) -> None:
    admin = FakeAdmin()
    bouncer = sink(tmp_path, admin)
    bouncer.apply({"main": master("10.0.0.1")})
    bouncer.apply({})
    assert "app =" not in (tmp_path / "databases.ini").read_text()
    assert admin.batches == [["RELOAD"], ["RELOAD"]]  # RELOAD drops removed databases


@pytest.mark.parametrize("fail_on", ["RELOAD", "RECONNECT"])
def test_failed_admin_command_restores_the_file_and_reloads_it(
    tmp_path: Path, fail_on: str
) -> None:
    admin = FakeAdmin()
    bouncer = sink(tmp_path, admin)
    bouncer.apply({"main": master("10.0.0.1")})
    old = (tmp_path / "databases.ini").read_bytes()
    admin.fail_on = fail_on

    with pytest.raises(SinkError, match="server closed the connection") as caught:
        bouncer.apply({"main": master("10.0.0.2")})

    assert caught.value.step == ("reload" if fail_on == "RELOAD" else "cut")
    assert "pgbouncer_admin@127.0.0.1:6432" in str(caught.value)
    assert (tmp_path / "databases.ini").read_bytes() == old
    assert admin.batches[-1] == ["RELOAD"]


def test_a_rendered_file_pgbouncer_could_not_read_is_refused(tmp_path: Path) -> None:
    admin = FakeAdmin()
    sink(tmp_path, admin).apply({"main": master("10.0.0.1")})
    old = (tmp_path / "databases.ini").read_bytes()

    with pytest.raises(SinkError, match="line 3: not a `name = key=value") as caught:
        sink(tmp_path, admin, databases=["bad name"]).apply({"main": master("10.0.0.2")})

    assert caught.value.step == "check"
    assert (tmp_path / "databases.ini").read_bytes() == old
    assert admin.batches == [["RELOAD"]]
