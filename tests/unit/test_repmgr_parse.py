"""parse_cluster_show on recorded tables, on each repmgr layout, and on bad input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agrajag.daemon.repmgr import ParseError, parse_cluster_show
from agrajag.daemon.view import ClusterView, Node
from agrajag.errors import AgrajagError
from agrajag.reasons import Reason

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "repmgr"


@dataclass(frozen=True)
class Expect:
    primary: str | None
    reasons: tuple[Reason, ...] = ()
    nodes: int = 3


# Every file in tests/fixtures/repmgr and what the daemon must conclude from it.
# To add a capture from a live cluster: drop the file there and add one line here.
EXPECTED = {
    "healthy-5.3-handmade.txt": Expect("node1", nodes=4),
    "standby-down-5.3-handmade.txt": Expect("node1"),
    "primary-down-5.3-handmade.txt": Expect(None, (Reason.NO_PRIMARY,)),
    "after-failover-5.3-handmade.txt": Expect("node2"),
    "after-promote-old-unreachable-5.3-handmade.txt": Expect("node2"),
    "old-primary-back-seen-from-standby-5.3-handmade.txt": Expect(None, (Reason.ANOMALY,)),
    "old-primary-back-seen-from-itself-5.3-handmade.txt": Expect(None, (Reason.ANOMALY,)),
    "compact-5.3-handmade.txt": Expect("node1"),
    "verbose-5.3-handmade.txt": Expect("node1"),
    "repmgr4-handmade.txt": Expect("node2"),
    "repmgr3-handmade.txt": Expect("node1"),
    "repmgr3-two-masters-handmade.txt": Expect(None, (Reason.MULTIPLE_PRIMARIES,)),
    # Captured from the real repmgr 5.3 by `python -m tools.capture_repmgr`.
    "healthy-5.3-real.txt": Expect("node1"),
    "compact-5.3-real.txt": Expect("node1"),
    "verbose-5.3-real.txt": Expect("node1"),
    "standby-down-5.3-real.txt": Expect("node1"),
    "primary-down-5.3-real.txt": Expect(None, (Reason.NO_PRIMARY,)),
    "after-failover-5.3-real.txt": Expect("node2"),
    "old-primary-back-seen-from-standby-5.3-real.txt": Expect(None, (Reason.ANOMALY,)),
    "old-primary-back-seen-from-itself-5.3-real.txt": Expect(None, (Reason.ANOMALY,)),
}


def load(name: str) -> ClusterView:
    return parse_cluster_show((FIXTURES / name).read_text())


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(path.name for path in FIXTURES.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gives_the_expected_primary_and_problems(name: str) -> None:
    view = load(name)
    expect = EXPECTED[name]
    assert (view.primary.name if view.primary else None) == expect.primary
    assert tuple(problem.reason for problem in view.problems) == expect.reasons
    assert len(view.nodes) == expect.nodes


def test_healthy_5_3_fields() -> None:
    view = load("healthy-5.3-handmade.txt")
    conninfo = "host=pg1.db.example.net port=5432 user=repmgr dbname=repmgr connect_timeout=2"
    assert view.nodes[0] == Node(
        node_id=1,
        name="node1",
        role="primary",
        status="running",
        status_marker="*",
        upstream="",
        upstream_marker="",
        location="dc1",
        priority=100,
        timeline=1,
        conninfo=conninfo,
        host="pg1.db.example.net",
        port=5432,
        dbname="repmgr",
    )
    standby = view.nodes[2]
    assert (standby.role, standby.status, standby.status_marker) == ("standby", "running", "")
    assert (standby.upstream, standby.location, standby.priority) == ("node1", "dc2", 50)
    witness = view.by_name("witness1")
    assert witness is not None
    assert (witness.role, witness.status_marker, witness.status) == ("witness", "*", "running")
    assert (witness.timeline, witness.port) == (None, 5499)
    assert not witness.is_running_primary


def test_conninfo_is_kept_out_of_the_repr() -> None:
    assert "connect_timeout" not in repr(load("healthy-5.3-handmade.txt").nodes[0])


def test_unreachable_standby_keeps_its_markers() -> None:
    node = load("standby-down-5.3-handmade.txt").nodes[2]
    assert (node.status_marker, node.status) == ("?", "unreachable")
    assert (node.upstream_marker, node.upstream, node.timeline) == ("?", "node1", None)


def test_two_primary_rows_after_failover() -> None:
    view = load("after-failover-5.3-handmade.txt")
    assert [(n.role, n.status_marker, n.status) for n in view.nodes[:2]] == [
        ("primary", "-", "failed"),
        ("primary", "*", "running"),
    ]
    assert view.primary == view.by_id(2)
    assert view.nodes[0].upstream_marker == "?"


def test_stale_former_primary_sees_itself_running_and_is_not_trusted() -> None:
    view = load("old-primary-back-seen-from-itself-5.3-handmade.txt")
    assert view.nodes[0].is_running_primary
    assert view.primary is None
    (problem,) = view.problems
    assert problem.reason == "anomaly"
    assert "'node2' (ID 2)" in problem.detail and "! running as primary" in problem.detail
    assert (view.nodes[2].upstream_marker, view.nodes[2].upstream) == ("!", "node2")


def test_compact_layout_has_no_connection_string() -> None:
    node = load("compact-5.3-handmade.txt").nodes[1]
    assert (node.priority, node.timeline) == (100, 1)
    assert (node.conninfo, node.host, node.port, node.dbname) == (None, None, None, None)


def test_verbose_capture_skips_log_lines_and_the_warning_after_the_table() -> None:
    verbose = load("verbose-5.3-handmade.txt")
    assert [node.name for node in verbose.nodes] == ["node1", "node2", "node3"]
    assert verbose.nodes[2].status == "unreachable"


def test_repmgr4_has_no_priority_or_timeline() -> None:
    node = load("repmgr4-handmade.txt").nodes[1]
    assert (node.priority, node.timeline) == (None, None)
    assert (node.host, node.port, node.dbname) == ("node2", 5432, "repmgr")  # libpq's default


def test_repmgr3_numbers_nodes_in_table_order_and_maps_roles() -> None:
    view = load("repmgr3-handmade.txt")
    summary = [(n.node_id, n.name, n.role, n.status_marker, n.status) for n in view.nodes]
    assert summary == [
        (1, "node1", "primary", "*", "running"),
        (2, "node2", "standby", "", "running"),
        (3, "node3", "unknown", "", "failed"),
    ]
    assert (view.nodes[1].upstream, view.nodes[1].host) == ("node1", "db2")
    assert view.nodes[0].location == ""


def test_lookups() -> None:
    view = load("after-failover-5.3-handmade.txt")
    assert view.by_name("node3") == view.by_id(3) == view.nodes[2]
    assert view.by_name("node9") is None
    assert view.by_id(9) is None


# Small tables for the cases the recorded ones do not cover.
HEADER = (
    " ID | Name | Role | Status | Upstream | Location | Priority | Timeline | Connection string"
)


def row(
    node_id: str = "1",
    name: str = "node1",
    role: str = "primary",
    status: str = "* running",
    upstream: str = "",
    timeline: str = "1",
    conninfo: str = "host=db1 dbname=repmgr",
    priority: str = "100",
) -> str:
    return " | ".join(
        [node_id, name, role, status, upstream, "default", priority, timeline, conninfo]
    )


def table(*rows: str, header: str = HEADER) -> str:
    separator = "+".join("-" * len(cell) for cell in header.split("|"))
    return "\n".join([header, separator, *rows]) + "\n"


STANDBY = row("2", "node2", "standby", "  running", "node1", conninfo="host=db2")


def test_columns_are_found_by_name_in_any_order_and_unknown_ones_are_ignored() -> None:
    text = table(
        " node2 |  running | standby | 7 | host=db2 port=6432 | 2 ",
        " node1 | * running | primary | 7 | host=db1 | 1 ",
        header=" NAME | status | Role | TLI | Connection String | id ",
    )
    view = parse_cluster_show(text)
    assert [(n.node_id, n.name, n.timeline) for n in view.nodes] == [
        (2, "node2", 7),
        (1, "node1", 7),
    ]
    assert view.nodes[0].port == 6432
    assert view.primary == view.nodes[1]


def test_log_lines_anywhere_and_crlf_are_tolerated() -> None:
    lines = table(row(), STANDBY).split("\n")
    noisy = "\r\n".join(
        [
            "WARNING: following issues were detected",
            lines[0],
            "HINT: execute with --verbose option to see connection error messages",
            lines[1],
            "DETAIL: something",
            lines[2],
            "ERROR: something else",
            lines[3],
            "",
            "WARNING: after the table",
            '  - unable to connect to node "node3" (ID: 3)',
            "",
        ]
    )
    assert parse_cluster_show(noisy) == parse_cluster_show(table(row(), STANDBY))


def test_master_role_is_normalised_and_unknown_timeline_is_none() -> None:
    view = parse_cluster_show(table(row(role="master", timeline="?")))
    assert (view.nodes[0].role, view.nodes[0].timeline) == ("primary", None)
    assert view.primary == view.nodes[0]


def test_bare_upstream_marker_and_hostaddr() -> None:
    view = parse_cluster_show(table(row(upstream="!", conninfo="hostaddr=10.0.0.1 port=5433")))
    node = view.nodes[0]
    assert (node.upstream_marker, node.upstream) == ("!", "")
    assert (node.host, node.port, node.dbname) == ("10.0.0.1", 5433, None)


@pytest.mark.parametrize(
    ("rows", "reasons"),
    [
        pytest.param(
            [row(), row("2", "node2", "primary", "! running")],
            (Reason.ANOMALY,),
            id="transient-bang-beside-a-running-primary",
        ),
        pytest.param(
            [row(), row("2", "node2", "standby", "!running as primary")],
            (Reason.ANOMALY,),
            id="bang-without-space",
        ),
        pytest.param(
            [row(), row("2", "node2", "primary", "* running")],
            (Reason.MULTIPLE_PRIMARIES,),
            id="two-running-primaries",
        ),
        pytest.param(
            [row(status="? running"), STANDBY],
            (Reason.NO_PRIMARY,),
            id="primary-rejects-connections",
        ),
        pytest.param(
            [row(status="! running as standby"), STANDBY],
            (Reason.NO_PRIMARY, Reason.ANOMALY),
            id="primary-in-recovery",
        ),
        pytest.param(
            [row(status="* running as primary"), STANDBY],
            (Reason.NO_PRIMARY,),
            id="status-is-not-exactly-running",
        ),
        pytest.param(
            [row(role="witness"), STANDBY],
            (Reason.NO_PRIMARY,),
            id="running-witness-is-not-a-primary",
        ),
    ],
)
def test_no_primary_unless_exactly_one_running_primary_and_no_bang(
    rows: list[str], reasons: tuple[Reason, ...]
) -> None:
    view = parse_cluster_show(table(*rows))
    assert view.primary is None
    assert tuple(problem.reason for problem in view.problems) == reasons


def test_problem_reasons_have_stable_names() -> None:
    assert [str(reason) for reason in Reason][:3] == ["no_primary", "multiple_primaries", "anomaly"]
    assert {str(reason) for reason in Reason} >= {  # the names logs, metrics and alerts use
        "split_brain", "check_failed", "stale_timeline", "guard_missing", "not_connected",
        "lost_race", "repmgr_failed", "node_name_taken", "registry_error",
    }  # fmt: skip


def test_multiple_primaries_detail_names_them() -> None:
    view = parse_cluster_show(table(row(), row("2", "node2", "primary", "* running")))
    assert view.problems[0].detail == "primary and '* running': 'node1' (ID 1), 'node2' (ID 2)"


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        pytest.param("", 1, "empty input", id="empty"),
        pytest.param("\n  \n", 1, "empty input", id="blank"),
        pytest.param("ERROR: connection to database failed\n", 1, "no table header", id="error"),
        pytest.param("no table here\nnor here", 1, "no table header", id="words"),
        pytest.param(HEADER, 1, "no '----+----' separator", id="header-only"),
        pytest.param(HEADER + "\n" + row(), 2, "expected the '----+----' separator", id="no-sep"),
        pytest.param(HEADER + "\n----+----\n" + row(), 2, "separator has 2 columns", id="sep"),
        pytest.param(table(), 2, "no node rows", id="no-rows"),
        pytest.param(table("\n" + row()), 4, "table ended (blank line 3)", id="blank-before-rows"),
        pytest.param(
            table(row(conninfo="host=db1 password='a|b'")),
            3,
            "10 cells, the header has 9 (is there a '|' inside a value?)",
            id="pipe-in-conninfo",
        ),
        pytest.param(table(row(), "", STANDBY), 5, "table ended (blank line 4)", id="after-end"),
        pytest.param(table(row(node_id="one")), 3, "ID 'one' is not a node id", id="id-word"),
        pytest.param(table(row(node_id="-1")), 3, "ID '-1' is not a node id", id="id-negative"),
        pytest.param(table(row(node_id="")), 3, "ID '' is not a node id", id="id-empty"),
        pytest.param(table(row(), row(name="node2")), 4, "node ID 1 also on line 3", id="dup-id"),
        pytest.param(table(row(), row("2")), 4, "node name 'node1' also on line 3", id="dup-name"),
        pytest.param(table(row(name="")), 3, "empty Name", id="empty-name"),
        pytest.param(
            table(" 1 | node1 | primary", header=" ID | Name | Role"),
            1,
            "header lacks required column(s): status",
            id="no-status",
        ),
        pytest.param(
            table("* master | host=db1", header="Role      | Connection String"),
            1,
            "header lacks required column(s): name",
            id="3.x-no-name",
        ),
        pytest.param(
            table(" 1 | node1 | primary | * running | x", header=" ID | Name | Role | Status | id"),
            1,
            "column 'id' appears twice",
            id="dup-column",
        ),
        pytest.param(
            table("* primary | node1", header="Role | Name"),
            3,
            "unknown repmgr 3.x role '* primary'",
            id="3.x-role",
        ),
        pytest.param(table(row(priority="high")), 3, "Priority 'high' is not", id="priority"),
        pytest.param(table(row(timeline="one")), 3, "Timeline 'one' is not", id="timeline"),
        pytest.param(
            table(row(conninfo="host=db1 port")), 3, 'missing "=" after "port"', id="conninfo"
        ),
        pytest.param(
            table(row(conninfo="host=db1 port=abc")), 3, "port 'abc' in the", id="port-word"
        ),
        pytest.param(table(row(conninfo="host=db1 port=0")), 3, "port '0' in the", id="port-0"),
    ],
)
def test_bad_input_raises_parse_error_naming_the_line(text: str, lineno: int, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_cluster_show(text)
    assert caught.value.lineno == lineno
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"line {lineno}: ")
    assert isinstance(caught.value, AgrajagError)
