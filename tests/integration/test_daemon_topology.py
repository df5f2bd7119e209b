"""`agrajag daemon` on clusters laid out as in production: every node on port 5432 of its
own address, with repmgr's usual conninfo that names no port."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from tools.harness.agrajag import EVENT_COMMAND, Daemons
from tools.harness.postgres import PgCluster
from tools.harness.procs import wait_until
from tools.harness.shipped import CONF_D
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration

MASTER = "/agrajag/main/master"


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    c = PgCluster(3, event_command=EVENT_COMMAND, distinct_hosts=True)
    try:
        c.create()
        c.nodes[0].sql((CONF_D / "agrajag-schema.sql").read_text())
        c.start_repmgrd()
        yield c
    finally:
        c.destroy()


def test_nodes_on_port_5432_of_distinct_hosts_without_port_in_conninfo_fail_over(
    zk: ZkEnsemble, cluster: PgCluster
) -> None:
    assert all("port=" not in n.conninfo and n.port == 5432 for n in cluster.nodes)
    daemons = Daemons(zk.hosts, cluster.nodes)
    client = KazooClient(hosts=zk.hosts, timeout=10)
    try:
        daemons.start()
        client.start(timeout=20)

        def master(node: str) -> dict[str, object] | None:
            if not client.exists(MASTER):
                return None
            record: dict[str, object] = json.loads(client.get(MASTER)[0])
            return record if record["node"] == node else None

        def published(node: str) -> dict[str, object]:
            try:
                return wait_until(lambda: master(node), timeout=30, what=f"{node} published")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{daemons.logs()[-15000:]}") from None

        node1 = cluster.nodes[0]
        first = published("node1")
        assert (first["host"], first["port"]) == (node1.host, 5432)
        evidence = first["evidence"]
        assert isinstance(evidence, dict)
        assert evidence["checks"] == {
            "node1": "writable",
            "node2": "read_only",
            "node3": "read_only",
        }

        node1.crash()
        new = cluster.wait_promotion(node1, timeout=30)
        record = published(new.name)
        assert (record["host"], record["port"], record["epoch"]) == (new.host, 5432, 2)
        assert "unusable_conninfo" not in daemons.logs()
    finally:
        client.stop()
        client.close()
        daemons.stop()
