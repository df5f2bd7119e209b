"""Damage done to a running registry: junk in every znode, a deleted `history/`, a wiped
cluster subtree. Real daemons on a real repmgr cluster, real watchers; no process may die,
and publishing must go on. The tests share one cluster (the last one fails it over)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotEmptyError

from agrajag.zookeeper_settings import Role
from tools.harness.agrajag import EVENT_COMMAND, Daemons
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgCluster
from tools.harness.procs import Proc, wait_until
from tools.harness.shipped import CONF_D
from tools.harness.watch import WatchProc
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration

T = TypeVar("T")

BASE = "/agrajag/main"
JUNK = {
    "deep_nesting": b"[" * 4096,
    "huge_integer": b'{"schema": 1, "epoch": ' + b"9" * 5000 + b"}",
    "not_utf8": b"\xff\xfe{",
    "oversized": b'{"schema": 1, "pad": "' + b"x" * 200_000 + b'"}',
}


@dataclass
class Running:
    zk: ZkEnsemble
    cluster: PgCluster
    daemons: Daemons
    watchers: list[WatchProc]
    client: KazooClient

    def procs(self) -> list[Proc]:
        return [d.proc for d in self.daemons.procs.values()] + [w.proc for w in self.watchers]

    def assert_all_alive(self) -> None:
        dead = [p.name for p in self.procs() if not p.alive()]
        assert not dead, f"{dead} died:\n{self.logs()}"

    def logs(self) -> str:
        """Every process's log, without the daemons' DEBUG lines."""
        daemons = "\n".join(
            line for line in self.daemons.logs().splitlines() if " DEBUG " not in line
        )
        return daemons + "".join(f"--- {w.agent}\n{w.output()}" for w in self.watchers)

    def wipe(self) -> None:
        """Delete the cluster's subtree; the daemons re-create nodes meanwhile: try again."""

        def deleted() -> bool:
            try:
                self.client.delete(BASE, recursive=True)
            except NotEmptyError:
                return False
            return True

        self.wait(deleted, 10, f"{BASE} to be deleted")

    def master(self) -> dict[str, object] | None:
        try:
            result: dict[str, object] = json.loads(self.client.get(f"{BASE}/master")[0])
        except Exception:  # absent or junk: not a master yet
            return None
        return result

    def wait_master(self, node: str, *, above_epoch: int = 0, timeout: float = 20) -> int:
        """Wait until the master znode names `node` at an epoch above `above_epoch`."""

        def published() -> int | None:
            m = self.master()
            if m and m["node"] == node and int(str(m["epoch"])) > above_epoch:
                return int(str(m["epoch"]))
            return None

        what = f"{node} published above {above_epoch}"
        return self.wait(published, timeout, what)

    def wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """wait_until, failing with every process's log."""
        try:
            return wait_until(check, timeout=timeout, what=what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()[-20000:]}") from None

    def wait_watchers(self, port: int, epoch: int, timeout: float = 20) -> None:
        for w in self.watchers:
            self.wait(
                lambda w=w: (r := w.routed_to()) and r[1] == port and r[2] >= epoch,
                timeout,
                f"{w.agent} to route to port {port} at epoch >= {epoch}",
            )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    zk = ZkEnsemble(1)
    cluster = PgCluster(3, event_command=EVENT_COMMAND)
    daemons: Daemons | None = None
    watchers: list[WatchProc] = []
    client = KazooClient(hosts="127.0.0.1:1")
    try:
        zk.start()
        cluster.create()
        cluster.nodes[0].sql((CONF_D / "agrajag-schema.sql").read_text())
        cluster.start_repmgrd()
        daemons = Daemons(zk.hosts, cluster.nodes)
        daemons.start()
        home = Path(tmp_path_factory.mktemp("watchers"))
        watchers = [WatchProc(home / a, zk.hosts, agent=a).start() for a in ("app1", "app2")]
        # junk is written as a daemon could (the ACLs let nobody else)
        client = KazooClient(hosts=zk.hosts, timeout=10, auth_data=kazoo_auth(Role.DAEMON))
        client.start(timeout=20)
        yield Running(zk, cluster, daemons, watchers, client)
    finally:
        client.stop()
        client.close()
        for w in watchers:
            w.stop()
        if daemons:
            daemons.stop()
        cluster.destroy()
        zk.stop()


def test_junk_in_any_znode_kills_no_process_and_a_junk_master_is_replaced(
    running: Running,
) -> None:
    node1 = running.cluster.nodes[0]
    epoch = running.wait_master("node1")
    running.wait_watchers(node1.port, epoch)
    zk = running.client
    for name, junk in JUNK.items():
        zk.create(f"{BASE}/nodes/junk-{name}", junk)
        zk.create(f"{BASE}/watchers/junk-{name}", junk)
        zk.create(f"{BASE}/history/epoch-", junk, sequence=True)
    for name, junk in JUNK.items():
        zk.set(f"{BASE}/master", junk)
        epoch = running.wait_master("node1", above_epoch=epoch)
        running.wait_watchers(node1.port, epoch)
        running.assert_all_alive()
        assert f"{BASE}/master" in running.logs(), name
    for name in JUNK:
        zk.delete(f"{BASE}/nodes/junk-{name}")
        zk.delete(f"{BASE}/watchers/junk-{name}")
    running.assert_all_alive()


def test_a_deleted_history_is_recreated_and_publishing_goes_on(running: Running) -> None:
    node1 = running.cluster.nodes[0]
    epoch = running.wait_master("node1")
    zk = running.client
    zk.delete(f"{BASE}/history", recursive=True)
    zk.set(f"{BASE}/master", b"junk")  # a publish is due: the multi finds no history/
    epoch = running.wait_master("node1", above_epoch=epoch)
    running.wait_watchers(node1.port, epoch)
    entries = zk.get_children(f"{BASE}/history")
    assert [json.loads(zk.get(f"{BASE}/history/{e}")[0])["epoch"] for e in entries] == [epoch]
    assert "reason=layout_missing" in running.logs()
    running.assert_all_alive()


def test_a_wiped_subtree_never_sends_the_epoch_back_and_the_next_failover_reaches_everyone(
    running: Running,
) -> None:
    node1 = running.cluster.nodes[0]
    epoch = running.wait_master("node1")
    running.wait_watchers(node1.port, epoch)
    running.wipe()  # as a restore, a rebuilt ensemble or `deleteall` would
    # The daemons remember the epoch: the record they write again is not below it.
    epoch = running.wait_master("node1", above_epoch=epoch - 1)
    running.wait_watchers(node1.port, epoch)

    node1.crash()
    new = running.cluster.wait_promotion(node1, timeout=30)
    epoch = running.wait_master(new.name, above_epoch=epoch)
    running.wait_watchers(new.port, epoch)
    for w in running.watchers:  # and each has acknowledged it again
        running.wait(
            lambda w=w: (
                json.loads(running.client.get(f"{BASE}/watchers/{w.agent}")[0])["applied_epoch"]
                == epoch
            ),
            10,
            f"{w.agent} to acknowledge epoch {epoch}",
        )
    assert "stale_epoch" not in running.logs()
    running.assert_all_alive()
