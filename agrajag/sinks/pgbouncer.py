"""The PgBouncer sink: rewrite the `[databases]` file, RELOAD, cut connections that moved.

YAML (one item of `sinks:` in watch.yaml)::

    - type: pgbouncer
      name: pgbouncer
      template: /etc/agrajag/pgbouncer-databases.ini.j2  # renders `[databases]` entries
      dest: /etc/pgbouncer/databases.ini   # %include'd by pgbouncer.ini by its ABSOLUTE path
      admin:                               # the admin console (an `admin_users` user)
        host: 127.0.0.1
        port: 6432
        user: pgbouncer_admin
        password_file: /etc/agrajag/pgbouncer-admin.password  # optional (mode 0600/0640),
                                           # or password_env: VAR; never inline
      cut: reconnect                       # or kill; see below
      clusters: [main]                     # optional; default: every cluster followed
      params: {}                           # optional; free values for the template
      mode: 0640                           # optional; default: keep dest's mode
      timeout_s: 10                        # optional; bounds all admin exchanges of an apply

A database "moved" when its entry is in the old and the new file with another host or port;
the sink derives that from the two files, so no mapping of databases to clusters is needed.
Before `RELOAD` it reads `SHOW POOLS`; after it, for each moved database:

- `cut: reconnect` (transaction pooling): `RECONNECT db`. Each server connection closes
  when its transaction ends; the same client goes on against the new host.
- `cut: kill` (session pooling, where a client keeps its server connection for life):
  `KILL db` then `RESUME db`. Clients of that database are disconnected and reconnect.
- either way, a moved database none of whose pools holds a server connection any more (the
  old primary crashed or shut down) is released instead: PgBouncer may be holding that
  pool after a failed login, for `server_login_retry` (15 s by default). The sink sets
  `server_login_retry = 0` until the logins for the waiting clients are done (milliseconds;
  those clients go on, without an error), then RELOADs pgbouncer.ini's value back; a pool
  still without a server connection (nobody was waiting) gets `KILL db` + `RESUME db`, as
  does a database of which only some pools lost theirs.
  See `pgbouncer_cuts` for what was measured.

PAUSE is not used: in session pooling it waits for the very clients that must be cut, and
in transaction pooling RELOAD + RECONNECT already switch at the next transaction. A removed
database (a cluster with no master any more: fail-closed, or its record withdrawn) is dropped
by RELOAD itself, which disconnects its clients ("database removed", verified on 1.18); the
`*` fallback entry is not cut.

Once RELOAD has moved the routing, a failed cut does not put the old file back (that would
route to the old primary again): the error says so, and the next apply finishes the cut.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from agrajag.config import Problems
from agrajag.record import MasterRecord
from agrajag.sinks.base import (
    COMMON_KEYS,
    ApplyResult,
    FileSettings,
    FileSink,
    file_settings,
    section,
)
from agrajag.sinks.pgbouncer_admin import (
    AdminError,
    AdminSettings,
    Console,
    OpenConsole,
    open_console,
)
from agrajag.sinks.pgbouncer_cuts import (
    RELEASE_WAIT_S,
    cut_commands,
    describe_cuts,
    plan_cuts,
    release,
)

CUT_MODES = ("reconnect", "kill")

_ENTRY = re.compile(r"^(\S+?)\s*=\s*(.*)$")
_PARAM = re.compile(r"\s*(\w+)\s*=\s*('(?:[^']|'')*'|[^\s']+)")
_DB_NAME = re.compile(r"^(\*|[A-Za-z0-9_.-]+)$")


@dataclass(frozen=True, slots=True)
class Target:
    """Where PgBouncer sends a database: host (empty: its Unix socket) and port."""

    host: str
    port: int


def parse_databases(text: str) -> dict[str, Target]:
    """The entries of the `[databases]` section; ValueError naming the line when malformed.

    >>> parse_databases("[databases]\\napp = host=10.0.0.2 port=5433 dbname=app\\n")
    {'app': Target(host='10.0.0.2', port=5433)}
    """
    databases: dict[str, Target] = {}
    section = ""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith((";", "#", "%")):
            continue
        if line.startswith("["):
            section = line.strip("[] ").lower()
            continue
        if section != "databases":
            continue
        entry = _ENTRY.match(line)
        if not entry or not _DB_NAME.match(entry[1]):
            raise ValueError(f"line {lineno}: not a `name = key=value ...` entry: {line!r}")
        databases[entry[1]] = _target(entry[2], lineno)
    return databases


def _target(connstr: str, lineno: int) -> Target:
    params: dict[str, str] = {}
    rest = connstr
    while rest.strip():
        match = _PARAM.match(rest)
        if not match:
            raise ValueError(f"line {lineno}: cannot read {rest.strip()!r}")
        params[match[1]] = match[2].strip("'").replace("''", "'")
        rest = rest[match.end() :]
    port = params.get("port", "5432")
    if not port.isdigit():
        raise ValueError(f"line {lineno}: port {port!r} is not a number")
    return Target(params.get("host", ""), int(port))


def moved_databases(old_text: str | None, new_text: str) -> list[str]:
    """Databases in both files whose target changed, sorted (the `*` fallback excluded).
    An old file the sink cannot read (edited by hand?) counts as every database moved."""
    new = parse_databases(new_text)
    if old_text is None:
        return []
    try:
        old = parse_databases(old_text)
    except ValueError:
        return sorted(db for db in new if db != "*")
    return sorted(db for db in old.keys() & new.keys() if db != "*" and old[db] != new[db])


@dataclass(frozen=True, slots=True)
class Settings:
    files: FileSettings
    admin: AdminSettings
    cut: str = "reconnect"

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> Settings:
        s = section(data, source)
        p = Problems()
        p.read(lambda: s.reject_unknown({*COMMON_KEYS, "template", "admin", "cut"}))
        settings = cls(
            files=p.read(lambda: file_settings(s, "template")),
            admin=p.read(lambda: AdminSettings.from_section(s.section("admin"))),
            cut=p.read(lambda: s.choice("cut", CUT_MODES, "reconnect")),
        )
        p.raise_any()
        return settings


class PgBouncerSink(FileSink):
    def __init__(self, settings: Settings, console: OpenConsole | None = None) -> None:
        super().__init__(settings.files)
        self.settings = settings
        self.open_console = console or partial(open_console, settings.admin)
        self._deadline = 0.0
        #: Cuts still owed after a RELOAD that took effect: {database: how}.
        self._pending: dict[str, str] = {}
        #: The databases of the file PgBouncer was last told to RELOAD.
        self._routed: set[str] = set()

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> PgBouncerSink:
        return cls(Settings.from_mapping(data, source))

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult:
        """The file pipeline (RELOAD included), then the cuts owed, this apply's and any a
        failed apply left; `timeout_s` bounds all admin exchanges together."""
        self._deadline = time.monotonic() + self.files.timeout_s
        result = super().apply(records)
        cuts = {db: how for db, how in self._pending.items() if db in self._routed}
        self._pending = dict(cuts)
        if not cuts:
            return result
        with self._console("cut") as console:
            released = sorted(db for db, how in cuts.items() if how == "release")
            if released:
                wait_s = min(RELEASE_WAIT_S, self._deadline - time.monotonic())
                held = release(console, released, wait_s)
                cuts.update((db, "kill" if db in held else "released") for db in released)
            for db, how in sorted(cuts.items()):
                for command in cut_commands(db, how):
                    console.run(command)
                del self._pending[db]
        action = result.action if result.changed else "cut"
        return ApplyResult(changed=True, action=action, detail=describe_cuts(cuts))

    def check(self, staged_path: Path, text: str) -> None:
        try:
            parse_databases(text)
        except ValueError as exc:
            raise self.error("check", str(exc), staged_path) from None

    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        moved = moved_databases(old_text, new_text)
        with self._console("reload") as console:
            pools = console.run("SHOW POOLS") if moved else []
            console.run("RELOAD")
        self._routed = set(parse_databases(new_text))
        self._pending.update(plan_cuts(moved, pools, self.settings.cut))
        return ApplyResult(changed=True, action="reload")

    def rollback(self, old_text: str | None, new_text: str) -> None:
        if old_text is not None:
            with self._console("reload") as console:
                console.run("RELOAD")
            self._routed = set(parse_databases(old_text))

    @contextmanager
    def _console(self, step: str) -> Iterator[Console]:
        """An admin session ending by this apply's deadline; its failures as SinkError. A
        failed cut leaves the new file in place, and says so."""
        try:
            with self.open_console(self._deadline) as console:
                yield console
        except AdminError as exc:
            detail = str(exc)
            if step == "cut":
                detail += "; routing already follows the new file, the next apply retries the cut"
            raise self.error(step, detail) from exc
