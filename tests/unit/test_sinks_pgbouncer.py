"""The PgBouncer sink: which databases moved, which admin commands follow, rollback, and
the cuts a failed apply leaves for the next."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from agrajag.config import Section
from agrajag.errors import ConfigError
from agrajag.record import MasterRecord
from agrajag.sinks.base import FileSettings, SinkError
from agrajag.sinks.pgbouncer import (
    PgBouncerSink,
    Settings,
    Target,
    moved_databases,
    parse_databases,
)
from agrajag.sinks.pgbouncer_admin import AdminError, AdminSettings, Console, Row
from agrajag.sinks.pgbouncer_cuts import cut_commands, plan_cuts
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


def pools(*rows: tuple[str, int]) -> list[Row]:
    """SHOW POOLS rows: (database, idle server connections)."""
    return [{"database": db, "user": "app", "sv_idle": str(n), "sv_login": "0"} for db, n in rows]


SERVED = pools(("app", 1), ("reports", 2))


def test_how_moved_databases_are_cut_depends_on_their_server_connections() -> None:
    # After a crash the pools of `reports` hold no server connection: PgBouncer may be
    # holding them after a failed login, and no client has a session there to cut.
    rows = [*pools(("app", 1), ("reports", 0), ("mixed", 0), ("mixed", 1))]
    assert plan_cuts(["app", "reports", "mixed", "new"], rows, "reconnect") == {
        "app": "reconnect",
        "reports": "release",
        "mixed": "kill",  # one pool may be held: KILL drops them all
        "new": "reconnect",  # no pool yet: nothing held
    }
    assert plan_cuts(["app", "reports"], rows, "kill") == {"app": "kill", "reports": "release"}


class FakeConsole:
    """Records admin-console sessions. SHOW POOLS answers from `pools` in turn (the last one
    again and again); a command starting with `fail_on` fails."""

    def __init__(self, *pools: list[Row], fail_on: str | None = None) -> None:
        self.sessions: list[list[str]] = []
        self.deadlines: list[float] = []
        self.pools = list(pools or [SERVED])
        self.fail_on = fail_on

    @contextmanager
    def __call__(self, deadline: float) -> Iterator[Console]:
        self.deadlines.append(deadline)
        self.sessions.append([])
        yield self

    def run(self, command: str) -> list[Row]:
        self.sessions[-1].append(command)
        if self.fail_on and command.startswith(self.fail_on):
            raise AdminError(f"{command}: timeout, no answer from the admin console")
        if command != "SHOW POOLS":
            return []
        return self.pools.pop(0) if len(self.pools) > 1 else self.pools[0]


def master(host: str, port: int = 5432) -> MasterRecord:
    return MasterRecord("main", 1, 1, "node1", host, port, 1, "node1", "t", {})


def sink(
    tmp_path: Path,
    console: FakeConsole,
    cut: str = "reconnect",
    databases: Sequence[str] = ("app", "reports"),
) -> PgBouncerSink:
    files = FileSettings(
        name="pgbouncer",
        template=CONF_D / "pgbouncer-databases.ini.j2",
        dest=tmp_path / "databases.ini",
        clusters=frozenset({"main"}),
        params={"databases": {"main": list(databases)}},
        timeout_s=3,
    )
    admin_settings = AdminSettings("127.0.0.1", 6432, "pgbouncer_admin")
    return PgBouncerSink(Settings(files, admin_settings, cut), console)


@pytest.mark.parametrize(
    ("cut", "commands"),
    [
        ("reconnect", ["RECONNECT app", "RECONNECT reports"]),
        ("kill", ["KILL app", "RESUME app", "KILL reports", "RESUME reports"]),
    ],
)
def test_reload_then_cut_the_moved_databases(tmp_path: Path, cut: str, commands: list[str]) -> None:
    console = FakeConsole()
    bouncer = sink(tmp_path, console, cut)
    first = bouncer.apply({"main": master("10.0.0.1")})
    assert (first.action, console.sessions) == ("reload", [["RELOAD"]])
    assert "app = host=10.0.0.1 port=5432 dbname=app\n" in (tmp_path / "databases.ini").read_text()

    result = bouncer.apply({"main": master("10.0.0.2")})

    assert (result.changed, result.action) == (True, "reload")
    assert result.detail == f"{cut}: app, reports"
    assert console.sessions[1:] == [["SHOW POOLS", "RELOAD"], commands]
    assert bouncer.apply({"main": master("10.0.0.2")}).action == "unchanged"
    assert len(console.sessions) == 3


@pytest.mark.parametrize("cut", ["reconnect", "kill"])
def test_pools_that_lost_their_servers_are_released_for_the_clients_waiting(
    tmp_path: Path, cut: str
) -> None:
    lost, logging_in = pools(("app", 0), ("reports", 3)), pools(("app", 0))
    logging_in[0]["sv_login"] = "1"
    console = FakeConsole(lost, logging_in, pools(("app", 1)))
    bouncer = sink(tmp_path, console, cut)
    bouncer.apply({"main": master("10.0.0.1")})

    result = bouncer.apply({"main": master("10.0.0.2")})

    assert result.detail == f"{cut}: reports; released: app"
    assert console.sessions[-2] == ["SHOW POOLS", "RELOAD"]
    release = ["SET server_login_retry = 0", "SHOW POOLS", "SHOW POOLS", "RELOAD"]
    assert console.sessions[-1] == [*release, *cut_commands("reports", cut)]


def test_a_released_pool_nobody_waited_in_is_killed(tmp_path: Path) -> None:
    console = FakeConsole(pools(("app", 0), ("reports", 3)))
    bouncer = sink(tmp_path, console, "reconnect")
    bouncer.apply({"main": master("10.0.0.1")})

    result = bouncer.apply({"main": master("10.0.0.2")})

    assert result.detail == "kill: app; reconnect: reports"
    assert console.sessions[-1][-3:] == ["KILL app", "RESUME app", "RECONNECT reports"]


def test_a_failed_release_is_done_again_by_the_next_apply(tmp_path: Path) -> None:
    console = FakeConsole(pools(("app", 0), ("reports", 0)), fail_on="SET")
    bouncer = sink(tmp_path, console, "kill")
    bouncer.apply({"main": master("10.0.0.1")})
    with pytest.raises(SinkError, match="SET server_login_retry = 0: timeout"):
        bouncer.apply({"main": master("10.0.0.2")})
    console.fail_on = None
    console.pools = [pools(("app", 1), ("reports", 1))]

    retry = bouncer.apply({"main": master("10.0.0.2")})

    assert (retry.action, retry.detail) == ("cut", "released: app, reports")
    assert console.sessions[-1][0] == "SET server_login_retry = 0"
    assert console.sessions[-1][-1] == "RELOAD"  # pgbouncer.ini's value back


def test_every_admin_session_of_an_apply_shares_its_deadline(tmp_path: Path) -> None:
    console = FakeConsole()
    bouncer = sink(tmp_path, console)
    bouncer.apply({"main": master("10.0.0.1")})
    bouncer.apply({"main": master("10.0.0.2")})
    reload, cut = console.deadlines[1:]
    assert reload == cut
    assert reload > console.deadlines[0]


def test_fail_closed_drops_the_databases_and_cuts_nothing_itself(tmp_path: Path) -> None:
    console = FakeConsole()
    bouncer = sink(tmp_path, console)
    bouncer.apply({"main": master("10.0.0.1")})
    bouncer.apply({})
    assert "app =" not in (tmp_path / "databases.ini").read_text()
    assert console.sessions == [["RELOAD"], ["RELOAD"]]  # RELOAD drops removed databases


@pytest.mark.parametrize("fail_on", ["SHOW POOLS", "RELOAD"])
def test_a_failed_reload_restores_the_file_and_reloads_it(tmp_path: Path, fail_on: str) -> None:
    console = FakeConsole()
    bouncer = sink(tmp_path, console)
    bouncer.apply({"main": master("10.0.0.1")})
    old = (tmp_path / "databases.ini").read_bytes()
    console.fail_on = fail_on

    with pytest.raises(SinkError, match="timeout") as caught:
        bouncer.apply({"main": master("10.0.0.2")})

    assert caught.value.step == "reload"
    assert (tmp_path / "databases.ini").read_bytes() == old
    console.fail_on = None
    assert bouncer.apply({"main": master("10.0.0.1")}).action == "unchanged"  # nothing owed


@pytest.mark.parametrize("fail_on", ["RECONNECT", "KILL", "RESUME"])
def test_a_failed_cut_keeps_the_new_routing_and_the_retry_finishes_it(
    tmp_path: Path, fail_on: str
) -> None:
    cut = "reconnect" if fail_on == "RECONNECT" else "kill"
    console = FakeConsole(fail_on=fail_on)
    bouncer = sink(tmp_path, console, cut)
    bouncer.apply({"main": master("10.0.0.1")})

    with pytest.raises(SinkError, match="the next apply retries the cut") as caught:
        bouncer.apply({"main": master("10.0.0.2")})

    assert caught.value.step == "cut"
    assert "host=10.0.0.2" in (tmp_path / "databases.ini").read_text()  # not put back
    assert ["RELOAD"] not in console.sessions[2:]  # no RELOAD of an old file
    console.fail_on = None

    retry = bouncer.apply({"main": master("10.0.0.2")})

    assert (retry.changed, retry.action, retry.detail) == (True, "cut", f"{cut}: app, reports")
    assert console.sessions[-1][0] == f"{'KILL' if cut == 'kill' else 'RECONNECT'} app"
    assert bouncer.apply({"main": master("10.0.0.2")}).action == "unchanged"


def test_a_cut_owed_for_a_database_the_file_no_longer_has_is_dropped(tmp_path: Path) -> None:
    console = FakeConsole(fail_on="RECONNECT")
    bouncer = sink(tmp_path, console)
    bouncer.apply({"main": master("10.0.0.1")})
    with pytest.raises(SinkError):
        bouncer.apply({"main": master("10.0.0.2")})
    console.fail_on = None

    assert bouncer.apply({}).detail == ""  # fail-closed: RELOAD dropped them; nothing to cut
    assert console.sessions[-1] == ["RELOAD"]


def test_a_rendered_file_pgbouncer_could_not_read_is_refused(tmp_path: Path) -> None:
    console = FakeConsole()
    sink(tmp_path, console).apply({"main": master("10.0.0.1")})
    old = (tmp_path / "databases.ini").read_bytes()

    with pytest.raises(SinkError, match="line 3: not a `name = key=value") as caught:
        sink(tmp_path, console, databases=["bad name"]).apply({"main": master("10.0.0.2")})

    assert caught.value.step == "check"
    assert (tmp_path / "databases.ini").read_bytes() == old
    assert console.sessions == [["RELOAD"]]


def test_the_admin_password_comes_from_a_private_file_never_inline(tmp_path: Path) -> None:
    secret = tmp_path / "admin.password"
    secret.write_text("s3cret-admin\n")
    secret.chmod(0o600)
    admin = {"host": "127.0.0.1", "port": 6432, "user": "pgbouncer_admin"}
    settings = AdminSettings.from_section(
        Section({**admin, "password_file": str(secret)}, "watch.yaml", "sinks[1].admin.")
    )
    assert settings.password == "s3cret-admin" and "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.admin\.password: secrets are not taken"):
        AdminSettings.from_section(
            Section({**admin, "password": "x"}, "watch.yaml", "sinks[1].admin.")
        )
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by others"):
        AdminSettings.from_section(
            Section({**admin, "password_file": str(secret)}, "watch.yaml", "sinks[1].admin.")
        )
