"""How long until every one of 200 watchers has acknowledged a new master epoch (not a test).

Usage: python -m tools.bench.bench_watch_fanout [OUT.json]
Starts a ZooKeeper server from the test harness, then worker processes running real
`Watcher` loops (at most PER_PROCESS each), each with its own ZooKeeper session and state
file. Each round publishes the next epoch and times, through a DataWatch on every
`watchers/<agent>`, when each acknowledgement arrives. Passes: a template sink rendering
conf.d/primary.env.j2 into each watcher's own file (what a watcher really does, though here
all of them share the machine's cores with ZooKeeper), and a sink that does nothing (what
is left: ZooKeeper, the loop, the state file, the acknowledgement); 1 watcher as the
baseline, then WATCHERS.
Prints p50/p99 and writes them as JSON to OUT.json (default bench-results/watch_fanout.json).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from agrajag.config import MetricsSettings
from agrajag.inbox import Inbox, Wake
from agrajag.metrics import WatcherMetrics
from agrajag.record import MasterRecord, RecordError, WatcherAck
from agrajag.registry.client import Registry
from agrajag.sinks import ApplyResult, Sink, build_sink
from agrajag.watch.loop import Watcher
from agrajag.watch.rules import Backoff, FailMode
from agrajag.watch.settings import WatchConfig
from agrajag.zookeeper_settings import Role, ZooKeeperSettings
from tools.harness import procs
from tools.harness.records import master_record
from tools.harness.shipped import CONF_D
from tools.harness.watch import ROOT
from tools.harness.zookeeper import ZkEnsemble

WATCHERS = 200
PER_PROCESS = 50
PASSES = [(1, "template"), (1, "noop"), (WATCHERS, "template"), (WATCHERS, "noop")]
ROUNDS = 10
ROUND_TIMEOUT_S = 60
REPO = Path(__file__).resolve().parents[2]


def percentile(sorted_values: list[float], pct: int) -> float:
    return sorted_values[min(len(sorted_values) - 1, len(sorted_values) * pct // 100)]


# -- worker: many Watcher loops in one process ----------------------------------------------


class NoopSink:
    """A sink that applies nothing, to time the watcher without a sink's own cost."""

    name = "noop"

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult:
        return ApplyResult(changed=True, action="noop")

    def resume(self, records: Mapping[str, MasterRecord]) -> None:
        pass

    def render_only(self, records: Mapping[str, MasterRecord]) -> str:
        return "noop"


def make_sink(kind: str, agent: str, home: Path) -> Sink:
    if kind == "noop":
        return NoopSink()
    item = {
        "type": "template",
        "name": "file",
        "src": str(CONF_D / "primary.env.j2"),
        "dest": str(home / "primary.env"),
    }
    return build_sink(item, f"bench: {agent}")


def watcher_config(hosts: str, agent: str, home: Path, sink: Sink) -> WatchConfig:
    return WatchConfig(
        source="bench",
        agent=agent,
        zookeeper=ZooKeeperSettings(hosts, ROOT, session_timeout_s=10, call_timeout_s=5),
        clusters=("main",),
        fail_mode=FailMode.OPEN,
        fail_closed_after_s=0,
        state_file=home / "state.json",
        reconcile_interval_s=5,
        retry_backoff=Backoff(),
        metrics=MetricsSettings(),
        sinks=(sink,),
    )


def worker(hosts: str, base: Path, sink: str, first: int, count: int) -> None:
    """Run watchers bench-<first>..bench-<first+count-1> until stdin closes."""
    loops: list[tuple[Inbox, Registry, threading.Thread]] = []
    for i in range(first, first + count):
        agent, home = f"bench-{i}", base / f"bench-{i}"
        home.mkdir(parents=True)
        config = watcher_config(hosts, agent, home, make_sink(sink, agent, home))
        registry = Registry.connect(config.zookeeper, Role.WATCHER)
        inbox = Inbox()
        loop = Watcher(config, registry, WatcherMetrics(), inbox)
        thread = threading.Thread(target=loop.run, name=config.agent, daemon=True)
        thread.start()
        loops.append((inbox, registry, thread))
    sys.stdin.read()
    for inbox, registry, thread in loops:
        inbox.post(Wake.STOP)
        thread.join(10)
        registry.close()


# -- coordinator ----------------------------------------------------------------------------


