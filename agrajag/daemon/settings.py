"""`agrajag daemon`'s YAML configuration (example: conf.d/daemon.example.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from agrajag.config import MetricsSettings, Problems, Section, load_yaml, read_secret
from agrajag.daemon.probe_values import Credentials
from agrajag.zookeeper_settings import Role, ZooKeeperSettings

KEYS = {
    "cluster",
    "node",
    "zookeeper",
    "repmgr",
    "check",
    "poll_interval_s",
    "wakeup_socket",
    "wakeup_group",
}


@dataclass(frozen=True, slots=True)
class RepmgrSettings:
    bin: str
    config: str
    timeout_s: float
    #: PGCONNECT_TIMEOUT for repmgr: libpq's wait on each node whose conninfo sets no
    #: connect_timeout (without either, a silent host holds repmgr for minutes of TCP retries).
    connect_timeout_s: int = 2

    @classmethod
    def from_section(cls, s: Section) -> RepmgrSettings:
        s.reject_unknown({"bin", "config", "timeout_s", "connect_timeout_s"})
        return cls(
            bin=s.string("bin", "/usr/bin/repmgr"),
            config=s.string("config", "/etc/repmgr.conf"),
            timeout_s=s.number("timeout_s", 10.0, minimum=0.5, maximum=120),
            connect_timeout_s=math.ceil(s.number("connect_timeout_s", 2, minimum=1, maximum=60)),
        )


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """The INSERT check: credentials are agrajag's own, never taken from the registry."""

    credentials: Credentials
    dbname: str | None = None  # None: the database of each node's repmgr conninfo
    deadline_s: float = 2.0
    connect_timeout_s: float = 2.0

    @classmethod
    def from_section(cls, s: Section) -> CheckSettings:
        s.reject_unknown(
            {"user", "password", "password_file", "password_env", "passfile", "sslmode"}
            | {"dbname", "deadline_s", "connect_timeout_s"}
        )
        return cls(
            credentials=Credentials(
                user=s.string("user"),
                password=read_secret(s, "password"),
                passfile=s.optional_string("passfile"),
                sslmode=s.optional_string("sslmode"),
            ),
            dbname=s.optional_string("dbname"),
            deadline_s=s.number("deadline_s", 2.0, minimum=0.1, maximum=60),
            connect_timeout_s=s.number("connect_timeout_s", 2.0, minimum=1, maximum=60),
        )


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    cluster: str
    node: str
    zookeeper: ZooKeeperSettings
    repmgr: RepmgrSettings
    check: CheckSettings
    poll_interval_s: float
    wakeup_socket: str
    wakeup_group: str | None  # the socket's group (mode 0660); None: the daemon's own
    metrics: MetricsSettings

    @classmethod
    def load(cls, path: str | Path) -> DaemonSettings:
        """Every problem of the file at once (ConfigErrors), each naming its key."""
        s = load_yaml(path)
        p = Problems()
        p.read(lambda: s.reject_unknown(KEYS | {"metrics"}))
        cluster = p.read(lambda: s.name("cluster"), "cluster")
        settings = cls(
            cluster=cluster,
            node=p.read(lambda: s.name("node")),
            zookeeper=p.read(
                lambda: ZooKeeperSettings.from_section(s.section("zookeeper"), Role.DAEMON)
            ),
            repmgr=p.read(lambda: RepmgrSettings.from_section(s.section("repmgr", {}))),
            check=p.read(lambda: CheckSettings.from_section(s.section("check"))),
            poll_interval_s=p.read(
                lambda: s.number("poll_interval_s", 2.0, minimum=0.1, maximum=300)
            ),
            wakeup_socket=p.read(lambda: s.string("wakeup_socket", f"/run/agrajag/{cluster}.sock")),
            wakeup_group=p.read(lambda: s.optional_string("wakeup_group")),
            metrics=p.read(lambda: MetricsSettings.from_section(s.section("metrics", {}))),
        )
        p.raise_any()
        return settings
