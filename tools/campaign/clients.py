"""Clients on the app hosts writing through HAProxy and PgBouncer the whole campaign long,
recording every write: acknowledged (by which node, on which timeline) or failed."""

from __future__ import annotations

import threading
import time

import psycopg

from tools.campaign.history import Write
from tools.harness.netns import Topology
from tools.harness.proxies import client
from tools.harness.system import AppHost

TABLE = "campaign_writes"
SCHEMA = f"CREATE TABLE IF NOT EXISTS {TABLE} (client text, seq bigint, PRIMARY KEY (client, seq))"
INSERT = (
    f"INSERT INTO {TABLE} (client, seq) VALUES (%s, %s) "
    "RETURNING host(inet_server_addr()), pg_walfile_name(pg_current_wal_lsn())"
)


class Writer(threading.Thread):
    """One client on `app`, writing one row at a time through the proxy on `port`, on one
    connection it opens again whenever a write fails."""

    def __init__(
        self,
        topology: Topology,
        app: AppHost,
        proxy: str,
        port: int,
        nodes: dict[str, str],
        stop: threading.Event,
        pause_s: float = 0.05,
    ) -> None:
        super().__init__(name=f"writer-{app.name}-{proxy}", daemon=True)
        self.topology = topology
        self.app = app
        self.port = port
        self.client = f"{app.name}-{proxy}"
        self.nodes = nodes  # node name by address
        self.stop_event = stop
        self.pause_s = pause_s
        self.writes: list[Write] = []

    def run(self) -> None:
        with self.topology.entered(self.app.name):
            conn: psycopg.Connection[tuple[object, ...]] | None = None
            seq = 0
            while not self.stop_event.is_set():
                seq += 1
                try:
                    if conn is None or conn.closed:
                        conn = client(self.port, self.app.address, timeout=2)
                    row = conn.execute(INSERT, (self.client, seq)).fetchone()
                    assert row is not None
                    node = self.nodes.get(str(row[0]), str(row[0]))
                    timeline = int(str(row[1])[:8], 16)
                    self.writes.append(Write(time.time(), self.client, seq, True, node, timeline))
                except psycopg.Error as exc:
                    error = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
                    self.writes.append(Write(time.time(), self.client, seq, False, error=error))
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.stop_event.wait(0.2)
                self.stop_event.wait(self.pause_s)
            if conn is not None:
                conn.close()
