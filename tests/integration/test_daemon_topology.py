"""`agrajag daemon` on a cluster laid out as in production: every node on port 5432 of its
own address, with repmgr's usual conninfo that names no port, and a repmgr witness."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from agrajag.zookeeper_settings import Role
from tools.harness.agrajag import EVENT_COMMAND, Daemons
from tools.harness.identities import kazoo_auth
from tools.harness.postgres import PgCluster
from tools.harness.procs import loopback_hosts, wait_until
from tools.harness.shipped import CONF_D
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration

MASTER = "/agrajag/main/master"
STATUS = [sys.executable, "-m", "agrajag", "status"]


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    c = PgCluster(3, event_command=EVENT_COMMAND, hosts=loopback_hosts(4), witness=True)
    try:
        c.create()
        schema = (CONF_D / "agrajag-schema.sql").read_text()
        c.nodes[0].sql(schema)
        assert c.witness is not None
        c.witness.sql(schema)  # the witness would accept the INSERT check: it is writable
        c.start_repmgrd()
        yield c
    finally:
        c.destroy()


def test_nodes_on_port_5432_of_distinct_hosts_and_a_witness_fail_over(
    zk: ZkEnsemble, cluster: PgCluster
) -> None:
    assert all("port=" not in n.conninfo and n.port == 5432 for n in cluster.all_nodes)
    witness = cluster.witness
    assert witness is not None and not witness.in_recovery()
    assert "witness" in cluster.cluster_show(cluster.nodes[1])
    daemons = Daemons(zk.hosts, cluster.nodes)
    client = KazooClient(hosts=zk.hosts, timeout=10, auth_data=kazoo_auth(Role.WATCHER))
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
        assert (first["host"], first["port"]) == (node1.host.address, 5432)
        evidence = first["evidence"]
        assert isinstance(evidence, dict)
        assert evidence["checks"] == {
            "node1": "writable",
            "node2": "read_only",
            "node3": "read_only",
        }
        assert evidence["witnesses"] == [witness.name] and evidence["writable"] == ["node1"]
        assert [r["role"] for r in evidence["repmgr"]][-1] == "witness"

        def verdicts() -> dict[str, tuple[object, object]] | None:
            done = subprocess.run(
                # with a daemon's config: its identity may read the registry's ACLs
                [*STATUS, "--config", str(daemons.procs["node2"].config), "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert done.stderr == ""
            live = json.loads(done.stdout)["main"]["daemons"]
            found = {n: (d["node_id"], d["decision"]) for n, d in live.items()}
            return found if all(decision for _, decision in found.values()) else None

        # Each daemon's liveness record: repmgr's node id and its last decision.
        seen = wait_until(verdicts, timeout=20, what="every daemon's verdict in status")
        assert {n: i for n, (i, _) in seen.items()} == {"node1": 1, "node2": 2, "node3": 3}

        node1.crash()
        new = cluster.wait_promotion(node1, timeout=30)
        record = published(new.name)
        assert (record["host"], record["port"], record["epoch"]) == (new.host.address, 5432, 2)
        logs = daemons.logs()
        assert "unusable_conninfo" not in logs and "split_brain" not in logs
    finally:
        client.stop()
        client.close()
        daemons.stop()
