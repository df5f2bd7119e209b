"""Applications for the demo and the benchmarks: clients writing through a proxy."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg

#: A row per write; the table must exist on the primary (and so on its standbys).
TABLE = "CREATE TABLE agrajag_bench_writes (node text, at timestamptz DEFAULT now())"
WRITE = "INSERT INTO agrajag_bench_writes (node) VALUES (%s) RETURNING inet_server_port()"
CLIENT_INTERVAL_S = 0.01


class Client(threading.Thread):
    """Writes one row every CLIENT_INTERVAL_S through a proxy, reconnecting after errors."""

    def __init__(self, proxy: str, port: int, connect_timeout: int) -> None:
        super().__init__(name=f"client-{proxy}-{connect_timeout}s", daemon=True)
        self.key = f"{proxy}/{connect_timeout}s"
        self.port = port
        self.connect_timeout = connect_timeout
        self.stopping = threading.Event()
        self.attempts: list[tuple[float, float, int | None, str]] = []

    def run(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(
                        host="127.0.0.1",
                        port=self.port,
                        dbname="repmgr",
                        user="repmgr",
                        connect_timeout=self.connect_timeout,
                        autocommit=True,
                        prepare_threshold=None,  # works through transaction pooling
                        application_name=self.name,
                    )
                row = conn.execute(WRITE, (self.key,)).fetchone()
                self.attempts.append((start, time.monotonic(), int(row[0]) if row else None, ""))
            except psycopg.Error as exc:
                step = "write" if conn is not None else "connect"
                self.attempts.append(
                    (start, time.monotonic(), None, f"{step}: {type(exc).__name__}")
                )
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
            self.stopping.wait(CLIENT_INTERVAL_S)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def wrote_to(self, port: int, after: float = 0.0) -> bool:
        return any(p == port and end > after for _, end, p, _ in self.attempts[-50:])

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)

    def acknowledged(self) -> int:
        return sum(1 for _, _, port, _ in self.attempts if port is not None)
