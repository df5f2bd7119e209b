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
        password: secret                   # optional
      cut: reconnect                       # or kill; see below
      clusters: [main]                     # optional; default: every cluster followed
      params: {}                           # optional; free values for the template
      mode: 0640                           # optional; default: keep dest's mode
      timeout_s: 10                        # optional; bounds the admin connection

A database "moved" when its entry is in the old and the new file with another host or port;
the sink derives that from the two files, so no mapping of databases to clusters is needed.
After `RELOAD`, for each moved database:

- `cut: reconnect` (transaction pooling): `RECONNECT db`. Each server connection closes
  when its transaction ends; the same client goes on against the new host.
- `cut: kill` (session pooling, where a client keeps its server connection for life):
  `KILL db` then `RESUME db`. Clients of that database are disconnected and reconnect.

PAUSE is not used: in session pooling it waits for the very clients that must be cut, and
in transaction pooling RELOAD + RECONNECT already switch at the next transaction. A removed
database is dropped by RELOAD itself; the `*` fallback entry is not cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg

from agrajag.config import Problems, Section
from agrajag.sinks.base import (
    COMMON_KEYS,
    ApplyResult,
    FileSettings,
    FileSink,
    file_settings,
    section,
)

#: Runs admin-console commands in order on one connection. Tests pass a function.
Admin = Callable[[Sequence[str]], None]
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


def cut_commands(databases: Sequence[str], cut: str) -> list[str]:
    """
    >>> cut_commands(["app"], "reconnect"), cut_commands(["app"], "kill")
    (['RECONNECT app'], ['KILL app', 'RESUME app'])
    """
    if cut == "kill":
        return [command for db in databases for command in (f"KILL {db}", f"RESUME {db}")]
    return [f"RECONNECT {db}" for db in databases]


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str
    port: int
    user: str
    password: str | None = None

    @classmethod
    def from_section(cls, s: Section) -> AdminSettings:
        s.reject_unknown({"host", "port", "user", "password"})
        return cls(
            host=s.string("host", "127.0.0.1"),
            port=s.integer("port", minimum=1, maximum=65535),
            user=s.string("user"),
            password=s.optional_string("password"),
        )


def run_admin(settings: AdminSettings, timeout: float, commands: Sequence[str]) -> None:
    """Run commands on the admin console: simple query protocol only, hence ClientCursor."""
    with psycopg.connect(
        host=settings.host,
        port=settings.port,
        dbname="pgbouncer",
        user=settings.user,
        connect_timeout=max(2, round(timeout)),
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
        password=settings.password,  # psycopg leaves out parameters that are None
    ) as conn:
        for command in commands:
            conn.execute(command)


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
    def __init__(self, settings: Settings, admin: Admin | None = None) -> None:
        super().__init__(settings.files)
        self.settings = settings
        self.admin = admin or partial(run_admin, settings.admin, settings.files.timeout_s)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> PgBouncerSink:
        return cls(Settings.from_mapping(data, source))

    def check(self, staged_path: Path, text: str) -> None:
        try:
            parse_databases(text)
        except ValueError as exc:
            raise self.error("check", str(exc), staged_path) from None

    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        moved = moved_databases(old_text, new_text)
        self._run(["RELOAD"], "reload")
        self._run(cut_commands(moved, self.settings.cut), "cut")
        detail = f"{self.settings.cut}: {', '.join(moved)}" if moved else ""
        return ApplyResult(changed=True, action="reload", detail=detail)

    def rollback(self, old_text: str | None, new_text: str) -> None:
        if old_text is not None:
            self._run(["RELOAD"], "reload")

    def _run(self, commands: Sequence[str], step: str) -> None:
        if not commands:
            return
        try:
            self.admin(commands)
        except (psycopg.Error, OSError) as exc:
            admin = self.settings.admin
            where = f"admin console {admin.user}@{admin.host}:{admin.port}"
            raise self.error(step, f"{'; '.join(commands)} on {where}: {exc}") from exc
