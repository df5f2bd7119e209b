"""The metrics of real `agrajag daemon` and `agrajag watch` processes, scraped over HTTP, while
a real repmgr cluster fails over and a real ZooKeeper goes away: the values the shipped alert
rules (conf.d/agrajag-alerts.yml) read move as the rules expect, and every scrape passes
`promtool check metrics`."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.promtool import check_metrics
from tools.harness.agrajag import DaemonProc, Daemons
from tools.harness.postgres import PgCluster
from tools.harness.procs import wait_until
from tools.harness.records import master_record
from tools.harness.shipped import CONF_D
from tools.harness.watch import Publisher, WatchProc
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


class Scrape:
    """One scrape of a metrics endpoint, already checked by `promtool check metrics`."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            self.raw: bytes = answer.read()
        self.samples = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(self.raw.decode())
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the series of `name` with these labels; None when there is none."""
        found = [
            v for n, ls, v in self.samples if n == name and labels.items() <= ls.items()
        ]  # fmt: skip
        return sum(found) if found else None

    def labels(self, name: str, label: str) -> set[str]:
        return {ls[label] for n, ls, _ in self.samples if n == name and label in ls}


def scrape(port: int) -> Scrape:
    s = Scrape(port)
    assert check_metrics(s.raw) == "", s.raw.decode()
    return s


PROCS: list[DaemonProc | WatchProc] = []  # whose log tails a failed wait shows


def eventually(check: Callable[[], object], what: str, timeout: float = 20) -> None:
    """wait_until for checks that scrape: an endpoint not up yet counts as not yet."""
    try:
        wait_until(check, timeout=timeout, what=what, interval=0.2)
    except TimeoutError as exc:
        tails = "\n".join(f"--- {p.proc.name}\n{p.proc.tail(15)}" for p in PROCS)
        raise AssertionError(f"{exc}\n{tails}") from None


class ScrapedDaemons(Daemons):
    def start(self) -> None:
        super().start()
        PROCS.extend(self.procs.values())

    def scrape(self, *names: str) -> dict[str, Scrape]:
        return {n: scrape(self.procs[n].metrics_port) for n in names or self.procs}

    def total(self, name: str, **labels: str) -> float:
        """A metric summed over every daemon, as a rule's `sum by (cluster)` sees it."""
        return sum(s.value(name, **labels) or 0 for s in self.scrape().values())


@pytest.fixture
def daemons(zk: ZkEnsemble, cluster_with_hook: PgCluster) -> Iterator[ScrapedDaemons]:
    d = ScrapedDaemons(zk.hosts, cluster_with_hook.nodes)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(autouse=True)
def forget_procs() -> Iterator[None]:
    yield
    PROCS.clear()


def watch_scrape(watch: WatchProc) -> Scrape:
    return scrape(watch.metrics_port)


