"""`agrajag registry show | trim-history | reset` against a real ZooKeeper."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agrajag.record import WatcherAck
from agrajag.registry.errors import RegistryError
from agrajag.registry.maintenance import Maintenance
from agrajag.zookeeper_settings import ZooKeeperSettings
from tests.factories import master_record, node_record
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(zk: ZkEnsemble) -> Iterator[Maintenance]:
    """Cluster `main` after five failovers between node1 and node2 (epochs 1-5, master node1
    on timeline 5), both daemons live, watcher app1 converged and app2 one epoch behind."""
    r = Maintenance.connect(ZooKeeperSettings(zk.hosts), start_timeout=10)
    r.ensure_layout("main")
    for node in ("node1", "node2"):
        r.register_node("main", node_record(node))
    for epoch in range(1, 6):
        record = master_record(2 - epoch % 2, epoch, host="127.0.0.1", timeline=epoch)
        assert r.publish(record, r.read_master("main").version, 0) is None
    r.acknowledge("main", WatcherAck("app1", 5, "2026-11-22T00:00:01Z", {"haproxy": "ok"}))
    r.acknowledge("main", WatcherAck("app2", 4, "2026-11-22T00:00:01Z", {}))
    try:
        yield r
    finally:
        r.close()


def agrajag(zk: ZkEnsemble, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agrajag", "registry", *args, "--zookeeper", zk.hosts],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_show_prints_every_znode_with_its_data(zk: ZkEnsemble, registry: Maintenance) -> None:
    done = agrajag(zk, "show", "--cluster", "main")
    assert done.returncode == 0, done.stderr
    paths = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("/")]
    history = registry.history_names("main")
    assert paths == [
        "/agrajag/main",
        "/agrajag/main/history",
        *(f"/agrajag/main/history/{name}" for name in history),
        "/agrajag/main/master",
        "/agrajag/main/nodes",
        "/agrajag/main/nodes/node1",
        "/agrajag/main/nodes/node2",
        "/agrajag/main/watchers",
        "/agrajag/main/watchers/app1",
        "/agrajag/main/watchers/app2",
    ]
    master = done.stdout.split("/agrajag/main/master")[1].split("/agrajag/main/nodes")[0]
    assert "persistent  version 4" in master
    assert json.loads(master.split("\n", 1)[1])["epoch"] == 5
    assert "/agrajag/main/nodes/node1  ephemeral (session 0x" in done.stdout


def test_show_names_an_unknown_cluster(zk: ZkEnsemble, registry: Maintenance) -> None:
    done = agrajag(zk, "show", "--cluster", "nosuch")
    assert done.returncode == 2
    assert "no cluster 'nosuch' under /agrajag" in done.stderr


def test_trim_history_keeps_the_newest_entries(zk: ZkEnsemble, registry: Maintenance) -> None:
    names = registry.history_names("main")
    dry = agrajag(zk, "trim-history", "--cluster", "main", "--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"5 history entries; would delete 3 ({names[0]} .. {names[2]}), keeping 2" in dry.stdout
    assert registry.history_names("main") == names

    done = agrajag(zk, "trim-history", "--cluster", "main", "--keep", "2")
    assert done.returncode == 0, done.stderr
    assert registry.history_names("main") == names[3:]
    assert [r.epoch for r in registry.history("main")] == [4, 5]
    assert registry.read_master("main").last_epoch == 5


def test_trim_history_refuses_to_keep_nothing(zk: ZkEnsemble, registry: Maintenance) -> None:
    done = agrajag(zk, "trim-history", "--cluster", "main", "--keep", "0")
    assert done.returncode == 2
    assert "--keep: must be a whole number >= 1, got '0'" in done.stderr
    assert len(registry.history_names("main")) == 5


def test_reset_deletes_the_master_above_every_epoch_in_use(
    zk: ZkEnsemble, registry: Maintenance
) -> None:
    """A watcher acknowledged epoch 7 (say, from before a trim): the reset entry must be
    above it, and the daemons' next publish above that, or the watcher would refuse it."""
    registry.acknowledge("main", WatcherAck("app3", 7, "2026-11-22T00:00:02Z", {}))
    done = agrajag(zk, "reset", "--cluster", "main", "--reason", "rebuilt from backup", "--yes")
    assert done.returncode == 0, done.stderr
    assert "highest epoch in use 7" in done.stdout

    current = registry.read_master("main")
    assert (current.record, current.version) == (None, -1)
    assert registry.epoch_floor("main") == 8  # what a daemon's next publish adds 1 to
    entry = registry.history("main", last=1)[0]
    me = f"{getpass.getuser()}@"
    assert entry.epoch == 8 and entry.published_by.startswith(me) and entry.timeline is None
    assert entry.evidence["reset"]["reason"] == "rebuilt from backup"
    assert entry.evidence["reset"]["previous_epoch"] == 5

    # the rebuilt cluster's primary, on timeline 1, is published as the next epoch
    rebuilt = master_record(2, 9, host="127.0.0.1", timeline=1)
    assert registry.publish(rebuilt, current.version, 0) is None
    assert registry.read_master("main").record == rebuilt


