"""Record what the system does during a campaign, from the observer host: each PostgreSQL's
role and timeline, every master version a DataWatch sees, the watchers' acknowledgements, each
proxy config as it changes (checked), and every agrajag process that ends."""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from kazoo.client import KazooClient
from kazoo.protocol.states import ZnodeStat

from agrajag.record import MasterRecord, RecordError
from agrajag.zookeeper_settings import Role
from tools.campaign.history import AckSample, ConfigSample, Exit, PgSample, Seen
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgNode
from tools.harness.procs import Proc
from tools.harness.proxies import HAPROXY
from tools.harness.reader import RegistryReader
from tools.harness.system import System

_DATABASE_LINE = re.compile(r"^\S+ = host=\S+ port=\d+ dbname=\S+$")


def pg_sample(node: PgNode) -> PgSample:
    """What `node` says about itself now (`down` when it does not answer in 2 s)."""
    try:
        with psycopg.connect(node.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM clock_timestamp())::float8, pg_is_in_recovery(),"
                " CASE WHEN pg_is_in_recovery() THEN NULL"
                " ELSE pg_walfile_name(pg_current_wal_lsn()) END"
            ).fetchone()
    except psycopg.Error:
        return PgSample(time.time(), node.name, "down")
    assert row is not None
    if row[1]:
        return PgSample(float(str(row[0])), node.name, "standby")
    return PgSample(float(str(row[0])), node.name, "primary", int(str(row[2])[:8], 16))


def check_config(sink: str, text: str) -> tuple[bool, str]:
    """Whether a proxy would accept this config: `haproxy -c`, or PgBouncer's database lines."""
    if sink == "haproxy":
        with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
            f.write(text)
            f.flush()
            done = subprocess.run(
                [HAPROXY, "-c", "-q", "-f", f.name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        return done.returncode == 0, done.stderr.strip()[-300:]
    lines = [ln.strip() for ln in text.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith(";") and ln != "[databases]"]
    bad = [ln for ln in body if not _DATABASE_LINE.match(ln)]
    return ("[databases]" in lines and not bad), "; ".join(bad)


class Recorder:
    """Samplers on threads of their own; `stop()` joins them. Histories are plain lists."""

    def __init__(self, system: System, expected_exits: set[str]) -> None:
        self.system = system
        self.expected_exits = expected_exits
        self.stop_event = threading.Event()
        self.pg: list[PgSample] = []
        self.seen: list[Seen] = []
        self.acks: list[AckSample] = []
        self.configs: list[ConfigSample] = []
        self.exits: list[Exit] = []
        self._ended: set[int] = set()
        self._last_config: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()
        self.reader = RegistryReader(system.zk.hosts)
        self.watch_client = KazooClient(
            hosts=system.zk.hosts, timeout=10, auth_data=kazoo_auth(Role.WATCHER)
        )
        self.threads = [
            *(self._every(0.2, self._sample_pg(n)) for n in system.cluster.nodes),
            self._every(0.25, self._sample_acks),
            self._every(0.1, self._sample_configs),
            self._every(0.2, self.sample_exits),
        ]

    def _every(self, interval: float, fn: Callable[[], object]) -> threading.Thread:
        def loop() -> None:
            while not self.stop_event.is_set():
                fn()
                self.stop_event.wait(interval)

        return threading.Thread(target=loop, daemon=True)

    def start(self) -> Recorder:
        self.watch_client.start(timeout=30)
        self.watch_client.DataWatch(f"{self.reader.base}/master", self._on_master)
        for thread in self.threads:
            thread.start()
        return self

    def _on_master(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        if data is None:
            return
        try:
            record = MasterRecord.from_json(data, source="master")
        except RecordError:
            return
        self.seen.append(Seen(time.time(), record.epoch, record.node))

    def _sample_pg(self, node: PgNode) -> Callable[[], None]:
        return lambda: self.pg.append(pg_sample(node))

    def _sample_acks(self) -> None:
        try:
            acks = self.reader.acks()
        except Exception:  # the observer's own session may be reconnecting: no sample
            return
        at = time.time()
        self.acks += [AckSample(at, app, acks.get(app)) for app in self.system.apps]

    def _sample_configs(self) -> None:
        for app in self.system.apps.values():
            for sink, path in (
                ("haproxy", app.haproxy.config),
                ("pgbouncer", app.pgbouncer.databases),
            ):
                self._sample_config(app.name, sink, path)

    def _sample_config(self, app: str, sink: str, path: Path) -> None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if self._last_config.get((app, sink)) == text:
            return
        self._last_config[(app, sink)] = text
        at = time.time()
        valid, detail = check_config(sink, text)
        self.configs.append(ConfigSample(at, app, sink, text, valid, detail))

    def agrajag_procs(self) -> list[Proc]:
        daemons = [d.proc for d in self.system.daemons.values()]
        return daemons + [a.watcher.proc for a in self.system.apps.values()]

    def sample_exits(self) -> list[Proc]:
        """Record every agrajag process that ended since the last look; the ended ones."""
        ended = []
        with self._lock:
            for proc in self.agrajag_procs():
                if proc.popen is None or proc.alive():
                    continue
                ended.append(proc)
                if proc.pid in self._ended:
                    continue
                self._ended.add(proc.pid)
                expected = proc.name in self.expected_exits
                self.exits.append(Exit(time.time(), proc.name, proc.popen.returncode, expected))
        return ended

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.watch_client.stop()
        self.watch_client.close()
        self.reader.close()