def test_daemon_metrics_through_failover_split_brain_and_zookeeper_outage(
    zk: ZkEnsemble,
    cluster_with_hook: PgCluster,
    daemons: ScrapedDaemons,
    watchers: Callable[..., WatchProc],
) -> None:
    cluster = cluster_with_hook
    daemons.start()
    watch = watchers()
    PROCS.append(watch)
    everyone = tuple(daemons.procs)

    def all_daemons(check: Callable[[Scrape], bool], *names: str) -> bool:
        return all(check(s) for s in daemons.scrape(*(names or everyone)).values())

    # -- first publish: epoch 1, node1, exactly one publish among three daemons ------------
    eventually(
        lambda: all_daemons(
            lambda s: (
                s.value("agrajag_master_epoch", cluster="main") == 1
                and s.value("agrajag_master_info", cluster="main", node="node1") == 1
                and s.value("agrajag_live_daemons", cluster="main") == 3
                and s.value("agrajag_decisions_total", decision="unchanged") is not None
            )
        ),
        "every daemon to export master node1 at epoch 1 with 3 live daemons",
    )
    for s in daemons.scrape().values():
        assert s.value("agrajag_repmgr_nodes", cluster="main") == 3
        assert s.value("agrajag_split_brain_suspected", cluster="main") == 0
        assert s.labels("agrajag_master_info", "node") == {"node1"}
        session = "agrajag_zookeeper_session"
        assert s.value(session, cluster="main", agrajag_zookeeper_session="connected") == 1
        assert s.value(session, cluster="main", agrajag_zookeeper_session="suspended") == 0
        assert s.value("agrajag_probe_results_total", node="node1", outcome="writable")
        assert s.value("agrajag_probe_results_total", node="node2", outcome="read_only")
        assert s.value("agrajag_poll_duration_seconds_count", cluster="main")
        assert s.labels("agrajag_polls_total", "trigger") <= {
            "start", "poll", "notify", "reread", "sighup", "other",
            "session_connected", "session_suspended", "session_lost",
        }  # fmt: skip
    assert daemons.total("agrajag_publishes_total", result="published") == 1
    assert daemons.total("agrajag_decisions_total", decision="publish") == 1
    eventually(
        lambda: (
            (w := watch_scrape(watch)).value("agrajag_watch_applied_epoch", cluster="main") == 1
            and w.value("agrajag_watch_registry_connected") == 1
        ),
        "the watcher to apply epoch 1",
    )
    w = watch_scrape(watch)
    assert w.value("agrajag_watch_published_epoch", cluster="main") == 1
    assert w.value("agrajag_watch_applies_total", sink="app-env", result="changed") == 1
    assert w.value("agrajag_watch_fail_mode", agrajag_watch_fail_mode="open") == 1

    # -- failover: epoch 2, the new node, exactly one more publish --------------------------
    old = cluster.nodes[0]
    old.stop_repmgrd()  # so that it stays a primary when it comes back (no rejoin)
    survivors = ("node2", "node3")
    unreachable_before = {
        n: s.value("agrajag_probe_results_total", node="node1", outcome="unreachable") or 0
        for n, s in daemons.scrape(*survivors).items()
    }
    old.crash()
    new = cluster.wait_promotion(old, timeout=30)
    eventually(
        lambda: all_daemons(
            lambda s: (
                s.value("agrajag_master_epoch", cluster="main") == 2
                and s.labels("agrajag_master_info", "node") == {new.name}
                and s.value("agrajag_master_info", cluster="main", node=new.name) == 1
            ),
        ),
        f"every daemon, the crashed primary's too, to export master {new.name} at epoch 2",
    )
    assert daemons.total("agrajag_publishes_total", result="published") == 2, daemons.logs()
    for n, s in daemons.scrape(*survivors).items():
        unreachable = s.value("agrajag_probe_results_total", node="node1", outcome="unreachable")
        assert (unreachable or 0) > unreachable_before[n], n
    eventually(
        lambda: watch_scrape(watch).value("agrajag_watch_applied_epoch", cluster="main") == 2,
        "the watcher to apply epoch 2",
    )
    w = watch_scrape(watch)
    assert w.value("agrajag_watch_published_epoch", cluster="main") == 2
    assert w.value("agrajag_watch_applies_total", sink="app-env", result="changed") == 2
    time.sleep(3)  # three more rounds of every daemon: no second publish, no churn
    assert daemons.total("agrajag_publishes_total", result="published") == 2, daemons.logs()

    # -- the old primary back without rejoin: split brain suspected, nothing published -----
    old.start()
    eventually(
        lambda: any(
            s.value("agrajag_split_brain_suspected", cluster="main") == 1
            for s in daemons.scrape().values()
        ),
        "a daemon to export agrajag_split_brain_suspected 1",
    )
    assert daemons.total("agrajag_decisions_total", decision="refuse", reason="split_brain") > 0
    for s in daemons.scrape(*survivors).values():
        assert s.value("agrajag_master_epoch", cluster="main") == 2
    assert daemons.total("agrajag_publishes_total", result="published") == 2
    old.crash()  # fenced: the suspicion ends by itself
    eventually(
        lambda: all_daemons(
            lambda s: s.value("agrajag_split_brain_suspected", cluster="main") == 0, *survivors
        ),
        "agrajag_split_brain_suspected back to 0",
    )
    # node1's daemon gets no repmgr view with its own node down: it checks nothing, and
    # exports no verdict rather than its last one (a 1 would keep the alert firing).
    eventually(
        lambda: daemons.scrape("node1")["node1"].value("agrajag_split_brain_suspected") is None,
        "node1's daemon to stop exporting its last check's verdict",
    )

    # -- ZooKeeper stopped: sessions not connected, refusals; back when it returns ----------
    def sessions(state: str) -> list[float | None]:
        return [
            s.value("agrajag_zookeeper_session", cluster="main", agrajag_zookeeper_session=state)
            for s in daemons.scrape().values()
        ]

    refused_before = daemons.total(
        "agrajag_decisions_total", decision="refuse", reason="not_connected"
    )
    zk.servers[0].stop()
    eventually(lambda: sessions("connected") == [0, 0, 0], "every daemon to lose its session")
    assert all(
        s.value("agrajag_zookeeper_session", cluster="main") == 1  # exactly one state is 1
        for s in daemons.scrape().values()
    )
    eventually(
        lambda: watch_scrape(watch).value("agrajag_watch_registry_connected") == 0,
        "the watcher to export registry_connected 0",
    )
    eventually(
        lambda: (
            daemons.total("agrajag_decisions_total", decision="refuse", reason="not_connected")
            > refused_before
        ),
        "the daemons to refuse with not_connected",
    )
    zk.servers[0].start()
    zk.servers[0].wait_serving()
    eventually(lambda: sessions("connected") == [1, 1, 1], "every daemon to reconnect", timeout=30)
    eventually(
        lambda: watch_scrape(watch).value("agrajag_watch_registry_connected") == 1,
        "the watcher to reconnect",
        timeout=30,
    )
    assert daemons.total("agrajag_publishes_total", result="published") == 2, daemons.logs()


