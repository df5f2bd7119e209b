"""The watcher's state file: what every sink has applied, and what each sink has applied.

A restart must never route a proxy back: the watcher starts from the newest record any sink
applied (each was accepted from ZooKeeper), tells each sink what it last applied, and gives
ZooKeeper a moment before using the file at all. The file is saved after every sink's apply.

The file is JSON, replaced atomically and durably (`agrajag.atomic`), and every record in it
goes through the same validation as a record read from ZooKeeper: the file is only a cache,
so a damaged one is reported and ignored, never trusted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agrajag.atomic import replace_file
from agrajag.errors import AgrajagError
from agrajag.record import SCHEMA, MasterRecord, RecordError

log = logging.getLogger(__name__)

Records = Mapping[str, MasterRecord]


class StateError(AgrajagError):
    """The state file could not be written; the message names it."""


@dataclass(frozen=True, slots=True)
class Applied:
    """A record every sink has applied, and when."""

    record: MasterRecord
    applied_at: str


@dataclass(frozen=True, slots=True)
class State:
    """`clusters`: what every sink has applied (what the watcher acknowledges); `sinks`:
    what each sink has applied, by sink name then cluster."""

    clusters: Mapping[str, Applied] = field(default_factory=dict)
    sinks: Mapping[str, Records] = field(default_factory=dict)

    def newest(self) -> dict[str, MasterRecord]:
        """Per cluster, the newest record any sink has applied: where a restart starts from.

        >>> from agrajag.record import MasterRecord as M
        >>> one, two = (M("main", e, e, f"n{e}", f"10.0.0.{e}", 5432, 1, "n", "t") for e in (1, 2))
        >>> State({"main": Applied(one, "t")}, {"haproxy": {"main": two}}).newest()["main"].epoch
        2
        """
        newest: dict[str, MasterRecord] = {c: a.record for c, a in self.clusters.items()}
        for records in self.sinks.values():
            for cluster, record in records.items():
                if cluster not in newest or record.epoch > newest[cluster].epoch:
                    newest[cluster] = record
        return newest


def load_state(path: Path, clusters: Collection[str], sinks: Collection[str]) -> State:
    """The entries of `clusters` and `sinks` found in `path`; an empty State when there is
    none to trust.

    A missing file is a first start. An unreadable or malformed file, or a bad entry, is
    logged naming the file (and the entry) and left out: ZooKeeper has the truth.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return State()
    except OSError as exc:
        log.error("ignoring state file %s: cannot read it: %s", path, exc.strerror)
        return State()
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error("ignoring state file %s: not JSON (%s)", path, exc)
        return State()
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        log.error("ignoring state file %s: not a schema %d state file", path, SCHEMA)
        return State()
    entries, per_sink = doc.get("clusters"), doc.get("sinks", {})
    if not isinstance(entries, dict) or not isinstance(per_sink, dict):
        key = "sinks" if isinstance(entries, dict) else "clusters"
        log.error("ignoring state file %s: key %r must be an object", path, key)
        return State()
    applied = {}
    for cluster, entry in _configured(entries, clusters, path, "cluster").items():
        try:
            applied[cluster] = _entry(entry, f"{path}: clusters.{cluster}", cluster)
        except RecordError as exc:
            log.error("ignoring an entry of the state file: %s", exc)
    by_sink = {
        sink: _sink_records(records, f"{path}: sinks.{sink}", clusters)
        for sink, records in _configured(per_sink, sinks, path, "sink").items()
    }
    return State(applied, by_sink)


def _configured(
    entries: dict[str, Any], names: Collection[str], path: Path, kind: str
) -> dict[str, Any]:
    for name in entries.keys() - set(names):
        log.info("state file %s: skipping %s %r, no longer configured", path, kind, name)
    return {name: entry for name, entry in entries.items() if name in names}


def _entry(entry: Any, source: str, cluster: str) -> Applied:
    if not isinstance(entry, dict) or not isinstance(entry.get("applied_at"), str):
        raise RecordError(source, "expected an object with 'record' and 'applied_at'")
    return Applied(_record(entry.get("record"), source, cluster), entry["applied_at"])


def _record(doc: Any, source: str, cluster: str) -> MasterRecord:
    record = MasterRecord.from_json(json.dumps(doc).encode(), source)
    if record.cluster != cluster:
        raise RecordError(source, f"the record names cluster {record.cluster!r}")
    return record


def _sink_records(records: Any, source: str, clusters: Collection[str]) -> dict[str, MasterRecord]:
    if not isinstance(records, dict):
        log.error("ignoring an entry of the state file: %s: expected an object", source)
        return {}
    kept = {}
    for cluster, doc in records.items():
        if cluster not in clusters:
            continue
        try:
            kept[cluster] = _record(doc, f"{source}.{cluster}", cluster)
        except RecordError as exc:
            log.error("ignoring an entry of the state file: %s", exc)
    return kept


def save_state(path: Path, state: State) -> None:
    """Replace `path` atomically and durably with `state`; raises StateError naming it."""
    doc = {
        "schema": SCHEMA,
        "clusters": {
            cluster: {
                "applied_at": applied.applied_at,
                "record": _doc(applied.record),
            }
            for cluster, applied in sorted(state.clusters.items())
        },
        "sinks": {
            sink: {cluster: _doc(record) for cluster, record in sorted(records.items())}
            for sink, records in sorted(state.sinks.items())
        },
    }
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    try:
        replace_file(path, data)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the state file: {exc.strerror}") from None


def _doc(record: MasterRecord) -> Any:
    return json.loads(record.to_json())
