"""The INSERT-based master check (publishing rule 2): which nodes accept a write right now.

repmgr's view can be stale, so before publishing M the daemon tries a small write on every
node of the view: exactly M must accept it, a second writable node is a suspected split
brain. The write is an upsert of the daemon's own row in `agrajag.heartbeat`, committed, so
a primary that cannot commit (synchronous replication with no sync standby) fails the check.

Every node is checked in its own thread and the whole round ends by its deadline whatever
the nodes do: `statement_timeout` does not end a COMMIT waiting for a sync standby, and a
frozen server accepts TCP connections but never answers, so the deadline is enforced on the
client side. A node's failure is an `Outcome`, never an exception, and no psycopg type
leaves this module.

The table is created on first use where the login role may create it; for a dedicated
`agrajag` role a DBA runs `conf.d/agrajag-schema.sql` once on the primary (it holds the
same DDL as `SCHEMA_DDL` plus the GRANTs the role needs).
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq
from psycopg.rows import TupleRow

from agrajag.daemon.probe_values import (
    Credentials,
    NodeCheck,
    Outcome,
    ProbeRound,
    ProbeTarget,
)
from agrajag.errors import ConfigError

__all__ = [
    "SCHEMA_DDL",
    "KeptConnections",
    "check_round",
    "classify",
]

SCHEMA_DDL = """\
CREATE SCHEMA IF NOT EXISTS agrajag;
CREATE TABLE IF NOT EXISTS agrajag.heartbeat (
    checker    text PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now()
);
"""
"""Creates the heartbeat table; idempotent, and it fails with 25006 on a standby."""

_UPSERT = (
    "INSERT INTO agrajag.heartbeat (checker) VALUES (%s)"
    " ON CONFLICT (checker) DO UPDATE SET checked_at = now()"
    " RETURNING pg_walfile_name(pg_current_wal_lsn())"
)
"""The check itself: one row per checking daemon, so the table never grows. It returns the
timeline the node writes on (the WAL file name's first 8 hex digits): repmgr's Timeline
column and pg_control lag behind a promotion until the next checkpoint."""

_READ_ONLY = "25006"
_QUERY_CANCELED = "57014"
_AUTH_SQLSTATES = ("28000", "28P01")
#: Connection exceptions, and a server shutting down or not yet accepting connections.
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
#: libpq reports a failed connection with no SQLSTATE: only its (English) text tells auth apart.
_AUTH_FAILURE = re.compile(
    r"authentication failed|no password supplied|pg_hba\.conf"
    r'|role ".*" (?:does not exist|is not permitted to log in)'
)


def classify(sqlstate: str | None, message: str) -> Outcome:
    """The outcome of a failed write, from its SQLSTATE and its message (libpq's or the server's).

    libpq gives a failed connection no SQLSTATE, only text: a server's refusal there reads
    `FATAL:`, anything else (refused, no route, connect timeout, connection lost) is transport.

    >>> classify("25006", "cannot execute INSERT in a read-only transaction")
    <Outcome.READ_ONLY: 'read_only'>
    >>> classify(None, 'port 5432 failed: FATAL:  password authentication failed for user "a"')
    <Outcome.AUTH_FAILED: 'auth_failed'>
    >>> classify(None, "port 5432 failed: Connection refused")
    <Outcome.UNREACHABLE: 'unreachable'>
    """
    if sqlstate is None:
        if _AUTH_FAILURE.search(message):
            return Outcome.AUTH_FAILED
        return Outcome.ERROR if "FATAL:" in message else Outcome.UNREACHABLE
    if sqlstate == _READ_ONLY:
        return Outcome.READ_ONLY
    if sqlstate in _AUTH_SQLSTATES:
        return Outcome.AUTH_FAILED
    if sqlstate == _QUERY_CANCELED:
        return Outcome.TIMEOUT
    if sqlstate.startswith(_UNREACHABLE_SQLSTATES):
        return Outcome.UNREACHABLE
    return Outcome.ERROR


def check_round(
    targets: Sequence[ProbeTarget],
    credentials: Credentials,
    *,
    checker: str,
    deadline_s: float = 2.0,
    connect_timeout_s: float = 2.0,
    kept: KeptConnections | None = None,
) -> ProbeRound:
    """Try the heartbeat write on every target at once; return within `deadline_s`.

    `checker` is the checking daemon's own node name, the key of its heartbeat row. A node
    that has not answered by the deadline is a `timeout`; its thread is interrupted (cancel,
    then socket shutdown if the server does not answer that either) and closes its
    connection on its own shortly after. libpq's `connect_timeout` is whole seconds, at
    least 2. With `kept`, each node's connection is kept for the next round (see
    KeptConnections). Raises `ConfigError` for invalid arguments, never for a node's failure.
    """
    _validate(targets, checker, deadline_s, connect_timeout_s)
    if kept:
        kept.retain({(target, credentials) for target in targets})
    attempt = _Attempt(
        credentials,
        checker,
        deadline_s,
        time.monotonic() + deadline_s,
        max(1, math.ceil(connect_timeout_s)),
        kept,
    )
    executor = ThreadPoolExecutor(max(1, len(targets)), thread_name_prefix="agrajag-probe")
    try:
        futures = [executor.submit(attempt.check, target) for target in targets]
        wait(futures, timeout=attempt.deadline_at - time.monotonic())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return ProbeRound(
        tuple(
            future.result() if future.done() else attempt.timed_out(target.name, deadline_s)
            for target, future in zip(targets, futures, strict=True)
        )
    )


def _validate(
    targets: Sequence[ProbeTarget], checker: str, deadline_s: float, connect_timeout_s: float
) -> None:
    for name, value in (("deadline_s", deadline_s), ("connect_timeout_s", connect_timeout_s)):
        if not 0 < value < math.inf:
            raise ConfigError(f"probe {name} must be a positive number of seconds, not {value!r}")
    if not checker:
        raise ConfigError("probe checker (this daemon's node name) must not be empty")
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"probe targets must have distinct names, got {names}")


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What every node's check in one round shares; `check` runs in a worker thread."""

    credentials: Credentials
    checker: str
    deadline_s: float
    deadline_at: float
    connect_timeout: int
    kept: KeptConnections | None

    def check(self, target: ProbeTarget) -> NodeCheck:
        started = time.monotonic()
        timeline = None
        try:
            timeline = self._write(target)
        except psycopg.Error as exc:
            outcome = classify(exc.sqlstate, str(exc))
            detail = exc.diag.message_primary or " ".join(str(exc).split())
        else:
            outcome, detail = Outcome.WRITABLE, ""
        finished = time.monotonic()
        if finished >= self.deadline_at:  # too late, even for a commit the cancel released
            return self.timed_out(target.name, finished - started)
        return NodeCheck(target.name, outcome, finished - started, detail, timeline)

    def timed_out(self, name: str, latency_s: float) -> NodeCheck:
        return NodeCheck(name, Outcome.TIMEOUT, latency_s, f"no answer within {self.deadline_s}s")

    def _write(self, target: ProbeTarget) -> int | None:
        key = (target, self.credentials)
        conn = self.kept.take(key) if self.kept else None
        if conn is not None:
            try:
                return self._upsert(key, conn)
            except psycopg.OperationalError:
                if not conn.broken or time.monotonic() >= self.deadline_at:
                    raise
                # the server ended the session since the last round (a restart): a new one
        return self._upsert(key, self._connect(target))

    def _connect(self, target: ProbeTarget) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=target.host,
            port=target.port,
            dbname=target.dbname,
            user=self.credentials.user,
            password=self.credentials.password,
            passfile=self.credentials.passfile,
            sslmode=self.credentials.sslmode,
            connect_timeout=self.connect_timeout,
            application_name="agrajag-probe",
            autocommit=True,
        )

    def _upsert(self, key: _Key, conn: psycopg.Connection[TupleRow]) -> int | None:
        """The write on `conn`; then `conn` is kept for the next round if it is idle and on
        time (an answer, even an error like a standby's 25006), else closed."""
        try:
            with _watchdog(conn, self.deadline_at, grace_s=self.connect_timeout):
                if time.monotonic() >= self.deadline_at:
                    return None  # connected after the round gave up: write nothing
                try:
                    row = conn.execute(_UPSERT, (self.checker,)).fetchone()
                except pgerrors.UndefinedTable:  # also when the schema is missing
                    with conn.transaction():
                        conn.execute(SCHEMA_DDL)
                        row = conn.execute(_UPSERT, (self.checker,)).fetchone()
                return int(str(row[0])[:8], 16) if row else None
        finally:
            idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
            if self.kept and idle and not conn.broken and time.monotonic() < self.deadline_at:
                self.kept.give(key, conn)
            else:
                conn.close()


