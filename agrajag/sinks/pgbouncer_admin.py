"""PgBouncer's admin console, every exchange bounded by one deadline.

libpq's `connect_timeout` bounds only the connection: a PgBouncer that stops answering after
the login (SIGSTOPped, swapping, stuck on a slow disk) would block the caller forever, and the
watcher has one loop for every sink. So a session gets a deadline: a timer shuts the socket
down when it passes, which ends whatever libpq is waiting for, and the error says "timeout".
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from agrajag.config import Section, read_secret
from agrajag.errors import AgrajagError

#: One row of a SHOW command, by column name (PgBouncer adds columns between versions).
Row = dict[str, str]


class AdminError(AgrajagError):
    """An admin command failed or PgBouncer did not answer in time; says which and why."""


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_section(cls, s: Section) -> AdminSettings:
        s.reject_unknown({"host", "port", "user", "password", "password_file", "password_env"})
        return cls(
            host=s.string("host", "127.0.0.1"),
            port=s.integer("port", minimum=1, maximum=65535),
            user=s.string("user"),
            password=read_secret(s, "password"),
        )

    def __str__(self) -> str:
        return f"admin console {self.user}@{self.host}:{self.port}"


class Console(Protocol):
    """An open admin-console session."""

    def run(self, command: str) -> list[Row]: ...


#: Opens a session that must be done by `deadline` (time.monotonic()). Tests pass a function.
OpenConsole = Callable[[float], AbstractContextManager[Console]]


class _Session:
    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
        self.conn = conn
        self.where = where
        self.expired = threading.Event()

    def run(self, command: str) -> list[Row]:
        try:
            cur = self.conn.execute(command)
            if cur.description is None:
                return []
            names = [column.name for column in cur.description]
            return [dict(zip(names, map(_text, row), strict=True)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            if self.expired.is_set():
                raise AdminError(f"{command}: timeout, no answer from the {self.where}") from None
            raise AdminError(f"{command} on the {self.where}: {exc}".strip()) from exc


def _text(value: object) -> str:
    return "" if value is None else str(value)


@contextmanager
def open_console(settings: AdminSettings, deadline: float) -> Iterator[Console]:
    """A session on the admin console that ends by `deadline`: the connection attempt is
    bounded by libpq's whole seconds (at least 2), every command by the deadline itself."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AdminError(f"timeout: no time left to reach the {settings}")
    try:
        conn = psycopg.connect(
            host=settings.host,
            port=settings.port,
            dbname="pgbouncer",
            user=settings.user,
            password=settings.password,  # psycopg leaves out parameters that are None
            connect_timeout=max(2, math.floor(remaining)),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,  # the console speaks the simple protocol only
        )
    except psycopg.Error as exc:
        detail = str(exc).strip()
        if "timeout" not in detail:
            raise AdminError(f"cannot connect to the {settings}: {detail}") from exc
        raise AdminError(f"timeout connecting to the {settings}: {detail}") from exc
    session = _Session(conn, str(settings))
    # Our own handle on the socket: shutting it down wakes libpq up, and it stays the same
    # socket even if libpq closes its descriptor first.
    sock = socket.socket(fileno=os.dup(conn.fileno()))

    def expire() -> None:
        session.expired.set()
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    timer.daemon = True
    timer.start()
    try:
        yield session
    finally:
        timer.cancel()
        timer.join()
        conn.close()
        sock.close()
