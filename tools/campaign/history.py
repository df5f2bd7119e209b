"""What a fault campaign records, as plain values: everything the checker judges afterwards.

Every time is wall-clock seconds since the epoch on this machine (ZooKeeper's mtime, PostgreSQL's
clock_timestamp() and the recorder's own clock are the same clock here).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Record:
    """A master record as stored in history/ (in sequence order), and when ZooKeeper stored it;
    `withdrawn` says why, when the record withdraws its node instead of publishing it."""

    at: float
    epoch: int
    node: str
    host: str
    port: int
    timeline: int | None
    withdrawn: str | None = None


@dataclass(frozen=True)
class Seen:
    """A version of the master znode as a DataWatch saw it (it may skip versions)."""

    at: float
    epoch: int
    node: str


@dataclass(frozen=True)
class PgSample:
    """What one PostgreSQL said about itself: `primary` (not in recovery), `standby`, or
    `down` (no answer within the connect timeout); the timeline it writes on, if primary."""

    at: float
    node: str
    state: str
    timeline: int | None = None


@dataclass(frozen=True)
class ConfigSample:
    """A proxy config file as read on an app host, each time its content changed."""

    at: float
    app: str
    sink: str
    text: str
    valid: bool
    detail: str = ""


@dataclass(frozen=True)
class AckSample:
    """The epoch a watcher acknowledged in watchers/<agent> (None: no ack node)."""

    at: float
    app: str
    epoch: int | None


@dataclass(frozen=True)
class Exit:
    """An agrajag process that ended; `expected` when the campaign itself killed it."""

    at: float
    name: str
    code: int | None
    expected: bool


@dataclass(frozen=True)
class Write:
    """One client write through a proxy: acknowledged (`ok`, with the node and timeline that
    took it) or failed."""

    at: float
    client: str
    seq: int
    ok: bool
    node: str | None = None
    timeline: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Fault:
    """One injected fault, from the moment it started to the moment it was healed."""

    start: float
    end: float
    kind: str
    target: str


@dataclass
class History:
    """A whole campaign run."""

    seed: int
    schedule: list[str]
    start: float
    end: float = 0.0
    records: list[Record] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    pg: list[PgSample] = field(default_factory=list)
    configs: list[ConfigSample] = field(default_factory=list)
    acks: list[AckSample] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    #: (client, seq) of every row the final primary holds.
    present: list[tuple[str, int]] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> History:
        doc = json.loads(text)
        kinds: dict[str, type[Any]] = {
            "records": Record,
            "seen": Seen,
            "pg": PgSample,
            "configs": ConfigSample,
            "acks": AckSample,
            "exits": Exit,
            "writes": Write,
            "faults": Fault,
        }
        for name, kind in kinds.items():
            doc[name] = [kind(**item) for item in doc[name]]
        doc["present"] = [tuple(p) for p in doc["present"]]
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_json(path.read_text())