def test_reset_asks_for_the_cluster_name(zk: ZkEnsemble, registry: Maintenance) -> None:
    before = registry.read_master("main")
    for answer in ("", "yes\n", "other\n"):
        done = agrajag(zk, "reset", "--cluster", "main", "--reason", "r", stdin=answer)
        assert done.returncode == 1, done.stderr
        assert "not confirmed: nothing changed" in done.stderr
    assert registry.read_master("main") == before

    done = agrajag(zk, "reset", "--cluster", "main", "--reason", "r", stdin="main\n")
    assert done.returncode == 0, done.stderr
    assert registry.read_master("main").record is None


def test_reset_dry_run_changes_nothing(zk: ZkEnsemble, registry: Maintenance) -> None:
    before = (registry.read_master("main"), registry.history_names("main"))
    done = agrajag(zk, "reset", "--cluster", "main", "--reason", "r", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "add history entry epoch 6" in done.stdout
    assert "dry run: nothing changed" in done.stdout
    assert (registry.read_master("main"), registry.history_names("main")) == before


def test_reset_refuses_when_a_daemon_published_meanwhile(registry: Maintenance) -> None:
    read = registry.read_master("main")
    newer = master_record(2, 6, host="127.0.0.1", timeline=6)
    assert registry.publish(newer, read.version, 0) is None
    entry = master_record(1, 7, host="127.0.0.1", published_by="root@ops")
    with pytest.raises(RegistryError, match="the master changed since it was read"):
        registry.reset("main", entry, read.version)
    assert registry.read_master("main").record == newer
    assert registry.history("main", last=1)[0] == newer


def test_reset_of_an_absent_master_refuses_when_one_appears(registry: Maintenance) -> None:
    """Read as absent (-1), but a daemon created it since: the multi-op fails whole."""
    entry = master_record(1, 7, host="127.0.0.1", published_by="root@ops")
    with pytest.raises(RegistryError, match="the master changed since it was read"):
        registry.reset("main", entry, -1)
    assert registry.read_master("main").record is not None
    assert len(registry.history_names("main")) == 5


def test_a_second_reset_before_any_publish_goes_higher_again(
    zk: ZkEnsemble, registry: Maintenance
) -> None:
    for epoch in (6, 7):
        done = agrajag(zk, "reset", "--cluster", "main", "--reason", "again", "--yes")
        assert done.returncode == 0, done.stderr
        assert f"reset at epoch {epoch}" in done.stdout
    assert "no readable master (absent)" in done.stdout
    assert registry.epoch_floor("main") == 7


def test_status_shows_who_reset_a_cluster_and_why(zk: ZkEnsemble, registry: Maintenance) -> None:
    done = agrajag(zk, "reset", "--cluster", "main", "--reason", "rebuilt from backup", "--yes")
    assert done.returncode == 0, done.stderr
    status = subprocess.run(
        [sys.executable, "-m", "agrajag", "status", "--zookeeper", zk.hosts, "--cluster", "main"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "main: NO MASTER PUBLISHED" in status.stdout
    newest = next(line for line in status.stdout.splitlines() if "epoch 6:" in line)
    assert f"by {getpass.getuser()}@" in newest
    assert newest.endswith("RESET: 'rebuilt from backup'")
