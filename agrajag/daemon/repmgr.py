"""What `repmgr cluster show` says, as typed immutable values, and a runner for it.

The daemon publishes a primary only when this view names exactly one, so the
parser is strict: text it does not fully understand raises `ParseError` rather
than yielding a guess. Columns are found by their header names (repmgr 3.x to
5.x and `--compact` print different sets); a `!` status anywhere means the
view is not trustworthy, whatever the rest says.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import ProgrammingError, pq
from psycopg.conninfo import conninfo_to_dict

from agrajag.command import CommandError, quote, run
from agrajag.daemon.view import ClusterView, Node
from agrajag.errors import AgrajagError

__all__ = [
    "ACCEPTED_EXIT_CODES",
    "ClusterShow",
    "ParseError",
    "RepmgrError",
    "libpq_default_port",
    "parse_cluster_show",
    "run_cluster_show",
]

ACCEPTED_EXIT_CODES = frozenset({0, 25})
"""repmgr exits 25 (ERR_NODE_STATUS) whenever it prints a warning, i.e. during every failover."""


class ParseError(AgrajagError):
    """The text is not a `repmgr cluster show` table we can trust; says which line and why."""

    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}")
        self.lineno = lineno
        self.reason = reason


class RepmgrError(AgrajagError):
    """Running `repmgr cluster show` gave no usable table; names the command and quotes stderr."""


# Header title (lower case) -> field; repmgr 4.0 has no Priority/Timeline, --compact
# abbreviates them and drops the connection string, 3.x spells "Connection String".
_COLUMNS = {
    "id": "id",
    "name": "name",
    "role": "role",
    "status": "status",
    "upstream": "upstream",
    "location": "location",
    "priority": "priority",
    "prio.": "priority",
    "timeline": "timeline",
    "tli": "timeline",
    "connection string": "conninfo",
}
_REQUIRED = ("id", "name", "role", "status")
_REQUIRED_3X = ("name", "role")
# repmgr 3.x prints exactly these in its Role column (marker included); the node's
# real state, not its metadata. A FAILED node did not answer, so its role is unknown.
_ROLES_3X = {
    "* master": ("primary", "*", "running"),
    "standby": ("standby", "", "running"),
    "witness": ("witness", "", "running"),
    "FAILED": ("unknown", "", "failed"),
}
_ROLE_ALIASES = {"master": "primary"}
_STATUS_MARKERS = "*!?-"
_UPSTREAM_MARKERS = "?!"
_NO_TIMELINE = frozenset({"", "?", "n/a"})  # unreachable node; witness
_LOG_LINE = re.compile(r"\s*(?:DEBUG|INFO|NOTICE|WARNING|ERROR|FATAL|HINT|DETAIL):")
_SEPARATOR = re.compile(r"[-+| ]*-[-+| ]*")
_COLUMN_BREAK = re.compile(r"[+|]")
_INTEGER = re.compile(r"-?[0-9]+")
_NODE_ID = re.compile(r"[0-9]+")


def parse_cluster_show(text: str, *, default_port: int = 5432) -> ClusterView:
    """Parse the text table of `repmgr cluster show` (3.x, 4.x, 5.x, `--compact`).

    Log lines (`WARNING:`, `HINT:` ...) are skipped wherever they are; other text
    before the header and after the blank line that ends the table is ignored,
    but any line with a `|` must be the header, the separator or a node row.
    Raises ParseError (line number and reason) on anything else. Connection strings are
    read with libpq's rules (keyword or URI form, quoting); one without a port gets
    `default_port`, as libpq would.

    >>> view = parse_cluster_show('''\\
    ...  ID | Name  | Role    | Status               | Upstream | Connection string
    ... ----+-------+---------+----------------------+----------+------------------------
    ...  1  | node1 | primary | * running            |          | host=db1 port=5433
    ...  2  | node2 | standby | ! running as primary | node1    | host=db2 dbname=repmgr
    ... ''')
    >>> view.by_id(1).host, view.by_id(1).port, view.by_name("node2").port
    ('db1', 5433, 5432)
    >>> view.primary is None, [str(problem.reason) for problem in view.problems]
    (True, ['anomaly'])
    >>> parse_cluster_show("ERROR: connection to database failed")
    Traceback (most recent call last):
    ...
    agrajag.daemon.repmgr.ParseError: line 1: no table header (no line contains '|')
    """
    lines = [
        (lineno, line.rstrip("\r"))
        for lineno, line in enumerate(text.split("\n"), start=1)
        if "|" in line or not _LOG_LINE.match(line)
    ]
    start = next((i for i, (_, line) in enumerate(lines) if "|" in line), None)
    if start is None:
        raise ParseError(
            1, "no table header (no line contains '|')" if text.strip() else "empty input"
        )
    header_lineno, header = lines[start]
    columns = _columns(header_lineno, header)
    width = header.count("|") + 1
    if start + 1 == len(lines):
        raise ParseError(header_lineno, "no '----+----' separator line after the header")
    separator_lineno, separator = lines[start + 1]
    _check_separator(separator_lineno, separator, width)

    body = lines[start + 2 :]
    end = next((i for i, (_, line) in enumerate(body) if not line.strip()), len(body))
    for lineno, line in body[end:]:
        if "|" in line:
            raise ParseError(lineno, f"table row after the table ended (blank line {body[end][0]})")
    if end == 0:
        raise ParseError(separator_lineno, "no node rows under the header")

    nodes = tuple(
        _node(lineno, line, columns, width, number, default_port)
        for number, (lineno, line) in enumerate(body[:end], start=1)
    )
    _check_unique(body[:end], nodes)
    return ClusterView(nodes)


def _columns(lineno: int, header: str) -> dict[str, int]:
    """Field -> cell index, by header name; unknown columns are ignored."""
    columns: dict[str, int] = {}
    for index, cell in enumerate(header.split("|")):
        title = cell.strip().lower()
        key = _COLUMNS.get(title)
        if key is None:
            continue
        if key in columns:
            raise ParseError(lineno, f"column {cell.strip()!r} appears twice in the header")
        columns[key] = index
    is_3x = "id" not in columns and "status" not in columns
    missing = [key for key in (_REQUIRED_3X if is_3x else _REQUIRED) if key not in columns]
    if missing:
        raise ParseError(lineno, f"header lacks required column(s): {', '.join(missing)}")
    return columns


def _check_separator(lineno: int, line: str, width: int) -> None:
    if not _SEPARATOR.fullmatch(line):
        raise ParseError(lineno, "expected the '----+----' separator line under the header")
    found = len(_COLUMN_BREAK.split(line))
    if found != width:
        raise ParseError(lineno, f"separator has {found} columns, the header {width}")


def _node(
    lineno: int, line: str, columns: dict[str, int], width: int, number: int, default_port: int
) -> Node:
    cells = line.split("|")
    if len(cells) != width:
        raise ParseError(
            lineno, f"{len(cells)} cells, the header has {width} (is there a '|' inside a value?)"
        )
    row = {key: cells[index].strip() for key, index in columns.items()}
    if "id" in columns:
        if not _NODE_ID.fullmatch(row["id"]):
            raise ParseError(lineno, f"ID {row['id']!r} is not a node id")
        node_id = int(row["id"])
        status_marker, status = _split_marker(row["status"], _STATUS_MARKERS)
        role = _ROLE_ALIASES.get(row["role"], row["role"])
    else:
        if row["role"] not in _ROLES_3X:
            raise ParseError(lineno, f"unknown repmgr 3.x role {row['role']!r}")
        node_id = number
        role, status_marker, status = _ROLES_3X[row["role"]]
    if not row["name"]:
        raise ParseError(lineno, "empty Name")
    upstream_marker, upstream = _split_marker(row.get("upstream", ""), _UPSTREAM_MARKERS)
    conninfo = row.get("conninfo") or None
    host, port, dbname, problem = _address(lineno, conninfo, default_port)
    return Node(
        node_id=node_id,
        name=row["name"],
        role=role,
        status=status,
        status_marker=status_marker,
        upstream=upstream,
        upstream_marker=upstream_marker,
        location=row.get("location", ""),
        priority=_integer(lineno, "Priority", row.get("priority", ""), blank=frozenset({""})),
        timeline=_integer(lineno, "Timeline", row.get("timeline", ""), blank=_NO_TIMELINE),
        conninfo=conninfo,
        host=host,
        port=port,
        dbname=dbname,
        address_problem=problem,
    )


def _split_marker(cell: str, markers: str) -> tuple[str, str]:
    """`"! running as primary"` -> `("!", "running as primary")`; no marker -> `("", cell)`.

    The space after the marker is not required, so a mangled `!running` still counts as `!`.
    """
    if cell and cell[0] in markers:
        return cell[0], cell[1:].strip()
    return "", cell


def _integer(lineno: int, column: str, cell: str, *, blank: frozenset[str]) -> int | None:
    if cell in blank:
        return None
    if not _INTEGER.fullmatch(cell):
        raise ParseError(lineno, f"{column} {cell!r} is not a number")
    return int(cell)


def _address(
    lineno: int, conninfo: str | None, default_port: int
) -> tuple[str | None, int | None, str | None, str | None]:
    """(host, port, dbname, problem) from a libpq conninfo, keyword or URI form; hostaddr
    stands in for a missing host. `problem` says why the node has no single TCP address that
    agrajag can check and publish: several hosts, a Unix socket, no connection string."""
    if conninfo is None:
        return None, None, None, "repmgr shows no connection string for it"
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except ProgrammingError as exc:
        raise ParseError(lineno, f"bad connection string: {str(exc).strip()}") from None
    dbname = params.get("dbname") or None
    host = params.get("host") or params.get("hostaddr") or ""
    ports = params.get("port") or ""
    for port in ports.split(","):
        _check_port(lineno, port, "in the connection string")
    if "," in host or "," in ports or "," in params.get("hostaddr", ""):
        return (
            None,
            None,
            dbname,
            (
                f"its conninfo names several hosts or ports ({host}:{ports}): agrajag checks and "
                "publishes one address; give each node's repmgr conninfo a single host"
            ),
        )
    if not host or host.startswith(("/", "@")):
        where = f"Unix socket directory {host!r}" if host else "no host (a Unix socket)"
        return (
            None,
            None,
            dbname,
            (
                f"its conninfo names {where}: the master record must carry a TCP address; "
                "set host= in its repmgr conninfo"
            ),
        )
    return host, int(ports) if ports else default_port, dbname, None


def _check_port(lineno: int, port: str, where: str) -> None:
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ParseError(lineno, f"port {port!r} {where} is not a TCP port")


def libpq_default_port() -> int:
    """The port libpq uses when a conninfo names none: PGPORT in this process's environment,
    else 5432. repmgr, run by the daemon in the same environment, connects to the same."""
    for option in pq.Conninfo.get_defaults():
        if option.keyword == b"port" and option.val:
            value = option.val.decode()
            if value.isascii() and value.isdigit() and 0 < int(value) < 65536:
                return int(value)
            raise RepmgrError(f"PGPORT {value!r} in the daemon's environment is not a TCP port")
    return 5432


def _check_unique(rows: list[tuple[int, str]], nodes: tuple[Node, ...]) -> None:
    ids: dict[int, int] = {}
    names: dict[str, int] = {}
    for (lineno, _), node in zip(rows, nodes, strict=True):
        if node.node_id in ids:
            raise ParseError(lineno, f"node ID {node.node_id} also on line {ids[node.node_id]}")
        if node.name in names:
            raise ParseError(lineno, f"node name {node.name!r} also on line {names[node.name]}")
        ids[node.node_id] = lineno
        names[node.name] = lineno


@dataclass(frozen=True, slots=True)
class ClusterShow:
    """One run of `repmgr cluster show`: the view, the exit code, and repmgr's stderr lines."""

    view: ClusterView
    exit_code: int
    warnings: tuple[str, ...]


