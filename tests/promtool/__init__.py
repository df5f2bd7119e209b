"""promtool (Debian's `prometheus` package; `make setup` installs it) and a filled-in sample of
every metric agrajag exports, for the metric and alert-rule tests.

The `*.test.yml` files beside this one are `promtool test rules` unit tests of
conf.d/agrajag-alerts.yml.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from agrajag.metrics import SESSION_STATES, DaemonMetrics, WatcherMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "conf.d" / "agrajag-alerts.yml"
RULE_TESTS = sorted(Path(__file__).parent.glob("*.yml"))
README = ROOT / "README.md"


def promtool_path() -> str:
    """The promtool binary; a missing one is a failure (CI installs it), never a skip."""
    path = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(path).is_file(), "promtool is missing: `make setup` installs Debian's prometheus"
    return path


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with a bound; stdout and stderr merged into `.stdout`."""
    return subprocess.run(
        [promtool_path(), *args],
        input=stdin.decode() if stdin is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def check_metrics(exposition: bytes) -> str:
    """`promtool check metrics` on a scrape; returns its complaints ("" when it is clean)."""
    result = promtool("check", "metrics", stdin=exposition)
    return "" if result.returncode == 0 and not result.stdout.strip() else result.stdout


def daemon_sample() -> DaemonMetrics:
    """A daemon's metrics with one sample in every metric, as after a failover round."""
    m = DaemonMetrics()
    m.polls.labels("main", "notify").inc()
    m.wakeups.labels("main", "accepted").inc()
    m.poll_duration.labels("main").observe(0.05)
    m.decisions.labels("main", "publish", "ok").inc()
    m.decisions.labels("main", "refuse", "check_failed").inc()
    m.publishes.labels("main", "published").inc()
    m.master_epoch.labels("main").set(2)
    m.master.labels("main", "node2").set(1)
    m.session.labels("main").state(SESSION_STATES[0])
    m.probe_results.labels("main", "node1", "unreachable").inc()
    m.probe_latency.labels("main", "node1").observe(0.004)
    m.split_brain.labels("main").set(0)
    m.live_daemons.labels("main").set(3)
    m.repmgr_nodes.labels("main").set(3)
    m.last_publish.labels("main").set(1.7e9)
    return m


def watcher_sample() -> WatcherMetrics:
    """A watcher's metrics with one sample in every metric."""
    m = WatcherMetrics()
    m.published_epoch.labels("main").set(2)
    m.applied_epoch.labels("main").set(2)
    m.last_apply.labels("haproxy").set(1.7e9)
    m.applies.labels("haproxy", "changed").inc()
    m.refused.labels("main", "stale_epoch").inc()
    m.refusing.labels("main", "stale_epoch").set(1)
    m.connected.set(1)
    m.fail_mode.state("open")
    return m


def exposition(metrics: DaemonMetrics | WatcherMetrics) -> bytes:
    return generate_latest(metrics.registry)
