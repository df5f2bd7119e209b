"""agrajag's own processes, run for real: `agrajag daemon` beside each PostgreSQL node."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import yaml

from agrajag.zookeeper_settings import Role
from tools.harness.identities import secure_example, write_secret
from tools.harness.postgres import CHECK_PASSWORD, CHECK_USER, REPMGR, PgCluster, PgNode
from tools.harness.procs import Proc, free_port, service_env, write_service_file
from tools.harness.shipped import AGRAJAG, AGRAJAG_NOTIFY, CONF_D, event_command, example

#: repmgr's event hook exactly as conf.d/repmgr-event-notification.conf ships it, per node.
EVENT_COMMAND = event_command("{node_dir}/agrajag.sock")
#: The same through agrajag's own hook, `agrajag-notify`, and `agrajag notify` (slower).
HOOK_ARGS = "--socket {node_dir}/agrajag.sock --node-id %n --event %e --success %s"
EVENT_COMMAND_NOTIFY = f"{AGRAJAG_NOTIFY} {HOOK_ARGS}"
EVENT_COMMAND_CLI = f"{AGRAJAG} notify {HOOK_ARGS}"


def hooked(size: int = 3, **options: Any) -> PgCluster:
    """A repmgr cluster as agrajag's users run it, not created yet: repmgr's event hook as
    conf.d ships it on each node. `options` go to PgCluster (pg_ctl_promote, hosts, ...)."""
    return PgCluster(size, event_command=EVENT_COMMAND, **options)


def set_up(cluster: PgCluster) -> PgCluster:
    """Create `cluster`, add the heartbeat table of conf.d's SQL, start repmgrd everywhere."""
    cluster.create()
    cluster.nodes[0].sql((CONF_D / "agrajag-schema.sql").read_text())
    cluster.start_repmgrd()
    return cluster


@contextlib.contextmanager
def hooked_cluster(**options: Any) -> Iterator[PgCluster]:
    """A 3-node `hooked` cluster, `set_up`; destroyed at the end."""
    cluster = hooked(**options)
    try:
        yield set_up(cluster)
    finally:
        cluster.destroy()


class DaemonProc:
    """`agrajag daemon` for one node, running as the node's user, from conf.d's example."""

    def __init__(
        self,
        node: PgNode,
        zk_hosts: str,
        *,
        cluster: str = "main",
        root: str = "/agrajag",
        poll_interval_s: float = 1.0,
        session_timeout_s: float = 4.0,
        tls: dict[str, str] | None = None,
        check_deadline_s: float = 1.0,
    ) -> None:
        self.node = node
        self.metrics_port = free_port()
        self.config = node.dir / "agrajag-daemon.yaml"
        self.log = node.dir / "agrajag-daemon.log"
        conf = example("daemon.example.yaml")
        conf.update(cluster=cluster, node=node.name, poll_interval_s=poll_interval_s)
        conf["zookeeper"].update(
            hosts=zk_hosts, root=root, session_timeout_s=session_timeout_s, call_timeout_s=1.0
        )
        secure_example(conf["zookeeper"], node.dir, Role.DAEMON, tls=tls, service=True)
        conf["repmgr"].update(bin=REPMGR, config=str(node.repmgr_conf))
        check_secret = write_secret(node.dir / "check.password", CHECK_PASSWORD, service=True)
        conf["check"] = {
            "user": CHECK_USER,
            "password_file": str(check_secret),
            "deadline_s": check_deadline_s,
        }
        conf["wakeup_socket"] = str(node.dir / "agrajag.sock")
        conf["metrics"] = {"address": "127.0.0.1", "port": self.metrics_port}
        write_service_file(self.config, yaml.safe_dump(conf))
        write_service_file(self.log, "")
        self.proc = Proc(
            f"agrajag-daemon-{node.name}",
            [AGRAJAG, "--log-level", "DEBUG", "daemon", "--config", str(self.config)],
            log=self.log,
            cwd=node.dir,
            env=service_env(node.dir),
            service=True,
            host=node.host,
        )

    def start(self) -> DaemonProc:
        self.proc.start()
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.stop()


class Daemons:
    """`agrajag daemon` beside every node of a cluster, by node name."""

    def __init__(self, zk_hosts: str, nodes: list[PgNode], **options: Any) -> None:
        self.procs = {n.name: DaemonProc(n, zk_hosts, **options) for n in nodes}

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.output()}" for n, p in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def crash_node(node: PgNode, daemon: DaemonProc) -> float:
    """A power cut: the node's PostgreSQL (every process, frozen or not), repmgrd and daemon
    SIGKILLed together, then reaped; the instant before."""
    assert node.repmgrd is not None
    crashed = time.monotonic()
    for proc in (node.repmgrd, daemon.proc):
        proc.signal(signal.SIGKILL)
    node.kill()
    for proc in (node.repmgrd, daemon.proc):
        proc.kill()  # reaps
    return crashed