def run_cluster_show(
    repmgr_bin: str,
    config_file: str,
    *,
    timeout: float,
    connect_timeout: int | None = None,
    extra_args: Sequence[str] = (),
) -> ClusterShow:
    """Run `repmgr -f config_file cluster show [extra_args]` with a deadline, and parse it.

    Exit 0 and 25 are accepted when stdout holds a table; anything else raises
    RepmgrError naming the command line and quoting repmgr's stderr. LC_ALL=C
    because columns are found by their English header names. `connect_timeout` becomes
    PGCONNECT_TIMEOUT: libpq's wait on each node whose conninfo has no `connect_timeout` of its
    own (repmgr passes the conninfo as it is, so the conninfo's value wins).
    """
    argv = [repmgr_bin, "-f", config_file, "cluster", "show", *extra_args]
    env = {**os.environ, "LC_ALL": "C"}
    if connect_timeout is not None:
        env["PGCONNECT_TIMEOUT"] = str(connect_timeout)
    try:
        done = run(argv, timeout=timeout, accept=ACCEPTED_EXIT_CODES, env=env)
    except CommandError as exc:
        raise RepmgrError(str(exc)) from None
    try:
        view = parse_cluster_show(done.stdout, default_port=libpq_default_port())
    except ParseError as exc:
        raise RepmgrError(
            f"{shlex.join(argv)}: exit code {done.returncode} but no usable table on stdout "
            f"({exc}); stderr: {quote(done.stderr)}"
        ) from exc
    warnings = tuple(line.rstrip() for line in done.stderr.splitlines() if line.strip())
    return ClusterShow(view=view, exit_code=done.returncode, warnings=warnings)
