"""parse_cluster_show properties: generated tables round-trip, damaged ones invent no primary."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agrajag.daemon.repmgr import ParseError, parse_cluster_show
from agrajag.daemon.view import Node
from agrajag.reasons import Reason

FAST = settings(max_examples=200, deadline=None)

# Layouts as repmgr prints them: (title, field) in column order.
FULL = (
    ("ID", "id"),
    ("Name", "name"),
    ("Role", "role"),
    ("Status", "status"),
    ("Upstream", "upstream"),
    ("Location", "location"),
    ("Priority", "priority"),
    ("Timeline", "timeline"),
    ("Connection string", "conninfo"),
)
COMPACT = (*FULL[:6], ("Prio.", "priority"), ("TLI", "timeline"))
REPMGR_40 = (*FULL[:6], FULL[8])
LAYOUTS = (FULL, COMPACT, REPMGR_40)

STATUSES = (
    ("*", "running"),
    ("*", "running"),
    ("", "running"),
    ("!", "running"),
    ("!", "running as primary"),
    ("!", "running as standby"),
    ("!", "unknown"),
    ("?", "running"),
    ("?", "unreachable"),
    ("-", "failed"),
)
ROLES_3X = {  # as printed -> (role, status_marker, status)
    "* master": ("primary", "*", "running"),
    "  standby": ("standby", "", "running"),
    "  witness": ("witness", "", "running"),
    "  FAILED": ("unknown", "", "failed"),
}


@dataclass(frozen=True)
class Row:
    node_id: int
    name: str
    role: str
    status_marker: str
    status: str
    upstream_marker: str
    upstream: str
    location: str
    priority: int
    timeline: str
    host: str
    port: int | None
    dbname: str | None

    @property
    def conninfo(self) -> str:
        port = f" port={self.port}" if self.port is not None else ""
        dbname = f" dbname={self.dbname}" if self.dbname is not None else ""
        return f"host={self.host}{port} user=repmgr{dbname} connect_timeout=2"

    def cell(self, field: str) -> str:
        marked_status = f"{self.status_marker or ' '} {self.status}"
        marked_upstream = f"{self.upstream_marker} {self.upstream}" if self.upstream_marker else ""
        return {
            "id": str(self.node_id),
            "name": self.name,
            "role": self.role,
            "status": marked_status,
            "upstream": marked_upstream or self.upstream,
            "location": self.location,
            "priority": str(self.priority),
            "timeline": self.timeline,
            "conninfo": self.conninfo,
        }[field]

    def node(self, fields: set[str]) -> Node:
        """The Node a parser must read from this row in a layout with these fields."""
        conninfo = "conninfo" in fields
        return Node(
            node_id=self.node_id,
            name=self.name,
            role=self.role,
            status=self.status,
            status_marker=self.status_marker,
            upstream=self.upstream,
            upstream_marker=self.upstream_marker,
            location=self.location,
            priority=self.priority if "priority" in fields else None,
            timeline=int(self.timeline)
            if self.timeline.isdigit() and "timeline" in fields
            else None,
            conninfo=self.conninfo if conninfo else None,
            host=self.host if conninfo else None,
            port=(5432 if self.port is None else self.port) if conninfo else None,
            dbname=self.dbname if conninfo else None,
            address_problem=None if conninfo else "repmgr shows no connection string for it",
        )


def render(table: list[Row], layout: tuple[tuple[str, str], ...]) -> str:
    """The table with repmgr's own padding (repmgr-action-cluster.c / print_status_header)."""
    titles = [title for title, _ in layout]
    cells = [[row.cell(field) for _, field in layout] for row in table]
    widths = [max(len(cell) for cell in column) for column in zip(titles, *cells, strict=True)]

    def line(values: list[str]) -> str:
        return " " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))

    tail = "" if layout[-1][1] == "conninfo" else " "
    separator = "-" + "-+-".join("-" * width for width in widths) + "-"
    return "\n".join([line(titles), separator, *(line(values) + tail for values in cells), ""])


def render_3x(table: list[tuple[str, str, str, str]]) -> str:
    """repmgr 3.x: role (with its marker), name, upstream, connection string."""
    name = max(4, *(len(name) for _, name, _, _ in table))
    upstream = max(8, *(len(upstream) for _, _, upstream, _ in table))
    conninfo = max(len(conninfo) for *_, conninfo in table)
    return "\n".join(
        [
            f"Role      | {'Name':<{name}} | {'Upstream':<{upstream}} | Connection String",
            f"----------+-{'-' * name}-|-{'-' * upstream}-|-{'-' * conninfo}",
            *(f"{r:<10}| {n:<{name}} | {u:<{upstream}} | {c}" for r, n, u, c in table),
            "",
        ]
    )


HOSTNAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-"
HOSTS = st.text(HOSTNAME_CHARS, max_size=20).map("h".__add__)


def unique_names(min_size: int = 1) -> st.SearchStrategy[list[str]]:
    tails = st.lists(
        st.text(HOSTNAME_CHARS + "_", max_size=8), min_size=min_size, max_size=8, unique=True
    )
    return tails.map(lambda found: ["n" + tail for tail in found])


@st.composite
def rows(draw: st.DrawFn, min_size: int = 1) -> list[Row]:
    names = draw(unique_names(min_size))
    ids = draw(
        st.lists(st.integers(0, 99999), min_size=len(names), max_size=len(names), unique=True)
    )
    result = []
    for node_id, name in zip(ids, names, strict=True):
        status_marker, status = draw(st.sampled_from(STATUSES))
        result.append(
            Row(
                node_id=node_id,
                name=name,
                role=draw(st.sampled_from(["primary", "primary", "standby", "witness"])),
                status_marker=status_marker,
                status=status,
                upstream_marker=draw(st.sampled_from(["", "", "?", "!"])),
                upstream=draw(st.sampled_from(["", *names])),
                location=draw(st.sampled_from(["default", "dc1", "eu-west-1"])),
                priority=draw(st.integers(0, 1000)),
                timeline=draw(st.integers(1, 99).map(str) | st.sampled_from(["", "?", "n/a"])),
                host=draw(HOSTS),
                port=draw(st.none() | st.integers(1, 65535)),
                dbname=draw(st.none() | st.text("abcxyz_", min_size=1, max_size=10)),
            )
        )
    return result


def model_primary(table: list[Row]) -> str | None:
    """The rule, stated on the generated rows rather than on parsed nodes."""
    live = [r for r in table if (r.role, r.status_marker, r.status) == ("primary", "*", "running")]
    if len(live) == 1 and all(r.status_marker != "!" for r in table):
        return live[0].name
    return None


@FAST
@given(rows(), st.sampled_from(LAYOUTS))
def test_generated_tables_round_trip(table: list[Row], layout: tuple[tuple[str, str], ...]) -> None:
    view = parse_cluster_show(render(table, layout))
    fields = {field for _, field in layout}
    assert view.nodes == tuple(row.node(fields) for row in table)
    assert (view.primary.name if view.primary else None) == model_primary(table)
    reasons = {problem.reason for problem in view.problems}
    assert (Reason.ANOMALY in reasons) == any(row.status_marker == "!" for row in table)
    assert (view.primary is None) == bool(view.problems)


@FAST
@given(rows(), st.data())
def test_a_single_running_primary_among_quiet_nodes_is_found(
    table: list[Row], data: st.DataObject
) -> None:
    quiet = [
        replace(row, role=data.draw(st.sampled_from(["standby", "witness"])))
        if row.status_marker != "!"
        else replace(row, status_marker="?", status="unreachable")
        for row in table
    ]
    quiet[0] = replace(quiet[0], role="primary", status_marker="*", status="running")
    view = parse_cluster_show(render(quiet, FULL))
    assert view.primary is not None
    assert view.primary.name == quiet[0].name


@st.composite
def tables_3x(draw: st.DrawFn) -> list[tuple[str, str, str, str]]:
    names = draw(unique_names())
    return [
        (
            draw(st.sampled_from(sorted(ROLES_3X))),
            name,
            draw(st.sampled_from(["", *names])),
            f"host={draw(HOSTS)} dbname=repmgr user=repmgr",
        )
        for name in names
    ]


@FAST
@given(tables_3x())
def test_repmgr_3x_tables_round_trip(table: list[tuple[str, str, str, str]]) -> None:
    view = parse_cluster_show(render_3x(table))
    assert [(n.node_id, n.name, n.upstream) for n in view.nodes] == [
        (number, name, upstream) for number, (_, name, upstream, _) in enumerate(table, start=1)
    ]
    assert [(n.role, n.status_marker, n.status) for n in view.nodes] == [
        ROLES_3X[role] for role, *_ in table
    ]
    masters = [name for role, name, *_ in table if role == "* master"]
    assert (view.primary.name if view.primary else None) == (
        masters[0] if len(masters) == 1 else None
    )