def test_watcher_metrics_follow_records_refusals_failing_sinks_and_zookeeper(
    zk: ZkEnsemble, tmp_path: Path, watchers: Callable[..., WatchProc]
) -> None:
    publisher = Publisher(zk.hosts)
    try:
        publisher.write(master_record(epoch=1))
        broken = tmp_path / "sink-broken"
        sink = {
            "type": "template",
            "name": "app-env",
            "src": str(CONF_D / "primary.env.j2"),
            "dest": str(tmp_path / "app1" / "primary.env"),
            "check_cmd": f"/usr/bin/test ! -e {broken}",
            "clusters": ["main"],
        }
        watch = watchers(sinks=[sink])
        PROCS.append(watch)

        def applied() -> float | None:
            return watch_scrape(watch).value("agrajag_watch_applied_epoch", cluster="main")

        eventually(lambda: applied() == 1, "epoch 1 applied")
        s = watch_scrape(watch)
        assert s.value("agrajag_watch_published_epoch", cluster="main") == 1
        assert s.value("agrajag_watch_applies_total", sink="app-env", result="changed") == 1
        assert s.value("agrajag_watch_applies_total", result="failed") is None
        assert s.value("agrajag_watch_last_apply_timestamp_seconds", sink="app-env")
        assert s.value("agrajag_watch_registry_connected") == 1

        publisher.write(master_record(2, epoch=2))
        eventually(lambda: applied() == 2, "epoch 2 applied")

        # A record that would roll the master back: refused, counted once, nothing applied.
        publisher.write(master_record(3, epoch=1))
        eventually(
            lambda: (
                watch_scrape(watch).value(
                    "agrajag_watch_refused_records_total", cluster="main", reason="stale_epoch"
                )
                == 1
            ),
            "the stale record to be refused",
        )
        time.sleep(1.5)  # a reconcile or two: the same znode version is not counted again
        s = watch_scrape(watch)
        assert s.value("agrajag_watch_refused_records_total", reason="stale_epoch") == 1
        assert applied() == 2

        # A sink whose check fails: applied stays behind published, failures are counted.
        broken.touch()
        publisher.write(master_record(3, epoch=3))
        eventually(
            lambda: (
                (w := watch_scrape(watch)).value("agrajag_watch_published_epoch", cluster="main")
                == 3
                and (w.value("agrajag_watch_applies_total", sink="app-env", result="failed") or 0)
                >= 2
            ),
            "epoch 3 seen and the sink to fail (and be retried)",
        )
        assert applied() == 2  # AgrajagWatcherNotApplying's condition
        broken.unlink()
        eventually(lambda: applied() == 3, "epoch 3 applied once the check passes")
        s = watch_scrape(watch)
        assert s.value("agrajag_watch_applies_total", sink="app-env", result="changed") == 3

        zk.servers[0].stop()
        eventually(
            lambda: watch_scrape(watch).value("agrajag_watch_registry_connected") == 0,
            "registry_connected 0 with ZooKeeper stopped",
        )
        assert applied() == 3  # fail_mode open: the last config stays
    finally:
        publisher.close()
