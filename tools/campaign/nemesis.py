"""The faults of a campaign: a seeded schedule (pure), and how each fault is done and undone on
a running `System`.

A schedule names roles (the primary, the n-th standby, the ZooKeeper leader), not hosts: they
are resolved when the step runs, so one seed gives the same sequence of faults whatever node
happens to be primary.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tools.harness.postgres import PgNode
from tools.harness.procs import wait_until
from tools.harness.reader import RegistryReader
from tools.harness.system import System
from tools.harness.zookeeper import ZkServer, four_letter

#: Fault kinds and their weight in a schedule. Failovers dominate, so that a run goes back
#: and forth between nodes.
KINDS: dict[str, int] = {
    "node_crash_primary": 4,  # PostgreSQL, repmgrd and the daemon killed together
    "node_crash_standby": 1,
    "pg_crash_primary": 2,  # PostgreSQL alone
    "pg_freeze_primary": 2,  # SIGSTOP, long enough for repmgrd to promote a standby
    "old_primary_back": 2,  # crash, failover, the old primary started again without rejoin
    "daemon_freeze": 2,  # SIGSTOP past its ZooKeeper session timeout
    "watcher_freeze": 1,
    "zk_kill": 1,
    "zk_leader_kill": 2,
    "quorum_loss": 2,
    "primary_cut_from_zk": 2,  # the primary's host cut from every ZooKeeper server
    "standby_cut_from_zk": 1,
    "app_cut_from_zk": 2,
    "zk_to_primary_one_way": 1,  # the primary's host hears nothing from ZooKeeper
    "primary_cut_from_dbs": 1,  # clients and ZooKeeper still reach it; repmgrd promotes
}
#: Faults that may overlap another one in the same step.
OVERLAYS = ["watcher_freeze", "zk_kill", "app_cut_from_zk", "daemon_freeze"]


@dataclass(frozen=True)
class Step:
    kind: str
    pick: int  # chooses among candidates (standbys, servers, apps) when the step runs
    hold_s: float
    overlay: str | None = None

    def __str__(self) -> str:
        extra = f" + {self.overlay}" if self.overlay else ""
        return f"{self.kind}{extra} (pick {self.pick}, hold {self.hold_s:.1f}s)"


def schedule(seed: int, steps: int) -> list[Step]:
    """The same steps for the same seed, every time."""
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())
    return [
        Step(
            kind=rng.choices(kinds, weights)[0],
            pick=rng.randrange(1000),
            hold_s=round(rng.uniform(6.0, 10.0), 1),
            overlay=rng.choice(OVERLAYS) if rng.random() < 0.3 else None,
        )
        for _ in range(steps)
    ]


Heal = Callable[[], None]


class Nemesis:
    """Does faults to a running system and undoes them; `expected_exits` names the agrajag
    processes it is killing (shared with the recorder)."""

    def __init__(self, system: System, expected_exits: set[str], session_timeout_s: float) -> None:
        self.system = system
        self.expected_exits = expected_exits
        self.session_timeout_s = session_timeout_s

    # -- roles -----------------------------------------------------------------------------

    def primary(self) -> PgNode:
        """The writable node, or the one the registry keeps among several (a split brain
        repmgr made after the last repair, e.g. a promotion completing after a partition
        healed): the published master, or the other one when it was withdrawn."""
        return wait_until(self._primary_now, timeout=60, what="a writable primary", interval=0.5)

    def _primary_now(self) -> PgNode | None:
        writable = self.system.cluster.writable()
        if len(writable) > 1:
            keep = self._read(lambda r: r.keep_among([n.name for n in writable]))
            return next((n for n in writable if n.name == keep), None)
        return writable[0] if writable else None

    def standby(self, pick: int) -> PgNode:
        primary = self.primary()
        others = [n for n in self.system.cluster.nodes if n is not primary]
        return others[pick % len(others)]

    def leader(self) -> ZkServer:
        return wait_until(self._leader_now, timeout=30, what="a ZooKeeper leader", interval=0.5)

    def _leader_now(self) -> ZkServer | None:
        for server in self.system.zk.servers:
            try:
                info = four_letter(server.port, "srvr", address=server.host.address)
            except OSError:
                continue
            if "Mode: leader" in info:
                return server
        return None

    def _read(self, what: Callable[[RegistryReader], str | None]) -> str | None:
        reader = RegistryReader(self.system.zk.hosts)
        try:
            return what(reader)
        finally:
            reader.close()

    # -- faults ----------------------------------------------------------------------------

    def apply(self, kind: str, pick: int, hold_s: float) -> Heal:
        """Start fault `kind`; the returned callable undoes it."""
        fault: Callable[[int, float], Heal] = getattr(self, f"_{kind}")
        return fault(pick, hold_s)

    def _node_crash_primary(self, pick: int, hold_s: float) -> Heal:
        return self._crash(self.primary())

    def _node_crash_standby(self, pick: int, hold_s: float) -> Heal:
        return self._crash(self.standby(pick))

    def _crash(self, node: PgNode) -> Heal:
        name = self.system.daemons[node.name].proc.name
        self.expected_exits.add(name)
        self.system.crash_node(node)

        def heal() -> None:
            self.system.rejoin(node)
            self.system.daemons[node.name].start()
            self.expected_exits.discard(name)

        return heal

    def _pg_crash_primary(self, pick: int, hold_s: float) -> Heal:
        node = self.primary()
        node.kill()
        return lambda: self._fence(node)

    def _pg_freeze_primary(self, pick: int, hold_s: float) -> Heal:
        node = self.primary()
        node.freeze()
        time.sleep(4)  # with the step's hold, about as long as repmgrd takes to promote

        def heal() -> None:
            node.resume()
            self._fence(node)

        return heal

    def _fence(self, node: PgNode) -> None:
        """After a fault to `node`'s PostgreSQL: rejoin it if another node took over (or it
        is down), else leave it be."""
        if self.system.primary_besides(node) is not None or not node.running():
            self.system.rejoin(node)

    def _old_primary_back(self, pick: int, hold_s: float) -> Heal:
        old = self.primary()
        name = self.system.daemons[old.name].proc.name
        self.expected_exits.add(name)
        self.system.crash_node(old)
        new = self.system.cluster.wait_promotion(old, timeout=60)
        if pick % 2:  # back after the new primary was published, else at once (a race)
            wait_until(
                lambda: self._read(RegistryReader.routed_node) == new.name,
                timeout=60,
                what=f"{new.name} to be published",
                interval=0.2,
            )
        old.start()  # as it is on disk: a primary on the old timeline, writable
        old.start_repmgrd()
        self.system.daemons[old.name].start()
        self.expected_exits.discard(name)

        def heal() -> None:
            self.system.rejoin(old)

        return heal

    def _daemon_freeze(self, pick: int, hold_s: float) -> Heal:
        node = self.system.cluster.nodes[pick % len(self.system.cluster.nodes)]
        proc = self.system.daemons[node.name].proc
        proc.freeze()
        time.sleep(max(0.0, self.session_timeout_s + 3 - hold_s))  # past the session timeout
        return proc.resume

    def _watcher_freeze(self, pick: int, hold_s: float) -> Heal:
        apps = list(self.system.apps.values())
        proc = apps[pick % len(apps)].watcher.proc
        proc.freeze()
        return proc.resume

    def _zk_kill(self, pick: int, hold_s: float) -> Heal:
        """A follower, or any running server while there is no quorum."""
        running = [s for s in self.system.zk.servers if s.proc and s.proc.alive()]
        followers = [s for s in running if s is not self._leader_now()]
        if not followers:
            return lambda: None
        return self._kill_servers([followers[pick % len(followers)]])

    def _zk_leader_kill(self, pick: int, hold_s: float) -> Heal:
        return self._kill_servers([self.leader()])

    def _quorum_loss(self, pick: int, hold_s: float) -> Heal:
        leader = self.leader()
        others = [s for s in self.system.zk.servers if s is not leader]
        return self._kill_servers([leader, others[pick % len(others)]])

    def _kill_servers(self, servers: list[ZkServer]) -> Heal:
        for server in servers:
            server.kill()

        def heal() -> None:  # serving waits for a quorum: the campaign's repair waits
            for server in servers:
                server.start()

        return heal

    def _cut(self, a: str, b: list[str], *, one_way: bool = False) -> Heal:
        topology = self.system.topology
        topology.cut(a, b, one_way=one_way)
        return lambda: topology.heal(a, b)

    def _primary_cut_from_zk(self, pick: int, hold_s: float) -> Heal:
        return self._cut(self.system.db_host(self.primary()), self.system.zk_names)

    def _standby_cut_from_zk(self, pick: int, hold_s: float) -> Heal:
        return self._cut(self.system.db_host(self.standby(pick)), self.system.zk_names)

    def _app_cut_from_zk(self, pick: int, hold_s: float) -> Heal:
        apps = self.system.app_names
        return self._cut(apps[pick % len(apps)], self.system.zk_names)

    def _zk_to_primary_one_way(self, pick: int, hold_s: float) -> Heal:
        topology = self.system.topology
        host = self.system.db_host(self.primary())
        topology.cut(self.system.zk_names, host, one_way=True)
        return lambda: topology.heal(self.system.zk_names, host)

    def _primary_cut_from_dbs(self, pick: int, hold_s: float) -> Heal:
        node = self.primary()
        host = self.system.db_host(node)
        heal_cut = self._cut(host, [h for h in self.system.db_names if h != host])
        cut_at = time.monotonic()

        def heal() -> None:
            heal_cut()
            # repmgrd may still be promoting: let it finish before judging who is primary.
            time.sleep(max(0.0, cut_at + 15 - time.monotonic()))
            self._fence(node)

        return heal
