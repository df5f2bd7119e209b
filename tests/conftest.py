"""Fixtures that start real ZooKeeper, PostgreSQL + repmgr, HAProxy and PgBouncer, and stop them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tools.harness import procs
from tools.harness.agrajag import hooked_cluster
from tools.harness.postgres import PgCluster
from tools.harness.proxies import HAProxy, PgBouncer
from tools.harness.watch import WatchProc
from tools.harness.zookeeper import ZkEnsemble


@pytest.fixture
def zk() -> Iterator[ZkEnsemble]:
    """A standalone ZooKeeper server."""
    ensemble = ZkEnsemble(1)
    try:
        yield ensemble.start()
    finally:
        ensemble.stop()


@pytest.fixture
def zk3() -> Iterator[ZkEnsemble]:
    """A 3-server ZooKeeper ensemble whose servers the test may stop, kill or freeze."""
    ensemble = ZkEnsemble(3)
    try:
        yield ensemble.start()
    finally:
        ensemble.stop()


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """Primary node1 and standbys node2, node3 with repmgrd in automatic-failover mode."""
    cluster = PgCluster(3)
    try:
        cluster.create()
        cluster.start_repmgrd()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster_with_hook() -> Iterator[PgCluster]:
    """`pg_cluster` set up as agrajag's users run it: repmgr's event hook as conf.d ships it
    on each node, and the heartbeat table of conf.d's SQL exists."""
    with hooked_cluster() as cluster:
        yield cluster


@pytest.fixture
def haproxy() -> Iterator[HAProxy]:
    proxy = HAProxy()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def watchers(tmp_path: Path, zk: ZkEnsemble) -> Iterator[Callable[..., WatchProc]]:
    """Start `agrajag watch` processes (from conf.d's example); all are stopped at the end."""
    started: list[WatchProc] = []

    def start(agent: str = "app1", **overrides: object) -> WatchProc:
        proc = WatchProc(tmp_path / agent, zk.hosts, agent=agent, **overrides).start()
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail the run if any process or listening port the harness started outlives the suite."""
    yield
    alive = [p for p in procs.STARTED if p.alive()]
    # A unit test's in-process server (port 0) may get a port a finished test had: not a leak.
    own = {c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"}
    ports = [f"127.0.0.1:{p}" for p in sorted(procs.PORTS - own) if procs.listening(p)]
    ports += [f"{h}:{p}" for h, p in sorted(procs.ENDPOINTS) if procs.listening(p, h)]
    for proc in alive:
        proc.kill()
    if not alive and not ports and not os.environ.get("AGRAJAG_KEEP_DIRS"):
        for path in procs.DIRS:
            shutil.rmtree(path, ignore_errors=True)
    assert not alive, f"processes outlived the suite: {[p.name for p in alive]}"
    assert not ports, f"ports still listening after the suite: {ports}"
