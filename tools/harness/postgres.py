"""A PostgreSQL 15 + repmgr 5.3 cluster (one primary, streaming standbys, repmgrd) on loopback,
or each node on a host of its own (`procs.Host`).

Under root every PostgreSQL and repmgr command runs as the `postgres` user, in directories
it owns. Nodes are started with pg_ctl, as repmgr itself does when a standby follows.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from tools.harness.procs import (
    LOCAL,
    Host,
    Proc,
    free_port,
    run_service,
    service_dir,
    service_env,
    signal_tree,
    wait_until,
    write_service_file,
)

BINDIR = Path("/usr/lib/postgresql/15/bin")
REPMGR = str(BINDIR / "repmgr")
#: The password of the `agrajag` role the INSERT check logs in with (scram over TCP).
CHECK_USER = "agrajag"
CHECK_PASSWORD = "agrajag-test-secret"


def hba(networks: Sequence[str]) -> str:
    """pg_hba.conf for the test: trust from `networks`, but the check user's password."""
    lines = ["local all all trust", "local replication all trust"]
    for net in networks:
        lines += [
            f"host all {CHECK_USER} {net} scram-sha-256",
            f"host all all {net} trust",
            f"host replication all {net} trust",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class PgNode:
    """One PostgreSQL instance with its repmgr.conf and, once started, its repmgrd."""

    cluster: PgCluster
    node_id: int
    port: int = field(default_factory=free_port)
    host: Host = LOCAL
    repmgrd: Proc | None = None

    @property
    def name(self) -> str:
        return f"node{self.node_id}"

    @property
    def dir(self) -> Path:
        return self.cluster.base / self.name

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def repmgr_conf(self) -> Path:
        return self.dir / "repmgr.conf"

    @property
    def conninfo(self) -> str:
        """repmgr's conninfo for the node; without `port=` (libpq's default, 5432) when the
        cluster puts each node on its own address, as repmgr's documentation writes it."""
        port = "" if self.cluster.distinct_hosts else f" port={self.port}"
        return f"host={self.host.address}{port} user=repmgr dbname=repmgr connect_timeout=2"

    def server_settings(self) -> str:
        """postgresql.conf lines that differ per node (a clone copies the primary's)."""
        return (
            f"listen_addresses = '{self.host.address}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\n"
        )

    def write_repmgr_conf(self) -> None:
        conf = self.repmgr_conf
        settings = {
            "node_id": str(self.node_id),
            "node_name": f"'{self.name}'",
            "conninfo": f"'{self.conninfo}'",
            "data_directory": f"'{self.datadir}'",
            "pg_bindir": f"'{BINDIR}'",
            "pg_ctl_options": f"'-l {self.dir / 'postgresql.log'}'",
            "failover": "automatic",
            "promote_command": f"'{REPMGR} standby promote -f {conf} --log-to-file'",
            "follow_command": (
                f"'{REPMGR} standby follow -f {conf} --log-to-file --upstream-node-id=%n'"
            ),
            "monitor_interval_secs": "1",
            "reconnect_attempts": "2",
            "reconnect_interval": "1",
            "log_level": "INFO",
            "log_file": f"'{self.dir / 'repmgrd.log'}'",
            "repmgrd_pid_file": f"'{self.dir / 'repmgrd.pid'}'",
            "priority": str(100 - self.node_id),
        }
        if self.cluster.pg_ctl_promote:
            promote = f"{BINDIR / 'pg_ctl'} -w -D {self.datadir} promote"
            settings["service_promote_command"] = f"'{promote}'"
        if self.cluster.event_command:
            command = self.cluster.event_command.format(node_dir=self.dir)
            settings["event_notification_command"] = f"'{command}'"
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        write_service_file(conf, text)

    def pg_ctl(self, *args: str, timeout: float = 60) -> str:
        argv = [str(BINDIR / "pg_ctl"), "-D", str(self.datadir), *args]
        return run_service(argv, self.dir, timeout=timeout, host=self.host)

    def start(self) -> None:
        """Start PostgreSQL as it is on disk (a stopped old primary comes back as a primary)."""
        self.pg_ctl("-l", str(self.dir / "postgresql.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self.pg_ctl("-m", mode, "-w", "stop")

    def crash(self) -> None:
        """Stop like a power cut: `pg_ctl -m immediate`."""
        self.stop("immediate")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (frozen or not), wait until they are gone,
        and clear what a restart would trip on: a killed postmaster's locks (postmaster.pid,
        its Unix socket's) stay valid while its process is a zombie nobody has reaped yet (it
        was reparented when pg_ctl exited), which a rebooted machine would not have."""
        pid = self.postmaster_pid()
        if pid and self.running():
            signal_tree(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), timeout=10, what=f"{self.name}'s postmaster to die")
        for leftover in self.dir.glob(f".s.PGSQL.{self.port}*"):
            leftover.unlink(missing_ok=True)
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"postgres" in f.read()
        except FileNotFoundError:
            return False

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: the node hangs, its port stays open."""
        pid = self.postmaster_pid()
        assert pid, f"{self.name} is not running"
        signal_tree(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.postmaster_pid()
        if pid:
            signal_tree(pid, signal.SIGCONT)

    def connect(self, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.conninfo, autocommit=True, **kwargs)  # type: ignore[arg-type]

    def sql(self, query: str) -> list[tuple[object, ...]]:
        with self.connect() as conn:
            cur = conn.execute(query)  # type: ignore[call-overload,unused-ignore]
            return cur.fetchall() if cur.description else []

    def set_config(self, name: str, value: str | None) -> None:
        """ALTER SYSTEM SET `name` (RESET for None), reload, wait until new sessions see it."""
        if value is None:
            change = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
        else:
            change = sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(name), sql.Literal(value)
            )
        with self.connect() as conn:
            conn.execute(change)
            conn.execute("SELECT pg_reload_conf()")
        query = "SELECT setting = coalesce(%s, boot_val) FROM pg_settings WHERE name = %s"

        def applied() -> bool:
            with self.connect() as conn:
                row = conn.execute(query, (value, name)).fetchone()
            return bool(row and row[0])

        wait_until(applied, timeout=10, what=f"{self.name} to apply {name}={value!r}")

    def in_recovery(self) -> bool:
        return bool(self.sql("SELECT pg_is_in_recovery()")[0][0])

    def timeline(self) -> int:
        """The timeline a primary writes on (pg_control's copy lags until the next checkpoint)."""
        walfile = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        return int(str(walfile)[:8], 16)

    def repmgr(self, *args: str, timeout: float = 120, ok: Sequence[int] = (0,)) -> str:
        argv = [REPMGR, "-f", str(self.repmgr_conf), *args]
        return run_service(argv, self.dir, timeout=timeout, host=self.host, ok=ok)

    def start_repmgrd(self) -> None:
        self.repmgrd = Proc(
            f"repmgrd-{self.name}",
            [str(BINDIR / "repmgrd"), "-f", str(self.repmgr_conf), "--daemonize=false"],
            log=self.dir / "repmgrd.stdout",
            cwd=self.dir,
            env=service_env(self.dir),
            service=True,
            host=self.host,
        )
        write_service_file(self.dir / "repmgrd.stdout", "")
        self.repmgrd.start()

    def stop_repmgrd(self) -> None:
        if self.repmgrd:
            self.repmgrd.stop()


class PgCluster:
    """A primary and `size - 1` standbys registered with repmgr, repmgrd optional."""

    def __init__(
        self,
        size: int = 3,
        event_command: str | None = None,
        pg_ctl_promote: bool = False,
        hosts: Sequence[Host] | None = None,
        witness: bool = False,
    ):
        """`event_command` is repmgr's event_notification_command; `{node_dir}` in it is
        replaced by each node's directory. `pg_ctl_promote` sets repmgr's
        service_promote_command to `pg_ctl -w promote`, as conf.d recommends.
        `hosts` puts node i on port 5432 of hosts[i - 1], with a conninfo that names no port,
        like hosts of a real cluster (`loopback_hosts`: each on its own 127.x address);
        by default every node is on 127.0.0.1, on a port of its own.
        `witness` adds a repmgr witness (`repmgr witness register`): its own PostgreSQL
        instance, node<size + 1> (on the host after the nodes'), in `witness` and not in
        `nodes`; no repmgrd runs on it."""
        count = size + (1 if witness else 0)
        if hosts is not None and len(hosts) != count:
            raise ValueError(f"{count} PostgreSQL instances need {count} hosts, not {len(hosts)}")
        self.base = service_dir("pg")
        self.event_command = event_command
        self.pg_ctl_promote = pg_ctl_promote
        self.distinct_hosts = hosts is not None
        every = [
            PgNode(self, i) if hosts is None else PgNode(self, i, port=5432, host=hosts[i - 1])
            for i in range(1, count + 1)
        ]
        self.nodes = every[:size]
        self.witness = every[size] if witness else None

    @property
    def all_nodes(self) -> list[PgNode]:
        """The data nodes and the witness, if any."""
        return self.nodes + ([self.witness] if self.witness else [])

    def node(self, name: str) -> PgNode:
        return next(n for n in self.nodes if n.name == name)

    def create(self) -> PgCluster:
        primary, *standbys = self.nodes
        for node in self.all_nodes:
            run_service(["mkdir", "-p", str(node.dir)], self.base)
            node.write_repmgr_conf()
        self._initdb(primary)
        primary.repmgr("primary", "register")
        for node in standbys:
            self.clone_standby(node, primary)
        if self.witness:
            self._initdb(self.witness)
            self.witness.repmgr(*_upstream(primary), "witness", "register")
        return self

    def clone_standby(self, node: PgNode, primary: PgNode, *, force: bool = False) -> None:
        """Clone `node` from `primary`, start and register it (`force`: over a node that was
        registered before, e.g. a former primary coming back as a standby)."""
        again = ("--force",) if force else ()
        node.repmgr(*_upstream(primary), "standby", "clone", "--fast-checkpoint", *again)
        conf = node.datadir / "postgresql.conf"
        write_service_file(conf, conf.read_text() + node.server_settings())
        node.start()
        # `standby register` refuses a standby not yet streaming (seen on a loaded machine).
        wait_until(
            functools.partial(_streaming_to, primary, node.name),
            timeout=60,
            what=f"{node.name} to stream from {primary.name}",
        )
        node.repmgr("standby", "register", "--wait-sync=30", *again)

    def _initdb(self, node: PgNode) -> None:
        """A new instance with repmgr's user and database and the check's role, started."""
        run_service(
            [
                str(BINDIR / "initdb"),
                "-D",
                str(node.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
            node.dir,
        )
        conf = node.datadir / "postgresql.conf"
        extra = "\n".join(
            [
                node.server_settings(),
                "shared_preload_libraries = 'repmgr'",
                "wal_level = replica",
                "max_wal_senders = 10",
                # A standby cloned under load must not find its start segment already recycled.
                "wal_keep_size = '256MB'",
                "max_replication_slots = 10",
                "hot_standby = on",
                "wal_log_hints = on",
                "fsync = off",
                "full_page_writes = on",
                "max_connections = 100",
                "",
            ]
        )
        write_service_file(conf, conf.read_text() + extra)
        networks = sorted({n.host.network for n in self.all_nodes})
        write_service_file(node.datadir / "pg_hba.conf", hba(networks))
        node.start()
        psql = [
            str(BINDIR / "psql"),
            "-h",
            str(node.dir),
            "-p",
            str(node.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ]
        run_service([*psql, "-c", "CREATE USER repmgr SUPERUSER REPLICATION"], self.base)
        run_service([*psql, "-c", "CREATE DATABASE repmgr OWNER repmgr"], self.base)
        run_service(
            [*psql, "-c", f"CREATE USER {CHECK_USER} PASSWORD '{CHECK_PASSWORD}'"], self.base
        )

    def start_repmgrd(self) -> None:
        for node in self.nodes:
            node.start_repmgrd()
        for node in self.nodes:
            wait_until(
                functools.partial(_logged, node.dir / "repmgrd.log", "monitoring"),
                timeout=30,
                what=f"repmgrd on {node.name} to start monitoring",
            )

    def cluster_show(self, node: PgNode, *args: str) -> str:
        """`repmgr cluster show` as seen from `node` (exit 25 with warnings is normal)."""
        return node.repmgr("cluster", "show", *args, timeout=60, ok=(0, 25))

    def writable(self) -> list[PgNode]:
        """The nodes that run and are not in recovery right now."""
        result = []
        for node in self.nodes:
            try:
                if node.running() and not node.in_recovery():
                    result.append(node)
            except psycopg.Error:
                continue
        return result

    def wait_promotion(self, old: PgNode, timeout: float = 60) -> PgNode:
        """Wait until a node other than `old` is a writable primary; return it."""
        return wait_until(
            lambda: next((n for n in self.writable() if n is not old), None),
            timeout=timeout,
            what=f"a standby to be promoted after {old.name}",
            interval=0.02,
        )

    def destroy(self) -> None:
        for node in self.all_nodes:
            node.resume()
            node.stop_repmgrd()
        for node in self.all_nodes:
            try:
                node.stop("immediate")
            except RuntimeError:
                node.kill()


def _upstream(primary: PgNode) -> list[str]:
    """repmgr's options to connect to `primary` (clone, witness register)."""
    return ["-h", primary.host.address, "-p", str(primary.port), "-U", "repmgr", "-d", "repmgr"]


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _streaming_to(primary: PgNode, standby: str) -> bool:
    rows = primary.sql(
        f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{standby}'"
        " AND state = 'streaming'"
    )
    return bool(rows)


def _logged(path: Path, text: str) -> bool:
    return text in _read(path)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
