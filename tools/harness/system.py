"""The whole system on simulated hosts (`tools.harness.netns`), as it is deployed: DB nodes
db1..dbN (PostgreSQL + repmgrd + `agrajag daemon`), ZooKeeper servers zk1..zkN, and app hosts
(HAProxy, PgBouncer and `agrajag watch` driving both), each in its own namespace.

`System` must be built and used from a thread that entered the topology's observer
(`with topology.entered():`), which is how the harness reaches the hosts' addresses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from agrajag.sinks.haproxy import HAProxySink
from tools.harness.agrajag import DaemonProc, crash_node, hooked, set_up
from tools.harness.netns import Topology
from tools.harness.postgres import PgNode
from tools.harness.procs import Host, run_service, service_dir, wait_until
from tools.harness.proxies import HAProxy, PgBouncer, lands_on
from tools.harness.watch import WatchProc
from tools.harness.zookeeper import ZkEnsemble


@dataclass
class AppHost:
    """One application host: HAProxy and PgBouncer, and the watcher that points them."""

    name: str
    host: Host
    haproxy: HAProxy
    pgbouncer: PgBouncer
    watcher: WatchProc

    @property
    def address(self) -> str:
        return self.host.address


class System:
    """Every process of a deployment on its own host; see the module's docstring."""

    def __init__(self, topology: Topology, *, db: int = 3, zk: int = 3, apps: int = 1) -> None:
        self.topology = topology
        self.db_names = [f"db{i}" for i in range(1, db + 1)]
        self.zk_names = [f"zk{i}" for i in range(1, zk + 1)]
        self.app_names = [f"app{i}" for i in range(1, apps + 1)]
        self.zk = ZkEnsemble(zk, hosts=[topology.host(n) for n in self.zk_names])
        self.cluster = hooked(
            db, pg_ctl_promote=True, hosts=[topology.host(n) for n in self.db_names]
        )
        self.daemons: dict[str, DaemonProc] = {}
        self.apps: dict[str, AppHost] = {}

    @staticmethod
    def host_names(*, db: int = 3, zk: int = 3, apps: int = 1) -> list[str]:
        """The topology's hosts for a system of this size."""
        return (
            [f"db{i}" for i in range(1, db + 1)]
            + [f"zk{i}" for i in range(1, zk + 1)]
            + [f"app{i}" for i in range(1, apps + 1)]
        )

    def db_host(self, node: PgNode) -> str:
        """The topology's name of the host `node` runs on."""
        return self.db_names[node.node_id - 1]

    def node_on(self, host: str) -> PgNode:
        return self.cluster.nodes[self.db_names.index(host)]

    def start(self) -> System:
        self.zk.start()
        set_up(self.cluster)
        for node in self.cluster.nodes:
            self.daemons[node.name] = DaemonProc(node, self.zk.hosts).start()
        for name in self.app_names:
            self.apps[name] = self._start_app(name)
        return self

    def _start_app(self, name: str) -> AppHost:
        host = self.topology.host(name)
        haproxy = HAProxy(host)
        section = {"type": "haproxy", **haproxy.sink_section()}
        haproxy.config.write_text(HAProxySink.from_mapping(section, name).render({}))
        haproxy.start()
        bouncer = PgBouncer(host=host)
        bouncer.write_config("")
        bouncer.start()
        bouncer_section = {"type": "pgbouncer", **bouncer.sink_section("reconnect")}
        watcher = WatchProc(
            Path(service_dir(f"watch-{name}")),
            self.zk.hosts,
            agent=name,
            host=host,
            sinks=[section, bouncer_section],
            reconcile_interval_s=1,
        ).start()
        return AppHost(name, host, haproxy, bouncer, watcher)

    def crash_node(self, node: PgNode) -> None:
        """A power cut: PostgreSQL (every backend), repmgrd and the daemon SIGKILLed at once."""
        crash_node(node, self.daemons[node.name])

    def primary_besides(self, node: PgNode | None = None) -> PgNode | None:
        """The one writable node other than `node`, if there is exactly one."""
        others = [n for n in self.cluster.writable() if n is not node]
        return others[0] if len(others) == 1 else None

    def rejoin(self, node: PgNode, timeout: float = 60) -> PgNode:
        """Make `node` a standby of the current primary again, whatever it was (crashed,
        frozen, a former primary still taking writes): stopped, wiped, cloned afresh and
        registered, repmgrd restarted. Returns the primary it follows."""
        primary = wait_until(
            lambda: self.primary_besides(node),
            timeout=timeout,
            what=f"one primary besides {node.name} to rejoin it to",
            interval=0.5,
        )
        node.stop_repmgrd()
        node.kill()
        run_service(["rm", "-rf", str(node.datadir)], node.dir)
        try:
            self.cluster.clone_standby(node, primary, force=True)
        except RuntimeError as exc:
            log = node.dir / "postgresql.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\n{log} ends:\n{tail}") from exc
        node.start_repmgrd()
        return primary

    def wait_routed(self, node: PgNode, timeout: float = 60) -> None:
        """Wait until every app host's HAProxy and PgBouncer send new clients to `node`."""
        for app in self.apps.values():
            for port in (app.haproxy.port, app.pgbouncer.port):
                wait_until(
                    functools.partial(lands_on, app.address, port, node),
                    timeout=timeout,
                    what=f"{app.name}:{port} to route to {node.name}",
                    interval=0.2,
                )

    def stop(self) -> None:
        """Stop everything by PID (namespaces are the topology's to delete)."""
        for app in self.apps.values():
            app.watcher.stop()
            app.haproxy.stop()
            app.pgbouncer.stop()
        for daemon in self.daemons.values():
            daemon.stop()
        self.cluster.destroy()
        for server in self.zk.servers:
            if server.proc:
                server.proc.resume()
        self.zk.stop()
