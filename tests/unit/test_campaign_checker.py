"""The fault campaign's checker on synthetic histories: a clean one passes, each violation is
found (and only by its own rule)."""

from __future__ import annotations

import dataclasses

from tools.campaign.checker import WriteReport, check, routes, write_report
from tools.campaign.history import (
    AckSample,
    ConfigSample,
    Exit,
    Fault,
    History,
    PgSample,
    Record,
    Seen,
    Write,
)

HOSTS = {"node1": "10.250.0.1", "node2": "10.250.0.2"}


def record(at: float, epoch: int, node: str, timeline: int) -> Record:
    return Record(at, epoch, node, HOSTS[node], 5432, timeline)


def haproxy(node: str | None, epoch: int = 1) -> str:
    server = f"    server primary {HOSTS[node]}:5432 check inter 1s\n" if node else ""
    return f"global\nlisten main\n    bind 10.250.0.9:5000\n    # epoch {epoch}\n{server}"


def databases(node: str) -> str:
    return f"[databases]\nrepmgr = host={HOSTS[node]} port=5432 dbname=repmgr\n"


def clean() -> History:
    """node1 primary on timeline 1; it crashes at 20 (fault until 30), node2 is promoted on
    timeline 2 and published at 23; app1 follows; one write acked by node1 just before the
    crash is lost (asynchronous replication), the others are all there."""
    h = History(seed=7, schedule=["node_crash primary"], start=0.0, end=60.0, apps=["app1"])
    h.records = [record(1.0, 1, "node1", 1), record(23.0, 2, "node2", 2)]
    h.seen = [Seen(1.1, 1, "node1"), Seen(23.1, 2, "node2")]
    h.pg = [PgSample(t, "node1", "primary", 1) for t in (0.5, 1.2, 10.0, 19.9)]
    h.pg += [PgSample(t, "node1", "down") for t in (20.2, 25.0)]
    h.pg += [PgSample(t, "node2", "standby") for t in (0.5, 10.0, 21.0)]
    h.pg += [PgSample(t, "node2", "primary", 2) for t in (22.8, 23.3, 40.0)]
    h.configs = [
        ConfigSample(0.2, "app1", "haproxy", haproxy(None), True),
        ConfigSample(1.2, "app1", "haproxy", haproxy("node1"), True),
        ConfigSample(23.2, "app1", "haproxy", haproxy("node2", 2), True),
        ConfigSample(1.2, "app1", "pgbouncer", databases("node1"), True),
        ConfigSample(23.2, "app1", "pgbouncer", databases("node2"), True),
    ]
    h.acks = [AckSample(1.3, "app1", 1), AckSample(23.3, "app1", 2), AckSample(35.0, "app1", 2)]
    h.exits = [Exit(20.0, "agrajag-daemon-node1", -9, expected=True)]
    h.faults = [Fault(20.0, 30.0, "node_crash", "node1")]
    h.writes = [
        Write(5.0, "haproxy", 1, True, "node1", 1),
        Write(19.9, "haproxy", 2, True, "node1", 1),
        Write(21.0, "haproxy", 3, False, error="connection refused"),
        Write(24.0, "haproxy", 4, True, "node2", 2),
    ]
    h.present = [("haproxy", 1), ("haproxy", 4)]
    return h


def rules(h: History) -> list[str]:
    return [v.rule for v in check(h)]


def test_a_clean_history_passes_and_its_async_loss_is_reported() -> None:
    h = clean()
    assert check(h) == []
    assert write_report(h) == WriteReport(
        attempted=4,
        acknowledged=3,
        acknowledged_superseded=0,
        lost_to_failover=1,
        lost_to_split_brain=0,
        lost_otherwise=0,
    )


def test_the_history_survives_json() -> None:
    h = clean()
    assert History.from_json(h.to_json()) == h


def test_a_record_naming_a_standby_is_found() -> None:
    h = clean()
    h.records[1] = record(21.0, 2, "node2", 2)  # published while node2 was still a standby
    assert rules(h) == ["published_non_primary"]


def test_a_record_with_the_wrong_timeline_is_found() -> None:
    h = clean()
    h.records[1] = record(23.0, 2, "node2", 1)
    assert "published_non_primary" in rules(h)


def test_a_record_of_a_dead_node_is_found() -> None:
    h = clean()
    h.records.append(record(25.0, 3, "node1", 1))
    assert "published_non_primary" in rules(h)


def test_epochs_going_back_are_found_in_history_and_in_the_watch() -> None:
    h = clean()
    h.records[1] = dataclasses.replace(h.records[1], epoch=1)
    assert "epochs_not_increasing" in rules(h)
    h = clean()
    h.seen.append(Seen(30.0, 1, "node1"))
    assert rules(h) == ["epochs_not_increasing"]


def test_two_nodes_named_on_one_timeline_are_found() -> None:
    h = clean()
    h.pg += [PgSample(t, "node2", "primary", 1) for t in (23.2, 23.4)]
    h.records[1] = record(23.0, 2, "node2", 1)
    assert set(rules(h)) == {"two_masters_one_timeline"}


