"""HAProxy 2.6 (master-worker, admin and master sockets) and PgBouncer 1.18 on 127.0.0.1, or on
a host of their own (`procs.Host`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from agrajag.sinks.haproxy import unix_command
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import (
    LOCAL,
    Host,
    Proc,
    free_port,
    listening,
    service_dir,
    service_env,
    wait_until,
    write_service_file,
)
from tools.harness.shipped import CONF_D

#: The shipped templates the sinks' tests and benchmark render with these proxies' ports.
HAPROXY = "/usr/sbin/haproxy"
PGBOUNCER = "/usr/sbin/pgbouncer"
PGBOUNCER_ADMIN = "pgbadmin"


def client(
    port: int, address: str = LOCAL.address, timeout: int = 3
) -> psycopg.Connection[tuple[object, ...]]:
    """A client of the `repmgr` database through a proxy (or a node) at address:port.

    No prepared statements, so the same client also works through transaction pooling.
    """
    return psycopg.connect(
        host=address,
        port=port,
        dbname="repmgr",
        user="repmgr",
        connect_timeout=timeout,
        autocommit=True,
        prepare_threshold=None,
    )


def server_of(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[str, int, bool]:
    """The address and port of the PostgreSQL server behind `conn`, and whether it is in
    recovery (nodes on hosts of their own all listen on port 5432)."""
    query = "SELECT host(inet_server_addr()), inet_server_port(), pg_is_in_recovery()"
    row = conn.execute(query).fetchone()
    assert row is not None
    return str(row[0]), int(str(row[1])), bool(row[2])


def served_by(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, bool]:
    """The port of the PostgreSQL server behind `conn`, and whether it is in recovery."""
    _, port, in_recovery = server_of(conn)
    return port, in_recovery


def lands_on(address: str, port: int, node: PgNode) -> bool:
    """A new client of the proxy at address:port lands on `node`, a writable primary."""
    with client(port, address, timeout=2) as conn:
        return server_of(conn) == (node.host.address, node.port, False)


def writes_through(port: int) -> int:
    """Write through a proxy; the port of the PostgreSQL server that took the write."""
    with client(port) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS through_proxy (at timestamptz)")
        conn.execute("INSERT INTO through_proxy VALUES (now())")
        server_port, in_recovery = served_by(conn)
    assert not in_recovery
    return server_port


def promote_by_hand(cluster: PgCluster, node: PgNode) -> None:
    """Promote `node` while the old primary keeps running: two writable nodes, so a client
    that leaves the old one was moved by a proxy, not by a crash. repmgrd is stopped first."""
    for each in cluster.nodes:
        each.stop_repmgrd()
    node.pg_ctl("promote", "-w")
    wait_until(lambda: not node.in_recovery(), timeout=30, what=f"{node.name} to take writes")


def switch_over_by_hand(cluster: PgCluster, old: PgNode, new: PgNode) -> None:
    """A planned switchover as `repmgr standby switchover` runs it, without its ssh: the
    primary is shut down cleanly (`pg_ctl -m fast`, repmgr's default), then `new` promoted.
    Clients' logins to the primary fail while it shuts down. repmgrd is stopped first."""
    for each in cluster.nodes:
        each.stop_repmgrd()
    old.stop("fast")
    promote_by_hand(cluster, new)


class HAProxy:
    """HAProxy in master-worker mode; the config file is whatever the test (or a sink) writes.
    It runs on `host` and listens on its address."""

    def __init__(self, host: Host = LOCAL) -> None:
        self.host = host
        self.dir = service_dir("haproxy")
        self.port = free_port()
        self.config = self.dir / "haproxy.cfg"
        self.stats_socket = self.dir / "admin.sock"
        self.master_socket = self.dir / "master.sock"
        self.proc: Proc | None = None

    def global_section(self) -> str:
        return (
            "global\n"
            f"    stats socket {self.stats_socket} mode 600 level admin expose-fd listeners\n"
            f"    server-state-file {self.dir / 'server-state'}\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 2s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "    load-server-state-from-file global\n"
        )

    def write_config(self, primary_port: int) -> None:
        """A config routing :port to one PostgreSQL server, as the smoke test needs."""
        self.config.write_text(
            self.global_section()
            + f"listen postgres\n    bind {self.host.address}:{self.port}\n"
            + f"    server primary 127.0.0.1:{primary_port} check inter 500ms\n"
        )

    def sink_section(self, template: Path = CONF_D / "haproxy.cfg.j2") -> dict[str, object]:
        """The watch.yaml section of an HAProxy sink writing this proxy's config file: one
        cluster `main` listening on `self.port`."""
        return {
            "name": "haproxy",
            "template": str(template),
            "dest": str(self.config),
            "stats_socket": str(self.stats_socket),
            "master_socket": str(self.master_socket),
            "clusters": ["main"],
            "params": {
                "stats_socket": str(self.stats_socket),
                "server_state_file": str(self.dir / "server-state"),
                "bind": self.host.address,
                "ports": {"main": self.port},
            },
        }

    def start(self) -> HAProxy:
        argv = [HAPROXY, "-W", "-S", str(self.master_socket), "-f", str(self.config)]
        log = self.dir / "haproxy.log"
        self.proc = Proc("haproxy", argv, log=log, cwd=self.dir, host=self.host).start()
        wait_until(
            lambda: listening(self.port, self.host.address), timeout=10, what="HAProxy to listen"
        )
        wait_until(
            lambda: "worker" in self.master("show proc"), timeout=10, what="HAProxy's master"
        )
        return self

    def runtime(self, command: str) -> str:
        return unix_command(self.stats_socket, command, timeout=5.0)

    def server_states(self) -> list[dict[str, str]]:
        """`show servers state` as one dict per server, keyed by the header's column names."""
        lines = self.runtime("show servers state").splitlines()
        header = lines[1].lstrip("# ").split()
        return [dict(zip(header, line.split(), strict=False)) for line in lines[2:] if line.strip()]

    def routed_port(self) -> int | None:
        """Where the only server sends new clients, from the runtime API (a client probe
        would first wait out HAProxy's view of a dead primary); None while it is down."""
        (state,) = self.server_states()
        return int(state["srv_port"]) if state["srv_op_state"] == "2" else None

    def master(self, command: str) -> str:
        return unix_command(self.master_socket, command, timeout=5.0)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


class PgBouncer:
    """PgBouncer with an admin console; `[databases]` comes from an %include file tests rewrite."""

    def __init__(
        self, pool_mode: str = "transaction", *, fast_connect: bool = True, host: Host = LOCAL
    ) -> None:
        """`fast_connect`: server_connect_timeout = 2 (default 15) for tests whose servers
        are fake; off, every setting that bears on failovers keeps PgBouncer's default.
        It runs on `host` and listens on its address."""
        self.host = host
        self.dir = service_dir("pgbouncer")
        self.port = free_port()
        self.ini = self.dir / "pgbouncer.ini"
        self.databases = self.dir / "databases.ini"
        self.pool_mode = pool_mode
        self.fast_connect = fast_connect
        self.proc: Proc | None = None

    def write_config(self, databases: str) -> None:
        write_service_file(self.databases, f"[databases]\n{databases}\n")
        write_service_file(self.dir / "userlist.txt", f'"{PGBOUNCER_ADMIN}" ""\n"repmgr" ""\n')
        write_service_file(
            self.ini,
            f"%include {self.databases}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host.address}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"admin_users = {PGBOUNCER_ADMIN}\n"
            f"pool_mode = {self.pool_mode}\n"
            + ("server_connect_timeout = 2\n" if self.fast_connect else "")
            + "ignore_startup_parameters = extra_float_digits\n",
        )

    def sink_section(self, cut: str) -> dict[str, object]:
        """The watch.yaml section of a PgBouncer sink writing this bouncer's %include file:
        database `repmgr` follows cluster `main`."""
        return {
            "name": "pgbouncer",
            "template": str(CONF_D / "pgbouncer-databases.ini.j2"),
            "dest": str(self.databases),
            "admin": {"host": self.host.address, "port": self.port, "user": PGBOUNCER_ADMIN},
            "cut": cut,
            "clusters": ["main"],
            "params": {"databases": {"main": ["repmgr"]}},
        }

    def start(self) -> PgBouncer:
        write_service_file(self.dir / "pgbouncer.log", "")
        self.proc = Proc(
            "pgbouncer",
            [PGBOUNCER, str(self.ini)],
            log=self.dir / "pgbouncer.log",
            cwd=self.dir,
            env=service_env(self.dir),
            service=True,
            host=self.host,
        ).start()
        wait_until(
            lambda: listening(self.port, self.host.address), timeout=10, what="PgBouncer to listen"
        )
        return self

    def admin(self, command: str) -> list[tuple[object, ...]]:
        """Run one admin-console command (simple query protocol only)."""
        with psycopg.connect(
            host=self.host.address,
            port=self.port,
            dbname="pgbouncer",
            user=PGBOUNCER_ADMIN,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            cur = conn.execute(command)  # type: ignore[call-overload,unused-ignore]
            return cur.fetchall() if cur.description else []

    def route(self, database: str) -> int | None:
        """The port PgBouncer sends `database` to now (SHOW DATABASES), None if it has none."""
        rows = self.admin("SHOW DATABASES")  # name, host, port, ...
        return next((int(str(row[2])) for row in rows if row[0] == database), None)

    def freeze(self) -> None:
        """SIGSTOP: its port stays open and the kernel accepts connections, nobody answers."""
        assert self.proc is not None
        self.proc.freeze()

    def resume(self) -> None:
        if self.proc:
            self.proc.resume()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


class BouncerConsole:
    """One kept admin-console connection, cheap enough to poll where PgBouncer routes."""

    def __init__(self, bouncer: PgBouncer) -> None:
        self.bouncer = bouncer
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def port(self, database: str = "repmgr") -> int | None:
        """The port PgBouncer sends `database` to (SHOW DATABASES); None: not there."""
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                host=self.bouncer.host.address,
                port=self.bouncer.port,
                dbname="pgbouncer",
                user=PGBOUNCER_ADMIN,
                autocommit=True,
                cursor_factory=psycopg.ClientCursor,
            )
        cur = self.conn.execute("SHOW DATABASES")
        names = [c.name for c in cur.description or []]
        for row in cur.fetchall():
            entry = dict(zip(names, row, strict=True))
            if entry["name"] == database:
                return int(entry["port"])
        return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
