"""The run every failover benchmark shares: one ZooKeeper for the whole run, a fresh cluster
per failover (its set-up rebuilt when it fails), and Ctrl-C or SIGTERM stopping after the
current failover with the results so far."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from kazoo.client import KazooClient

from tools.harness import procs
from tools.harness.zookeeper import ZkEnsemble

P = TypeVar("P")
S = TypeVar("S")
SETUP_ATTEMPTS = 3


class SetupFailed(Exception):
    """The cluster or the daemons did not come up healthy: not a failover sample, retry."""


def run_failovers(
    plan: Sequence[tuple[str, P]],
    one: Callable[[ZkEnsemble, KazooClient, P, int], S],
    show: Callable[[S], str],
    *,
    keep: bool = False,
) -> tuple[list[S], list[str]]:
    """`one(zk, client, item, attempt)` for each (label, item) of the plan, printing
    `label show(sample)` after each; returns the samples and the set-ups that were rebuilt."""
    started = time.monotonic()
    samples: list[S] = []
    setup_failures: list[str] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        print("stopping after this failover (results so far are written)", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    zk = ZkEnsemble(1)
    client: KazooClient | None = None
    try:
        zk.start()
        client = KazooClient(hosts=zk.hosts, timeout=10)
        client.start(timeout=20)
        for k, (label, item) in enumerate(plan, 1):
            if stop.is_set():
                break
            t0 = time.monotonic()
            for attempt in range(SETUP_ATTEMPTS):
                try:
                    sample = one(zk, client, item, attempt)
                    break
                except SetupFailed as exc:
                    setup_failures.append(f"{label}: {exc}")
            else:
                raise SystemExit(f"{SETUP_ATTEMPTS} set-ups in a row failed: {setup_failures}")
            samples.append(sample)
            print(
                f"[{k:>3}/{len(plan)}] {label} {show(sample)}"
                f"  [{time.monotonic() - t0:.1f} s, total {time.monotonic() - started:.0f} s]",
                flush=True,
            )
    finally:
        if client is not None:
            client.stop()
            client.close()
        zk.stop()
        for p in procs.STARTED:
            if p.alive():
                p.kill()
        if not keep:
            shutil.rmtree(zk.servers[0].dir.parent, ignore_errors=True)
    return samples, setup_failures