class Acks:
    """The epoch each agent has acknowledged and when that was first seen."""

    def __init__(self, client: KazooClient, agents: list[str]) -> None:
        self.count = len(agents)
        self.changed = threading.Condition()
        self.seen: dict[str, tuple[int, float]] = {}
        for agent in agents:
            path = f"{ROOT}/main/watchers/{agent}"
            client.DataWatch(path, lambda data, stat, a=agent, p=path: self._on(a, p, data))

    def _on(self, agent: str, path: str, data: bytes | None) -> None:
        if not data:
            return
        try:
            epoch = WatcherAck.from_json(data, source=path).applied_epoch
        except RecordError:
            return
        with self.changed:
            if self.seen.get(agent, (0, 0.0))[0] != epoch:
                self.seen[agent] = (epoch, time.monotonic())
                self.changed.notify_all()

    def wait_all(
        self, epoch: int, timeout: float, workers: list[subprocess.Popen[bytes]]
    ) -> list[float]:
        """The times at which every agent acknowledged `epoch`; TimeoutError if some did not,
        RuntimeError as soon as a worker has died."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                times = [t for e, t in self.seen.values() if e == epoch]
                if len(times) == self.count:
                    return times
                if any(proc.poll() is not None for proc in workers):
                    raise RuntimeError("a worker process exited (see its traceback above)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(times)}/{self.count} acknowledged epoch {epoch}")
                self.changed.wait(min(left, 1.0))


def start_workers(
    hosts: str, base: Path, sink: str, watchers: int
) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tools.bench.bench_watch_fanout", "--worker", hosts]
    return [
        subprocess.Popen(
            [*command, str(base), sink, str(first), str(min(PER_PROCESS, watchers - first))],
            cwd=REPO,
            stdin=subprocess.PIPE,
        )
        for first in range(0, watchers, PER_PROCESS)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in workers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(hosts: str, base: Path, watchers: int, sink: str) -> dict[str, Any]:
    """Run `watchers` watchers with `sink` (template | noop) through ROUNDS epochs."""
    print(f"-- {watchers} watchers, {sink} sink")
    client = KazooClient(hosts=hosts, timeout=10)
    client.start(timeout=20)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        path = f"{ROOT}/main/master"
        client.create(path, master_record(epoch=1).to_json(), makepath=True)
        acks = Acks(client, [f"bench-{i}" for i in range(watchers)])
        started = time.monotonic()
        workers = start_workers(hosts, base, sink, watchers)
        acks.wait_all(1, 120, workers)
        print(f"{watchers} watchers acknowledged epoch 1 in {time.monotonic() - started:.1f}s")
        all_acked: list[float] = []
        each: list[float] = []
        for epoch in range(2, ROUNDS + 2):
            time.sleep(0.5)
            published = time.monotonic()
            client.set(path, master_record(epoch % 3 + 1, epoch=epoch).to_json())
            times = acks.wait_all(epoch, ROUND_TIMEOUT_S, workers)
            all_acked.append(max(times) - published)
            each.extend(t - published for t in times)
            print(f"epoch {epoch}: all {watchers} acknowledged after {all_acked[-1] * 1e3:.0f} ms")
    finally:
        stop_workers(workers)
        client.delete(ROOT, recursive=True)
        client.stop()
        client.close()
    all_acked.sort()
    each.sort()
    result = {
        "watchers": watchers,
        "processes": len(workers),
        "sink": sink,
        "all_acked_p50_ms": percentile(all_acked, 50) * 1e3,
        "all_acked_p99_ms": percentile(all_acked, 99) * 1e3,
        "each_ack_p50_ms": percentile(each, 50) * 1e3,
        "each_ack_p99_ms": percentile(each, 99) * 1e3,
    }
    print(
        f"{watchers} x {sink}: all acknowledged p50 {result['all_acked_p50_ms']:.0f} ms, "
        f"p99 {result['all_acked_p99_ms']:.0f} ms; one watcher p50 "
        f"{result['each_ack_p50_ms']:.0f} ms, p99 {result['each_ack_p99_ms']:.0f} ms"
    )
    return result


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--worker"]:
        worker(argv[2], Path(argv[3]), argv[4], int(argv[5]), int(argv[6]))
        return
    out = Path(argv[1] if len(argv) > 1 else "bench-results/watch_fanout.json")
    base = Path(tempfile.mkdtemp(prefix="agrajag-fanout-"))
    zk = ZkEnsemble(1)
    try:
        zk.start()
        passes = [measure(zk.hosts, base / f"{n}-{sink}", n, sink) for n, sink in PASSES]
    finally:
        zk.stop()
        shutil.rmtree(base, ignore_errors=True)
        for path in procs.DIRS:
            shutil.rmtree(path, ignore_errors=True)
    result = {
        "benchmark": "watch_fanout",
        "rounds": ROUNDS,
        "passes": passes,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv)
