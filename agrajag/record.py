"""The JSON records agrajag keeps in ZooKeeper, and the one place that validates them.

The daemon writes these and the watcher reads them; both go through this module so that a
record the watcher would refuse can never be published. Every record carries ``"schema": 1``.

>>> rec = MasterRecord(cluster="main", epoch=3, node_id=2, node="node2", host="10.0.0.2",
...                    port=5432, timeline=2, published_by="node3",
...                    published_at="2026-11-22T03:00:00Z", evidence={})
>>> MasterRecord.from_json(rec.to_json(), source="/agrajag/main/master") == rec
True
>>> MasterRecord.from_json(b'{"schema": 1}', source="/agrajag/main/master")
Traceback (most recent call last):
...
agrajag.record.RecordError: /agrajag/main/master: missing key 'cluster'
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from agrajag.errors import AgrajagError

SCHEMA = 1

# Full-string grammars, always used with `fullmatch`: `$` would also match before a final
# newline, and a value from a record ends up on a line of a config file.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_ZONE = re.compile(r"[A-Za-z0-9]{1,15}")

T = TypeVar("T")


class RecordError(AgrajagError):
    """A record in the registry is not valid JSON of the expected schema; names path and key."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


def utc_now() -> str:
    """A timestamp as records carry it: ISO 8601, UTC, millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_plain_host(value: str) -> bool:
    """True for an IPv4 address, an IPv6 address (its zone id, if any, only letters and
    digits) or an RFC 1123 host name: nothing that could end a config line or add a word.

    >>> [is_plain_host(h) for h in ("db-1.example.com", "10.1.2.3", "::1", "fe80::1%eth0")]
    [True, True, True, True]
    >>> [is_plain_host(h) for h in ("db1\\nserver evil", "10.0.0.1\\n", "db 1", "-db", "")]
    [False, False, False, False, False]
    >>> [is_plain_host(h) for h in ("::1%x:1 disabled", "10.0.0.256", "a" * 300, "1.2.3")]
    [False, False, False, False]
    """
    if _IPV4.fullmatch(value):
        return _is_ip(ipaddress.IPv4Address, value)
    if ":" in value:
        address, percent, zone = value.partition("%")
        return (
            _IPV6.fullmatch(address) is not None
            and (not percent or _ZONE.fullmatch(zone) is not None)
            and _is_ip(ipaddress.IPv6Address, address)
        )
    labels = value.removesuffix(".").split(".")
    # An all-numeric last label is a mistyped IPv4 address, never a top-level domain.
    return (
        0 < len(value) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _is_ip(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], value: str) -> bool:
    try:
        kind(value)
    except ValueError:
        return False
    return True


def is_plain_name(value: str) -> bool:
    """True for a cluster, node or agent name that is safe as a znode name and in a config file.

    >>> [is_plain_name(n) for n in ("node1", "pg-main_2", "app@host")]
    [True, True, True]
    >>> [is_plain_name(n) for n in ("", "a/b", "..", "x y", "ü", "node1\\n")]
    [False, False, False, False, False, False]
    """
    return _NAME.fullmatch(value) is not None


#: The largest record agrajag reads; real ones are a few KiB (the evidence grows by a line per
#: node). Anything bigger is refused before it is parsed.
MAX_RECORD_BYTES = 64 * 1024
#: Integers a record may hold: what ZooKeeper, Prometheus and every JSON reader can carry.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_MAX_INT_DIGITS = 20


def _load(data: bytes | None, source: str) -> dict[str, Any]:
    """The JSON object in `data`, or RecordError: whatever the bytes, never another exception
    (no RecursionError on deep nesting, no ValueError on a 5,000-digit number)."""
    if data is None or len(data) > MAX_RECORD_BYTES:
        size = "no data" if data is None else f"{len(data)} bytes"
        raise RecordError(source, f"{size}: a record must be JSON of at most {MAX_RECORD_BYTES}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(source, f"not UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        doc = json.loads(text, parse_int=_parse_int, parse_constant=_no_constant)
    except RecursionError:
        raise RecordError(source, "not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and the two hooks below
        raise RecordError(source, f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RecordError(source, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise RecordError(source, f"unsupported schema {_short(doc.get('schema'))} (expected 1)")
    return doc


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a record may hold")


def _short(value: object) -> str:
    """repr() of a value from a record, cut short: error messages quote what they refuse."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _get(doc: Mapping[str, Any], key: str, kind: type[T], source: str) -> T:
    if key not in doc:
        raise RecordError(source, f"missing key {key!r}")
    value = doc[key]
    # bool is an int in Python; a record with "port": true is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(source, f"key {key!r} must be {kind.__name__}, got {_short(value)}")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise RecordError(source, f"key {key!r} is out of range, got {_short(value)}")
    if isinstance(value, str) and not _encodable(value):  # "\ud800" is valid JSON
        raise RecordError(source, f"key {key!r} is not valid Unicode, got {_short(value)}")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _string_map(doc: Mapping[str, Any], key: str, source: str) -> dict[str, str]:
    value = _get(doc, key, dict, source) if key in doc else {}
    if not all(isinstance(v, str) for v in value.values()):
        raise RecordError(source, f"key {key!r} must map names to strings, got {_short(value)}")
    return value


def _optional_int(doc: Mapping[str, Any], key: str, source: str) -> int | None:
    return None if doc.get(key) is None else _get(doc, key, int, source)


