"""What a move does to PgBouncer's pools: which to cut, which to release, and the commands.

Why a release. After a failed server login PgBouncer holds the pool for `server_login_retry`
(15 s by default): no new server connection whatever the file says, and a new client is
refused ("server login has been failing"). After a crash or a clean shutdown of the primary
its first login there fails, so without more, clients waited ~15 s after every failover.
Measured with PgBouncer 1.18: RELOAD, RECONNECT and PAUSE/RESUME leave the hold in place.
Two things end it: KILL (the pools are dropped: their clients are disconnected), and
`server_login_retry` lowered for a moment: at its next loop PgBouncer logs in for the
clients waiting, and a login that succeeds lifts the hold, so they go on without an error.
`server_login_retry` is global: for those milliseconds any other held pool with waiting
clients may retry its login once too; RELOAD then puts pgbouncer.ini's value back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from agrajag.sinks.base import wait_for
from agrajag.sinks.pgbouncer_admin import Console, Row

#: SHOW POOLS columns that count server connections a pool can use (not those logging in).
SERVER_COLUMNS = ("sv_active", "sv_idle", "sv_used", "sv_tested")
#: How long a release waits for the logins it started; a live primary answers in ms.
RELEASE_WAIT_S = 1.0


def _count(row: Row, *columns: str) -> int:
    return sum(int(row.get(column) or 0) for column in columns)


def without_servers(databases: Iterable[str], pools: Sequence[Row]) -> set[str]:
    """The databases with a pool (SHOW POOLS rows) that holds no server connection.

    >>> pools = [{"database": "a", "sv_idle": "1", "sv_active": "0"},
    ...          {"database": "b", "sv_idle": "0", "sv_active": "0", "sv_login": "1"}]
    >>> sorted(without_servers(["a", "b", "c"], pools))
    ['b']
    """
    wanted = set(databases)
    return {
        row["database"]
        for row in pools
        if row["database"] in wanted and not _count(row, *SERVER_COLUMNS)
    }


def plan_cuts(moved: Sequence[str], pools: Sequence[Row], cut: str) -> dict[str, str]:
    """How each moved database is cut, from SHOW POOLS before the RELOAD: `release` when
    none of its pools holds a server connection any more (they may be held after a failed
    login, and no client has a session there to cut); `kill` when only some do (one may be
    held, and KILL drops them all); else `cut` (`reconnect` or `kill`).

    >>> plan_cuts(["a", "b", "c", "d"], [{"database": "a", "sv_idle": "2"},
    ...     {"database": "b", "sv_idle": "0"}, {"database": "c", "sv_idle": "0"},
    ...     {"database": "c", "sv_active": "1"}], "reconnect")
    {'a': 'reconnect', 'b': 'release', 'c': 'kill', 'd': 'reconnect'}
    """
    held = without_servers(moved, pools)
    served = {row["database"] for row in pools if _count(row, *SERVER_COLUMNS)}
    return {db: cut if db not in held else "kill" if db in served else "release" for db in moved}


def release(console: Console, databases: Sequence[str], wait_s: float) -> set[str]:
    """Lift a failed-login hold on the pools of `databases`: `server_login_retry = 0` until
    the logins PgBouncer starts for their waiting clients are done (at most `wait_s`), then
    RELOAD puts pgbouncer.ini's value back. Returns the databases with a pool still without
    a server connection (no client was waiting there): only KILL ends their hold."""

    def settled() -> list[Row] | None:
        pools = console.run("SHOW POOLS")
        wanted = set(databases)
        busy = any(row["database"] in wanted and _count(row, "sv_login") for row in pools)
        return None if busy else pools

    console.run("SET server_login_retry = 0")
    pools = wait_for(settled, wait_s, interval=0.005) or console.run("SHOW POOLS")
    console.run("RELOAD")
    return without_servers(databases, pools)


def cut_commands(db: str, how: str) -> list[str]:
    """
    >>> cut_commands("app", "reconnect"), cut_commands("app", "kill")
    (['RECONNECT app'], ['KILL app', 'RESUME app'])
    >>> cut_commands("app", "released")
    []
    """
    commands = {"kill": [f"KILL {db}", f"RESUME {db}"], "reconnect": [f"RECONNECT {db}"]}
    return commands.get(how, [])


def describe_cuts(cuts: Mapping[str, str]) -> str:
    """
    >>> describe_cuts({"b": "kill", "a": "reconnect", "c": "kill"})
    'kill: b, c; reconnect: a'
    """
    return "; ".join(
        f"{how}: {', '.join(sorted(db for db, h in cuts.items() if h == how))}"
        for how in sorted(set(cuts.values()))
    )
