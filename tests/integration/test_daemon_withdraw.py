"""A published primary that crashed and came back without `repmgr node rejoin` before its
successor was published (found by the fault campaign's soak, 519 acknowledged writes lost):
real repmgr, daemons, watcher and HAProxy, the sequence made deterministic by hand.

repmgrd is stopped and node2 promoted with `repmgr standby promote`; node2's daemon is stopped
first, so nothing can publish node2 (no guard) before node1 is back on timeline 1.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.haproxy import HAProxySink, Settings
from tools.harness.agrajag import Daemons
from tools.harness.postgres import PgCluster
from tools.harness.procs import wait_until
from tools.harness.proxies import HAProxy, writes_through
from tools.harness.watch import Publisher, WatchProc
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


def test_a_published_former_primary_is_withdrawn_until_fenced_then_its_successor_published(
    zk: ZkEnsemble,
    cluster_with_hook: PgCluster,
    haproxy: HAProxy,
    watchers: Callable[..., WatchProc],
) -> None:
    cluster = cluster_with_hook
    node1, node2, _ = cluster.nodes
    section = {"type": "haproxy", **haproxy.sink_section()}
    haproxy.config.write_text(HAProxySink(Settings.from_mapping(section, "test")).render({}))
    haproxy.start()
    daemons = Daemons(zk.hosts, cluster.nodes)
    reader = Publisher(zk.hosts)  # reads the registry as an operator would

    def master() -> MasterRecord:
        record = reader.registry.read_master("main").record
        assert record is not None
        return record

    def applied(epoch: int) -> bool:
        return reader.acked_epoch("app1") == epoch

    try:
        daemons.start()
        watchers(sinks=[section])
        wait_until(lambda: applied(1), timeout=30, what="node1 published and applied")
        assert master().node == "node1" and writes_through(haproxy.port) == node1.port

        for node in cluster.nodes:
            node.stop_repmgrd()
        daemons.procs["node2"].stop()
        node1.crash()
        node2.repmgr("standby", "promote")
        assert node2.timeline() == 2
        node1.start()  # a primary again, on timeline 1: two writable nodes

        withdrawn = wait_until(
            lambda: master().epoch == 2 and master(), timeout=20, what="node1 withdrawn"
        )
        assert (withdrawn.node, withdrawn.timeline, withdrawn.port) == ("node1", 1, node1.port)
        assert withdrawn.withdrawn == (
            "node1 takes writes on timeline 1, node2 on timeline 2: node1 is a former primary"
        )
        wait_until(lambda: applied(2), timeout=20, what="the watcher to apply the withdrawal")
        with pytest.raises(psycopg.OperationalError):
            writes_through(haproxy.port)  # fails, instead of landing on node1
        assert not node1.in_recovery()  # node1 still takes writes: HAProxy sends it none
        assert master().epoch == 2, daemons.logs()  # withdrawn once, no churn

        node1.stop("immediate")  # fenced
        daemons.procs["node2"].start()
        published = wait_until(
            lambda: master().node == "node2" and master(), timeout=30, what="node2 published"
        )
        assert (published.epoch, published.timeline, published.routes) == (3, 2, True)
        wait_until(lambda: applied(3), timeout=20, what="the watcher to apply node2")
        assert writes_through(haproxy.port) == node2.port
        history = [(r.epoch, r.node, r.routes) for r in reader.registry.history("main")]
        assert history == [(1, "node1", True), (2, "node1", False), (3, "node2", True)]
    finally:
        reader.close()
        daemons.stop()