def _optional_str(doc: Mapping[str, Any], key: str, source: str) -> str | None:
    return None if doc.get(key) is None else _get(doc, key, str, source)


def _check(ok: bool, source: str, key: str, value: object, why: str) -> None:
    if not ok:
        raise RecordError(source, f"key {key!r} {why}, got {_short(value)}")


def _dump(record: object) -> bytes:
    return json.dumps({"schema": SCHEMA, **asdict(record)}, sort_keys=True).encode()  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class MasterRecord:
    """What `/<root>/<cluster>/master` says: which node is the primary, since which epoch.

    `epoch` grows at every write of the master znode: every change of master, and every
    repair that writes the same master again (publishing rule 6). `evidence` is what the
    publisher saw (repmgr's rows and the INSERT check), kept for the humans reading the
    history. `withdrawn` (None on a published master) says why a daemon withdrew the master
    it names, a former primary: nothing may route to it (see `routes`).
    """

    cluster: str
    epoch: int
    node_id: int
    node: str
    host: str
    port: int
    timeline: int | None
    published_by: str
    published_at: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    withdrawn: str | None = None

    def __post_init__(self) -> None:
        self.validate("master record")

    def validate(self, source: str) -> None:
        """Raise RecordError unless every field is safe to act on and write into a config."""
        _check(is_plain_name(self.cluster), source, "cluster", self.cluster, "must be a plain name")
        _check(is_plain_name(self.node), source, "node", self.node, "must be a plain name")
        _check(
            is_plain_name(self.published_by),
            source,
            "published_by",
            self.published_by,
            "must be a plain name",
        )
        _check(self.epoch >= 1, source, "epoch", self.epoch, "must be >= 1")
        _check(is_plain_host(self.host), source, "host", self.host, "must be a hostname or IP")
        _check(1 <= self.port <= 65535, source, "port", self.port, "must be within 1-65535")
        _check(
            self.timeline is None or self.timeline >= 1,
            source,
            "timeline",
            self.timeline,
            "must be >= 1",
        )
        _check(
            self.withdrawn is None or bool(self.withdrawn.strip() and self.withdrawn.isprintable()),
            source,
            "withdrawn",
            self.withdrawn,
            "must be null or a non-empty line of text",
        )

    @classmethod
    def from_json(cls, data: bytes, source: str) -> MasterRecord:
        """Parse and validate; `source` (the znode path or file) goes into every error."""
        doc = _load(data, source)
        try:
            return cls(
                cluster=_get(doc, "cluster", str, source),
                epoch=_get(doc, "epoch", int, source),
                node_id=_get(doc, "node_id", int, source),
                node=_get(doc, "node", str, source),
                host=_get(doc, "host", str, source),
                port=_get(doc, "port", int, source),
                timeline=_optional_int(doc, "timeline", source),
                published_by=_get(doc, "published_by", str, source),
                published_at=_get(doc, "published_at", str, source),
                evidence=_get(doc, "evidence", dict, source) if "evidence" in doc else {},
                withdrawn=_optional_str(doc, "withdrawn", source),
            )
        except RecordError as exc:
            raise RecordError(source, exc.detail) from None

    def to_json(self) -> bytes:
        return _dump(self)

    @property
    def routes(self) -> bool:
        """False for a withdrawn record: it names a former primary, for the history and the
        ordering of timelines (rule 3), and clients must be routed nowhere."""
        return self.withdrawn is None

    def same_master(self, other: MasterRecord | None) -> bool:
        """True when `other` names the same server with the same standing (routed to, or
        withdrawn), so writing this record over it would change nothing."""
        return other is not None and (self.node, self.host, self.port, self.routes) == (
            other.node,
            other.host,
            other.port,
            other.routes,
        )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a daemon says about itself in its ephemeral `nodes/<node>` (its liveness): who it
    is, and its last decision (`publish`, `unchanged` or `refuse`), the refusal reason, and
    since when it holds (`decided_at`), for `agrajag status`."""

    node: str
    node_id: int | None
    pid: int
    version: str
    started_at: str
    decision: str | None = None
    reason: str | None = None
    decided_at: str | None = None

    @classmethod
    def from_json(cls, data: bytes, source: str) -> NodeRecord:
        doc = _load(data, source)
        node = _get(doc, "node", str, source)
        _check(is_plain_name(node), source, "node", node, "must be a plain name")
        return cls(
            node=node,
            node_id=_optional_int(doc, "node_id", source),
            pid=_get(doc, "pid", int, source),
            version=_get(doc, "version", str, source),
            started_at=_get(doc, "started_at", str, source),
            decision=_optional_str(doc, "decision", source),
            reason=_optional_str(doc, "reason", source),
            decided_at=_optional_str(doc, "decided_at", source),
        )

    def to_json(self) -> bytes:
        return _dump(self)


@dataclass(frozen=True, slots=True)
class WatcherAck:
    """What a watcher says in its ephemeral `watchers/<agent>`: the epoch it has applied."""

    agent: str
    applied_epoch: int
    applied_at: str
    sinks: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: bytes, source: str) -> WatcherAck:
        doc = _load(data, source)
        agent = _get(doc, "agent", str, source)
        _check(is_plain_name(agent), source, "agent", agent, "must be a plain name")
        return cls(
            agent=agent,
            applied_epoch=_get(doc, "applied_epoch", int, source),
            applied_at=_get(doc, "applied_at", str, source),
            sinks=_string_map(doc, "sinks", source),
        )

    def to_json(self) -> bytes:
        return _dump(self)
