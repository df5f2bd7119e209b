"""`make demo`: agrajag on a local demo cluster, end to end, on 127.0.0.1.

Starts ZooKeeper, a 3-node PostgreSQL 15 + repmgr cluster with repmgrd (automatic failover,
promoting with `pg_ctl -w` as conf.d recommends), `agrajag daemon` beside each node (woken
by repmgr's events through `agrajag-notify`), and `agrajag watch` driving a real HAProxy and
a real PgBouncer. Two applications write a row every 10 ms, one through each proxy. Shows
`agrajag status`, crashes the primary node (its PostgreSQL, repmgrd and daemon killed
together), and shows how long each step of the failover took, how long each application's
writes stopped and whether the new primary has every write it acknowledged. `--keep` leaves
it all running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.client import KazooClient

from agrajag.sinks.haproxy import HAProxySink, Settings
from agrajag.zookeeper_settings import Role
from tools.harness.agrajag import EVENT_COMMAND, Daemons, crash_node
from tools.harness.clients import TABLE, Client
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgCluster, PgNode
from tools.harness.procs import STARTED, service_dir, wait_until
from tools.harness.proxies import BouncerConsole, HAProxy, PgBouncer
from tools.harness.shipped import AGRAJAG, CONF_D
from tools.harness.watch import ROOT, MasterWatch, WatchProc
from tools.harness.zookeeper import ZkEnsemble

CONNECT_TIMEOUT_S = 2


def status(watcher: WatchProc) -> None:
    """`agrajag status` with the watcher's config: its identity may read the registry."""
    subprocess.run([AGRAJAG, "status", "--config", str(watcher.config)], check=False, timeout=30)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def first_write(client: Client, port: int, after: float) -> float | None:
    return min((end for _, end, p, _ in client.attempts if p == port and end > after), default=None)


def last_write(client: Client, port: int) -> float | None:
    return max((end for _, end, p, _ in client.attempts if p == port), default=None)


def summary(
    crashed: float,
    marks: dict[str, float | None],
    clients: list[Client],
    old: PgNode,
    new: PgNode,
) -> None:
    step("what the failover took (seconds after the crash)")
    for label, at in marks.items():
        print(f"  {label:<32} {'-' if at is None else f'{at - crashed:6.2f} s'}")
    rows = new.sql("SELECT node, count(*) FROM agrajag_bench_writes GROUP BY node")
    found = {str(node): int(str(count)) for node, count in rows}
    for c in clients:
        stopped, resumed = last_write(c, old.port), first_write(c, new.port, crashed)
        down = f"{resumed - stopped:.2f} s" if stopped and resumed else "did not resume"
        acked = c.acknowledged()
        print(
            f"  application via {c.key.split('/')[0]:<10} writes stopped for {down};"
            f" {acked} acknowledged, {acked - found.get(c.key, 0)} missing on {new.name}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep everything running")
    keep = parser.parse_args().keep

    step("starting ZooKeeper, PostgreSQL 15 + repmgr (3 nodes), daemons, HAProxy, PgBouncer")
    zk = ZkEnsemble(1).start()
    cluster = PgCluster(3, event_command=EVENT_COMMAND, pg_ctl_promote=True)
    haproxy, bouncer = HAProxy(), PgBouncer()
    console = BouncerConsole(bouncer)
    zclient = KazooClient(hosts=zk.hosts, timeout=10, auth_data=kazoo_auth(Role.WATCHER))
    clients: list[Client] = []
    try:
        cluster.create()
        old = cluster.nodes[0]
        old.sql((CONF_D / "agrajag-schema.sql").read_text())
        old.sql(TABLE)
        cluster.start_repmgrd()
        daemons = Daemons(zk.hosts, cluster.nodes)
        daemons.start()
        hsec = {"type": "haproxy", **haproxy.sink_section()}
        haproxy.config.write_text(HAProxySink(Settings.from_mapping(hsec, "demo")).render({}))
        haproxy.start()
        bouncer.write_config("")
        bouncer.start()
        psec = {"type": "pgbouncer", **bouncer.sink_section("reconnect")}
        watcher = WatchProc(Path(service_dir("watch")), zk.hosts, sinks=[hsec, psec]).start()
        wait_until(
            lambda: haproxy.routed_port() == console.port() == old.port,
            timeout=30,
            what="both proxies to route to node1",
        )
        print(f"HAProxy 127.0.0.1:{haproxy.port} and PgBouncer 127.0.0.1:{bouncer.port}")
        print(f"route to {old.name} (port {old.port})")
        clients = [
            Client("haproxy", haproxy.port, CONNECT_TIMEOUT_S),
            Client("pgbouncer", bouncer.port, CONNECT_TIMEOUT_S),
        ]
        for c in clients:
            c.start()
        wait_until(lambda: all(c.wrote_to(old.port) for c in clients), timeout=20, what="writes")
        print("two applications write a row every 10 ms, one through each proxy")
        status(watcher)

        step(f"crashing the primary node {old.name}: PostgreSQL, repmgrd and its daemon killed")
        zclient.start(timeout=20)
        znode = MasterWatch(zclient, f"{ROOT}/main/master", old.name)
        crashed = crash_node(old, daemons.procs[old.name])
        new = cluster.wait_promotion(old, timeout=60)
        writable = time.monotonic()
        routed: dict[str, float] = {}
        proxies: dict[str, Callable[[], int | None]] = {
            "HAProxy": haproxy.routed_port,
            "PgBouncer": console.port,
        }

        def both_routed() -> bool:
            for name, port in proxies.items():
                if name not in routed and port() == new.port:
                    routed[name] = time.monotonic()
            return len(routed) == len(proxies)

        wait_until(both_routed, timeout=60, what="both proxies to route to the new primary")
        wait_until(
            lambda: all(c.wrote_to(new.port, crashed) for c in clients),
            timeout=60,
            what="both applications to write again",
        )
        time.sleep(0.2)
        for c in clients:
            c.stop()
        summary(
            crashed,
            {
                f"{new.name} writable (seen by a poll)": writable,
                "master znode names it": znode.written_at,
                **{f"{name} routes to it": at for name, at in routed.items()},
            },
            clients,
            old,
            new,
        )
        status(watcher)
        if keep:
            step(f"running; ZooKeeper at {zk.hosts}, HAProxy at 127.0.0.1:{haproxy.port}")
            print(f"PgBouncer at 127.0.0.1:{bouncer.port}; watcher log: {watcher.log}")
            print("Ctrl-C stops everything")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        step("stopping")
        for c in clients:
            c.stop()
        console.close()
        zclient.stop()
        zclient.close()
        for proc in reversed(STARTED):
            proc.stop()
        cluster.destroy()
        zk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
