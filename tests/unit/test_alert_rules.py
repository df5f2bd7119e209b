"""conf.d/agrajag-alerts.yml: promtool accepts it, its unit tests pass (tests/promtool/), every
alert is documented and tested, and every metric, label and value it uses is one agrajag exports.

promtool is a real binary that CI installs (`make setup`): without it these tests fail.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agrajag.daemon.probe_values import Outcome
from agrajag.metrics import SESSION_STATES
from agrajag.reasons import Reason
from agrajag.watch.rules import Reason as WatchReason
from tests.promtool import (
    README,
    RULE_TESTS,
    RULES,
    daemon_sample,
    exposition,
    promtool,
    promtool_path,
    watcher_sample,
)

SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}
#: Label values the processes write (agrajag/daemon.py, agrajag/watch_sinks.py; the
#: integration tests see them come out of the real processes).
VALUES: dict[tuple[str, str], set[str]] = {
    ("agrajag_decisions_total", "decision"): {"publish", "unchanged", "refuse"},
    ("agrajag_decisions_total", "reason"): {"ok", *(r.value for r in Reason)},
    ("agrajag_publishes_total", "result"): {
        "error",
        "published",
        Reason.LOST_RACE.value,
        Reason.GUARD_MISSING.value,
    },
    ("agrajag_probe_results_total", "outcome"): {o.value for o in Outcome},
    ("agrajag_zookeeper_session", "agrajag_zookeeper_session"): set(SESSION_STATES),
    ("agrajag_watch_applies_total", "result"): {"changed", "unchanged", "failed"},
    ("agrajag_watch_refused_records_total", "reason"): {r.value for r in WatchReason},
    ("agrajag_watch_fail_mode", "agrajag_watch_fail_mode"): {"open", "closed"},
}
SELECTOR = re.compile(r"\b(agrajag_\w+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exported() -> dict[str, set[str]]:
    """Series name -> label names, as the processes expose them."""
    names: dict[str, set[str]] = {}
    for sample in (daemon_sample, watcher_sample):
        for family in text_string_to_metric_families(exposition(sample()).decode()):
            for s in family.samples:
                names.setdefault(s.name, set()).update(s.labels)
    return names


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_is_installed() -> None:
    result = promtool("--version")
    assert result.returncode == 0, result.stdout
    assert promtool_path()


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no tests/promtool/*.yml"
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    readme = README.read_text()
    section = readme.split("\n## Alerts and runbook\n", 1)
    assert len(section) == 2, "README.md has no '## Alerts and runbook' section"
    anchors = {slug(h) for h in re.findall(r"^### (.+)$", section[1], re.M)}
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"Agrajag[A-Z]\w+", name), name
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}, name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert rule["annotations"]["runbook"] == f"README.md#{name.lower()}", name
        assert name.lower() in anchors, f"README.md has no '### {name}' under the section"


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert firing | silent <= names, "tests of alerts that do not exist"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_the_rule_uses_only_exported_metrics_labels_and_values(rule: dict[str, Any]) -> None:
    series = exported()
    expr = re.sub(r"#.*", "", rule["expr"])
    for name, matchers in SELECTOR.findall(expr):
        assert name in series, f"{name} is not exported (have: {sorted(series)})"
        for label, op, value in MATCHER.findall(matchers):
            assert label in series[name], f"{name} has no label {label}"
            allowed = VALUES.get((name, label))
            if allowed is None:
                continue
            used = set(value.split("|")) if op in ("=~", "!~") else {value}
            assert used <= allowed, f"{name}{{{label}}}: {used - allowed} never written"
    for label in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        for name in filter(None, (x.strip() for x in label.split(","))):
            target = name in ("instance", "job")  # added by Prometheus at the scrape
            assert target or any(name in labels for labels in series.values()), name
