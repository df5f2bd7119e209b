"""How fast a published former primary is withdrawn, and how many writes it still takes.

Usage: python -m tools.bench.bench_withdrawal [--runs N] [OUT.json]

The fault campaign's sequence, once per run on a fresh 3-node repmgr cluster with the event
hook, an `agrajag daemon` per node (poll interval 1 s), and `agrajag watch` with the shipped
HAProxy template in front of a client writing through HAProxy every 10 ms: node1 published;
repmgrd stopped, node2's daemon stopped (node2 cannot be published), node1 crashed, node2
promoted with `repmgr standby promote`, node1 started again without `repmgr node rejoin`.
Measured from node1 taking connections again: the withdrawn record in ZooKeeper, the
watcher's acknowledgement (HAProxy routes nowhere), the client's writes committed on node1
after its return (lost when it is fenced) and after the acknowledgement (must be 0). Then
node1 is fenced (stopped) and node2's daemon started: node2 published, acknowledged, and the
client's first write after the fence. Default OUT is bench-results/withdrawal.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from agrajag.sinks.haproxy import HAProxySink, Settings
from tools.bench.bench_failover import summary
from tools.harness.agrajag import Daemons, hooked_cluster
from tools.harness.procs import service_dir, wait_until
from tools.harness.proxies import HAProxy
from tools.harness.watch import Publisher, WatchProc
from tools.harness.writer import TABLE, ClientWriter
from tools.harness.zookeeper import ZkEnsemble

POLL_S = 0.005


def one_run(zk: ZkEnsemble, index: int) -> dict[str, float]:
    haproxy = HAProxy()
    reader = Publisher(zk.hosts)
    cluster_name = f"run{index}"
    watch: WatchProc | None = None

    def record_epoch() -> int:
        record = reader.registry.read_master(cluster_name).record
        return record.epoch if record else 0

    def acked(epoch: int) -> bool:
        return reader.acked_epoch("bench", cluster_name) == epoch

    with hooked_cluster() as cluster:
        node1, node2, _ = cluster.nodes
        daemons = Daemons(zk.hosts, cluster.nodes, cluster=cluster_name)
        try:
            section = {"type": "haproxy", **haproxy.sink_section(), "clusters": [cluster_name]}
            section["params"]["ports"] = {cluster_name: haproxy.port}  # type: ignore[index]
            sink = HAProxySink(Settings.from_mapping(section, "bench"))
            haproxy.config.write_text(sink.render({}))
            haproxy.start()
            daemons.start()
            home = service_dir("bench-withdrawal")
            watch = WatchProc(
                home, zk.hosts, agent="bench", clusters=[cluster_name], sinks=[section]
            ).start()
            wait_until(lambda: acked(1), timeout=60, what="node1 published and applied")
            node1.sql(TABLE)
            with ClientWriter(haproxy.port) as writer:
                wait_until(lambda: len(writer.written) > 20, timeout=10, what="client writes")
                for node in cluster.nodes:
                    node.stop_repmgrd()
                daemons.procs["node2"].stop()
                node1.crash()
                node2.repmgr("standby", "promote")
                returned_wall = time.time()
                node1.start()
                back = time.monotonic()
                wait_until(lambda: record_epoch() == 2, timeout=20, what="x", interval=POLL_S)
                withdrawn = time.monotonic()
                wait_until(lambda: acked(2), timeout=20, what="the ack", interval=POLL_S)
                routed_nowhere = time.monotonic()
                time.sleep(1.0)  # writes after the acknowledgement would show by now
                landed = node1.sql(
                    f"SELECT count(*) FROM client_writes WHERE at > to_timestamp({returned_wall})"
                )[0][0]
                after_ack = sum(1 for t in writer.written if t > routed_nowhere)

                node1.stop("immediate")
                fenced = time.monotonic()
                daemons.procs["node2"].start()
                wait_until(lambda: record_epoch() == 3, timeout=30, what="node2", interval=POLL_S)
                published = time.monotonic()
                wait_until(lambda: acked(3), timeout=20, what="ack 3", interval=POLL_S)
                applied = time.monotonic()
                resumed = wait_until(
                    lambda: writer.wrote_after(fenced), timeout=20, what="a write on node2"
                )
            return {
                "back_to_withdrawn_s": withdrawn - back,
                "back_to_routed_nowhere_s": routed_nowhere - back,
                "writes_on_node1_after_its_return": float(str(landed)),
                "writes_acknowledged_after_routed_nowhere": float(after_ack),
                "fence_to_node2_published_s": published - fenced,
                "fence_to_node2_routed_s": applied - fenced,
                "fence_to_first_client_write_s": resumed - fenced,
            }
        finally:
            if watch:
                watch.stop()
            daemons.stop()
            haproxy.stop()
            reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("out", nargs="?", default="bench-results/withdrawal.json")
    args = parser.parse_args()
    zk = ZkEnsemble(1).start()
    try:
        runs = [one_run(zk, i) for i in range(args.runs)]
    finally:
        zk.stop()
    times = {key: summary([run[key] for run in runs]) for key in runs[0] if key.endswith("_s")}
    writes = {key: [int(run[key]) for run in runs] for key in runs[0] if key.startswith("writes")}
    for key, values in times.items():
        print(f"{key:42s} p50 {values['p50_ms']:7.0f} ms  max {values['max_ms']:7.0f} ms")
    for key, counts in writes.items():
        print(f"{key:42s} {counts}")
    result = {"machine": platform.node(), "runs": runs, "times": times, "writes": writes}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