def primary_read_off_the_text(text: str) -> str | None:
    """An independent reading: every line with a '|' below the header counts as a row.

    Unlike the parser it does not care about separators, blank lines, log lines or
    cell counts beyond skipping rows that do not fit, so a parser that dropped or
    misplaced a row would disagree with it.
    """
    split = [line.rstrip("\r").split("|") for line in text.split("\n") if "|" in line]
    header = [cell.strip().lower() for cell in split[0]]
    body = [[cell.strip() for cell in cells] for cells in split[1:] if len(cells) == len(header)]
    name = header.index("name")
    if "status" not in header:
        live = [cells[name] for cells in body if cells[header.index("role")] == "* master"]
    else:
        role, status = header.index("role"), header.index("status")
        if any(cells[status].startswith("!") for cells in body):
            return None
        live = [
            cells[name]
            for cells in body
            if cells[role] in ("primary", "master") and re.fullmatch(r"\*\s*running", cells[status])
        ]
    return live[0] if len(live) == 1 else None


SPOILERS = (
    ("primary", "*", "running"),
    ("primary", "!", "running"),
    ("standby", "!", "running as primary"),
)


@st.composite
def spoiled(draw: st.DrawFn) -> list[Row]:
    """A running primary and one row that forbids trusting it: losing that row would show."""
    table = draw(rows(min_size=2))
    role, status_marker, status = draw(st.sampled_from(SPOILERS))
    spoiler = draw(st.integers(1, len(table) - 1))
    table[0] = replace(table[0], role="primary", status_marker="*", status="running")
    table[spoiler] = replace(table[spoiler], role=role, status_marker=status_marker, status=status)
    return draw(st.permutations(table))


NOISE = " |*!?-+\n\tx0123456789abnprunig:"
EXTRA_LINES = (
    "",
    "WARNING: following issues were detected",
    " 99 | nx | primary | * running |  | default | 100 | 9 | host=x",
    " 98 | ny | standby | ! running as primary |  | default | 100 | 9 | host=y",
    " 97 | nz | primary | * running |  | default | 100 | 9 ",
    "* master  | nm | | host=m",
    "----+----+----",
)
LOG_PREFIXES = ("ERROR: ", "WARNING:", "HINT:  ")


def single_line_edits(text: str) -> Iterator[str]:
    """Every way to drop, repeat, swap, log-prefix one line, or insert one extra line."""
    lines = text.split("\n")
    for at, line in enumerate(lines):
        yield "\n".join(lines[:at] + lines[at + 1 :])
        for other in range(at + 1, len(lines)):
            swapped = lines.copy()
            swapped[at], swapped[other] = lines[other], line
            yield "\n".join(swapped)
        for extra in (line, *EXTRA_LINES):
            yield "\n".join([*lines[:at], extra, *lines[at:]])
        for prefix in LOG_PREFIXES:
            yield "\n".join([*lines[:at], prefix + line, *lines[at + 1 :]])


@st.composite
def damaged(draw: st.DrawFn) -> str:
    """A valid table, then one to four random line or character edits."""
    text = draw(TABLES)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["line", "char", "delete", "cut"]))
        if edit == "line":
            text = draw(st.sampled_from(list(single_line_edits(text))))
        elif edit == "char":
            text = text[:pos] + draw(st.sampled_from(NOISE)) + text[pos + 1 :]
        elif edit == "delete":
            text = text[:pos] + text[pos + 1 :]
        else:
            text = text[:pos]
    return text


TABLES = st.one_of(
    st.builds(render, spoiled(), st.sampled_from(LAYOUTS)),
    st.builds(render, rows(), st.sampled_from(LAYOUTS)),
    tables_3x().map(render_3x),
)


def check_never_invents_a_primary(text: str) -> None:
    try:
        view = parse_cluster_show(text)
    except ParseError:
        return
    if view.primary is not None:
        assert view.primary.name == primary_read_off_the_text(text)


@settings(FAST, max_examples=50)  # each example checks every single-line edit of its table
@given(TABLES)
def test_no_single_line_edit_invents_a_primary(text: str) -> None:
    for edited in single_line_edits(text):
        check_never_invents_a_primary(edited)


@FAST
@given(damaged())
def test_damaged_tables_never_invent_a_primary(text: str) -> None:
    check_never_invents_a_primary(text)


@FAST
@given(st.text(alphabet=NOISE, max_size=300) | st.text(max_size=300))
def test_noise_raises_only_parse_error(text: str) -> None:
    check_never_invents_a_primary(text)
