"""agrajag's own processes, run for real: `agrajag daemon` beside each PostgreSQL node."""

from __future__ import annotations

import yaml

from tools.harness.postgres import CHECK_PASSWORD, CHECK_USER, REPMGR, PgNode
from tools.harness.procs import Proc, free_port, service_env, write_service_file
from tools.harness.shipped import AGRAJAG, example

#: repmgr's event hook, as conf.d/repmgr-event-notification.conf has it, per node.
EVENT_COMMAND = (
    f"{AGRAJAG} notify --socket {{node_dir}}/agrajag.sock --node-id %n --event %e --success %s"
)


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
        conf["repmgr"].update(bin=REPMGR, config=str(node.repmgr_conf))
        conf["check"] = {"user": CHECK_USER, "password": CHECK_PASSWORD, "deadline_s": 1.0}
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

    def __init__(self, zk_hosts: str, nodes: list[PgNode]) -> None:
        self.procs = {n.name: DaemonProc(n, zk_hosts) for n in nodes}

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.output()}" for n, p in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
