"""The watcher's state file: the records it last applied, so a restart during a ZooKeeper
outage renders the same config again instead of nothing.

The file is JSON, replaced atomically (a temporary file beside it, then `os.replace`), and
every record in it goes through the same validation as a record read from ZooKeeper: the
file is only a cache, so a damaged one is reported and ignored, never trusted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agrajag.errors import AgrajagError
from agrajag.record import SCHEMA, MasterRecord, RecordError

log = logging.getLogger(__name__)


class StateError(AgrajagError):
    """The state file could not be written; the message names it."""


@dataclass(frozen=True, slots=True)
class Applied:
    """A record every sink has applied, and when."""

    record: MasterRecord
    applied_at: str


def load_state(path: Path, clusters: Collection[str]) -> dict[str, Applied]:
    """The applied records of `clusters` found in `path`; {} when there is none to trust.

    A missing file is a first start. An unreadable or malformed file, or a bad entry, is
    logged naming the file (and the cluster) and left out: ZooKeeper has the truth.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.error("ignoring state file %s: cannot read it: %s", path, exc.strerror)
        return {}
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error("ignoring state file %s: not JSON (%s)", path, exc)
        return {}
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        log.error("ignoring state file %s: not a schema %d state file", path, SCHEMA)
        return {}
    entries = doc.get("clusters")
    if not isinstance(entries, dict):
        log.error("ignoring state file %s: key 'clusters' must be an object", path)
        return {}
    state = {}
    for cluster, entry in entries.items():
        if cluster not in clusters:
            log.info("state file %s: skipping cluster %r, no longer configured", path, cluster)
            continue
        try:
            state[cluster] = _entry(entry, f"{path}: clusters.{cluster}", cluster)
        except RecordError as exc:
            log.error("ignoring an entry of the state file: %s", exc)
    return state


def _entry(entry: Any, source: str, cluster: str) -> Applied:
    if not isinstance(entry, dict) or not isinstance(entry.get("applied_at"), str):
        raise RecordError(source, "expected an object with 'record' and 'applied_at'")
    record = MasterRecord.from_json(json.dumps(entry.get("record")).encode(), source)
    if record.cluster != cluster:
        raise RecordError(source, f"the record names cluster {record.cluster!r}")
    return Applied(record, entry["applied_at"])


def save_state(path: Path, state: Mapping[str, Applied]) -> None:
    """Replace `path` atomically with `state`; raises StateError naming the file."""
    doc = {
        "schema": SCHEMA,
        "clusters": {
            cluster: {
                "applied_at": applied.applied_at,
                "record": json.loads(applied.record.to_json()),
            }
            for cluster, applied in sorted(state.items())
        },
    }
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    try:
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the state file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise StateError(f"{path}: cannot write the state file: {exc.strerror}") from None