def test_a_watcher_that_does_not_converge_after_the_heal_is_found() -> None:
    h = clean()
    h.acks = [a for a in h.acks if a.epoch == 1]
    assert rules(h) == ["watcher_not_converged"]


def test_a_watcher_may_lag_while_a_fault_lasts() -> None:
    h = clean()
    h.acks = [AckSample(1.3, "app1", 1), AckSample(38.0, "app1", 2)]  # 8 s after the heal
    assert check(h) == []


def test_blank_invalid_and_serverless_configs_are_found() -> None:
    for text, valid in (("", True), (haproxy("node1"), False), (haproxy(None), True)):
        h = clean()
        h.configs.append(ConfigSample(30.0, "app1", "haproxy", text, valid, "haproxy -c: bad"))
        assert rules(h) == ["bad_proxy_config"], text


def test_a_withdrawn_master_may_route_nowhere_and_needs_no_primary() -> None:
    """node1, back on timeline 1 after node2's promotion, is withdrawn at 30 (node1 takes
    writes again, so no PostgreSQL sample confirms it as the primary of its timeline):
    the configs route nowhere until node2 is published at 40."""
    h = clean()
    h.records = [
        record(1.0, 1, "node1", 1),
        dataclasses.replace(record(30.0, 2, "node1", 1), withdrawn="node1 is a former primary"),
        record(40.0, 3, "node2", 2),
    ]
    h.seen = [Seen(1.1, 1, "node1"), Seen(30.1, 2, "node1"), Seen(40.1, 3, "node2")]
    h.configs[2:] = [
        ConfigSample(30.2, "app1", "haproxy", haproxy(None, 2), True),
        ConfigSample(40.2, "app1", "haproxy", haproxy("node2", 3), True),
        ConfigSample(1.2, "app1", "pgbouncer", databases("node1"), True),
        ConfigSample(40.2, "app1", "pgbouncer", databases("node2"), True),
    ]
    h.acks = [AckSample(1.3, "app1", 1), AckSample(30.3, "app1", 2), AckSample(40.3, "app1", 3)]
    assert check(h) == []
    h.configs.append(ConfigSample(40.5, "app1", "pgbouncer", "[databases]\n", True))
    assert check(h) == []  # the watcher read the withdrawal just before node2's publication
    h.configs.append(ConfigSample(45.0, "app1", "haproxy", haproxy(None, 3), True))
    assert rules(h) == ["bad_proxy_config"]  # nowhere again, long after node2's publication


def test_a_config_routing_to_an_unpublished_address_is_found() -> None:
    h = clean()
    h.configs.append(ConfigSample(10.0, "app1", "haproxy", haproxy("node2"), True))
    assert rules(h) == ["bad_proxy_config"]


def test_an_agrajag_process_that_exited_is_found() -> None:
    h = clean()
    h.exits.append(Exit(40.0, "agrajag-watch-app1", 1, expected=False))
    assert rules(h) == ["process_exited"]


def test_a_lost_write_no_failover_explains_is_found() -> None:
    h = clean()
    h.present.remove(("haproxy", 4))
    assert rules(h) == ["lost_write"]
    assert write_report(h).lost_otherwise == 1


def test_routes_reads_both_proxies() -> None:
    assert routes("haproxy", haproxy("node2")) == [("10.250.0.2", 5432)]
    text = "[databases]\nrepmgr = host=db1 port=5433 dbname=repmgr\n"
    assert routes("pgbouncer", text) == [("db1", 5433)]


def test_writes_to_a_primary_long_after_a_newer_timeline_was_writable_are_found() -> None:
    h = clean()
    h.pg = [s for s in h.pg if not (s.node == "node1" and s.state == "down")]
    h.pg += [PgSample(t, "node1", "primary", 1) for t in (23.0, 26.0)]  # back, not rejoined
    h.writes += [Write(t, "haproxy", int(t), True, "node1", 1) for t in (23.5, 24.5, 26.0)]
    assert rules(h) == ["write_to_superseded_primary"]  # 26.0 is 3.2 s after node2's 22.8
    report = write_report(h)
    assert (report.acknowledged_superseded, report.lost_to_split_brain) == (3, 3)


def test_writes_within_the_switch_bound_are_only_reported() -> None:
    h = clean()
    h.writes.append(Write(23.5, "haproxy", 5, True, "node1", 1))
    assert check(h) == []
    assert write_report(h).lost_to_split_brain == 1


def test_a_timeline_number_reused_after_its_fork_was_wiped_supersedes_nothing() -> None:
    h = clean()  # node2 reigns on timeline 2 from 22.8; say node1 had been on 3 before
    h.pg += [PgSample(t, "node1", "primary", 3) for t in (12.0, 13.0)]
    h.pg += [PgSample(14.0, "node1", "standby")]  # wiped, re-cloned
    h.pg.sort(key=lambda s: s.at)
    h.writes.append(Write(30.0, "haproxy", 6, True, "node2", 2))
    h.present.append(("haproxy", 6))
    assert check(h) == []
