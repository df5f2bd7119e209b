"""The metrics each process exports: names, types, labels, units, and `promtool check metrics`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agrajag.metrics import SESSION_STATES, DaemonMetrics, WatcherMetrics, trigger_label
from agrajag.registry.values import Session
from tests.promtool import check_metrics, daemon_sample, exposition, watcher_sample

Sample = Callable[[], DaemonMetrics | WatcherMetrics]

#: What PromQL sees (series names), with the family's type and label names. `_created`
#: series (prometheus_client's counter/histogram creation times) are left out.
DAEMON: dict[str, tuple[str, set[str]]] = {
    "agrajag_polls_total": ("counter", {"cluster", "trigger"}),
    "agrajag_wakeup_datagrams_total": ("counter", {"cluster", "result"}),
    "agrajag_poll_duration_seconds_bucket": ("histogram", {"cluster", "le"}),
    "agrajag_poll_duration_seconds_count": ("histogram", {"cluster"}),
    "agrajag_poll_duration_seconds_sum": ("histogram", {"cluster"}),
    "agrajag_decisions_total": ("counter", {"cluster", "decision", "reason"}),
    "agrajag_publishes_total": ("counter", {"cluster", "result"}),
    "agrajag_master_epoch": ("gauge", {"cluster"}),
    "agrajag_master_info": ("gauge", {"cluster", "node"}),
    "agrajag_zookeeper_session": ("gauge", {"cluster", "agrajag_zookeeper_session"}),
    "agrajag_probe_results_total": ("counter", {"cluster", "node", "outcome"}),
    "agrajag_probe_latency_seconds_bucket": ("histogram", {"cluster", "node", "le"}),
    "agrajag_probe_latency_seconds_count": ("histogram", {"cluster", "node"}),
    "agrajag_probe_latency_seconds_sum": ("histogram", {"cluster", "node"}),
    "agrajag_split_brain_suspected": ("gauge", {"cluster"}),
    "agrajag_live_daemons": ("gauge", {"cluster"}),
    "agrajag_repmgr_nodes": ("gauge", {"cluster"}),
    "agrajag_last_publish_timestamp_seconds": ("gauge", {"cluster"}),
}
WATCHER: dict[str, tuple[str, set[str]]] = {
    "agrajag_watch_published_epoch": ("gauge", {"cluster"}),
    "agrajag_watch_applied_epoch": ("gauge", {"cluster"}),
    "agrajag_watch_last_apply_timestamp_seconds": ("gauge", {"sink"}),
    "agrajag_watch_applies_total": ("counter", {"sink", "result"}),
    "agrajag_watch_refused_records_total": ("counter", {"cluster", "reason"}),
    "agrajag_watch_refusing": ("gauge", {"cluster", "reason"}),
    "agrajag_watch_registry_connected": ("gauge", set()),
    "agrajag_watch_fail_mode": ("gauge", {"agrajag_watch_fail_mode"}),
}
#: Labels whose values come from a small fixed set (or the cluster's few nodes / sinks).
BOUNDED = {
    "cluster", "node", "sink", "reason", "result", "outcome", "decision", "trigger", "le",
    "agrajag_zookeeper_session", "agrajag_watch_fail_mode",
}  # fmt: skip


def series(text: bytes) -> dict[str, tuple[str, set[str]]]:
    found: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            _, labels = found.get(sample.name, (family.type, set()))
            found[sample.name] = (family.type, labels | set(sample.labels))
    return found


@pytest.mark.parametrize(
    ("sample", "expected"),
    [(daemon_sample, DAEMON), (watcher_sample, WATCHER)],
    ids=["daemon", "watcher"],
)
def test_every_metric_has_its_name_type_and_labels(
    sample: Sample, expected: dict[str, tuple[str, set[str]]]
) -> None:
    assert series(exposition(sample())) == expected


@pytest.mark.parametrize("sample", [daemon_sample, watcher_sample], ids=["daemon", "watcher"])
def test_promtool_check_metrics_is_clean(sample: Sample) -> None:
    assert check_metrics(exposition(sample())) == ""


def test_conventions() -> None:
    for name, (kind, labels) in {**DAEMON, **WATCHER}.items():
        assert name.startswith("agrajag_"), name
        assert (kind == "counter") == name.endswith("_total"), name
        if kind == "histogram" or "timestamp" in name:
            assert "_seconds" in name, f"{name}: time in seconds"
        assert labels <= BOUNDED, f"{name}: unbounded label(s) {labels - BOUNDED}"
    assert all(name.startswith("agrajag_watch_") for name in WATCHER)
    assert not any(name.startswith("agrajag_watch_") for name in DAEMON)


def test_before_any_round_only_the_unlabelled_and_state_metrics_have_series() -> None:
    """Labelled metrics appear at their first use: an alert on them cannot fire from a 0."""
    empty = series(exposition(DaemonMetrics()))
    assert empty == {}
    watcher = series(exposition(WatcherMetrics()))
    assert watcher == {
        "agrajag_watch_registry_connected": ("gauge", set()),
        "agrajag_watch_fail_mode": ("gauge", {"agrajag_watch_fail_mode"}),
    }


def test_the_session_enum_exports_one_series_per_state_named_after_the_metric() -> None:
    m = DaemonMetrics()
    m.session.labels("main").state("suspended")
    values = {
        s.labels["agrajag_zookeeper_session"]: s.value
        for f in text_string_to_metric_families(exposition(m).decode())
        for s in f.samples
    }
    assert values == {"connected": 0, "suspended": 1, "lost": 0}
    assert [s.value for s in Session] == SESSION_STATES


def test_processes_in_one_interpreter_do_not_share_metrics() -> None:
    a, b = DaemonMetrics(), DaemonMetrics(CollectorRegistry())
    a.master_epoch.labels("main").set(5)
    assert "agrajag_master_epoch" in series(exposition(a))
    assert "agrajag_master_epoch" not in series(exposition(b))


@pytest.mark.parametrize(
    "trigger",
    ["notify_standby_promote", "notify_" + "x" * 500, "notify_", "session_lost", "whatever"],
)
def test_the_trigger_label_is_bounded(trigger: str) -> None:
    allowed = {"start", "poll", "reread", "sighup", "notify", "other"}
    allowed |= {f"session_{s.value}" for s in Session}
    assert trigger_label(trigger) in allowed
