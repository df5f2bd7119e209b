"""A client that writes through a proxy all the time, as an application would, and remembers
when its writes succeeded: the gap around a failover is what the application lost."""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from dataclasses import dataclass
from itertools import pairwise
from types import TracebackType

import psycopg

from tools.harness.proxies import client

TABLE = "CREATE TABLE IF NOT EXISTS client_writes (at timestamptz DEFAULT now())"
WRITE = "INSERT INTO client_writes DEFAULT VALUES"


class ClientWriter(threading.Thread):
    """One connection through the proxy at 127.0.0.1:port, a one-row INSERT every
    `interval` seconds; on an error it reconnects at once (a killed session, a crashed
    server), as a connection pool would. The table must exist."""

    def __init__(self, port: int, interval: float = 0.01) -> None:
        super().__init__(name=f"client-writer-{port}", daemon=True)
        self.port = port
        self.interval = interval
        self.stopping = threading.Event()
        self.written: list[float] = []  # time.monotonic() of each committed write, in order
        self.errors: list[str] = []

    def run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = client(self.port)
                conn.execute(WRITE)
                self.written.append(time.monotonic())
            except psycopg.Error as exc:
                self.errors.append(str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
                if conn is not None and (conn.broken or conn.closed):
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = None
            self.stopping.wait(self.interval)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def __enter__(self) -> ClientWriter:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.join(timeout=10)

    def wrote_after(self, at: float) -> float | None:
        """When the first write after `at` committed, or None."""
        written = list(self.written)
        i = bisect.bisect_right(written, at)
        return written[i] if i < len(written) else None

    def longest_gap(self, since: float, until: float) -> Gap:
        """The longest time without a committed write from the last write before `since` to
        the first one after `until`: what the application lost around a failover (a crash
        takes effect a moment after it is ordered, so the gap need not start at `since`)."""
        written = list(self.written)
        first = bisect.bisect_right(written, since)
        last = bisect.bisect_right(written, until)
        assert 0 < first <= last < len(written), f"no writes around {since}..{until}"
        window = written[first - 1 : last + 1]
        return max((Gap(a, b) for a, b in pairwise(window)), key=lambda gap: gap.seconds)


@dataclass(frozen=True, slots=True)
class Gap:
    """From the last write before a stretch without writes to the first one after it."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start