_Key = tuple[ProbeTarget, Credentials]


class KeptConnections:
    """The check's connections, kept from one round to the next, one per node: a new one
    costs a backend start and a SCRAM exchange (milliseconds of CPU on both sides, every
    round, on the host whose repmgr read the daemon waits for). A connection is lent to one
    check at a time and given back only when that check ended cleanly on time; one the
    server closed meanwhile is replaced within the check. Each daemon holds one session per
    node (`application_name` agrajag-probe): count them in `max_connections`."""

    def __init__(self) -> None:
        self._idle: dict[_Key, psycopg.Connection[TupleRow]] = {}
        self._lock = threading.Lock()

    def take(self, key: _Key) -> psycopg.Connection[TupleRow] | None:
        with self._lock:
            return self._idle.pop(key, None)

    def give(self, key: _Key, conn: psycopg.Connection[TupleRow]) -> None:
        with self._lock:
            old, self._idle[key] = self._idle.get(key), conn
        if old is not None:
            old.close()

    def retain(self, keys: set[_Key]) -> None:
        """Close the idle connections to nodes no longer checked (or with other credentials)."""
        with self._lock:
            gone = [self._idle.pop(key) for key in list(self._idle) if key not in keys]
        for conn in gone:
            conn.close()

    def close(self) -> None:
        self.retain(set())


@contextmanager
def _watchdog(
    conn: psycopg.Connection[TupleRow], deadline_at: float, *, grace_s: float
) -> Iterator[None]:
    """Interrupt whatever `conn` is doing at `deadline_at` (time.monotonic), from a timer.

    A cancel request ends a COMMIT waiting for a sync standby (the commit stays done
    locally) and lets the server release the row lock. A frozen server answers no cancel:
    if the work has not ended `grace_s` later, shut the socket down under it. The caller
    closes `conn` only after this exits, so the timer never touches a closed descriptor
    that the process may already have reused.
    """
    done = threading.Event()

    def interrupt() -> None:
        with suppress(psycopg.Error):
            conn.cancel_safe(timeout=grace_s)
        if not done.wait(grace_s):
            with suppress(psycopg.Error, OSError), socket.socket(fileno=os.dup(conn.fileno())) as s:
                s.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(deadline_at - time.monotonic(), interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        done.set()
        timer.cancel()
        timer.join()
