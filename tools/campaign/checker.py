"""Judge a whole campaign history (tools.campaign.history) after the fact: pure functions of
the recorded values, each rule one function returning the violations it found."""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tools.campaign.history import History, PgSample, Record, Write

#: How far from a record's publication a sample of its node may be and still speak for it
#: (the recorder samples every node several times a second; a frozen one answers no more).
EVIDENCE_WINDOW_S = 3.0
#: How long a primary may go on taking writes after another node was promoted on a newer
#: timeline: the time to publish the new primary and for the proxies to switch (repmgr does
#: not fence the old one, agrajag's routing is what ends the split brain).
SUPERSEDED_WRITE_BOUND_S = 2.0
#: How long a watcher may take from reading a record to its configs on disk: a config may
#: still show a record that was the newest this long before.
APPLY_LAG_S = 1.0
#: How long after the faults heal (or a record is published, if later) every watcher must
#: have acknowledged the newest record.
CONVERGENCE_BOUND_S = 10.0

_ROUTES = {
    "haproxy": re.compile(r"^\s*server primary (\S+):(\d+)", re.MULTILINE),
    "pgbouncer": re.compile(r"^\S+ = host=(\S+) port=(\d+)", re.MULTILINE),
}


@dataclass(frozen=True)
class Violation:
    rule: str
    at: float
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} at {self.at:.3f}: {self.detail}"


@dataclass(frozen=True)
class WriteReport:
    """The client writes of one run. Of the acknowledged ones: how many a primary took after
    another node was promoted on a newer timeline (a split brain: repmgr does not fence), and
    of those missing at the end, how many asynchronous replication explains (acknowledged
    before a failover to another node), how many the split brain does, and the rest."""

    attempted: int
    acknowledged: int
    acknowledged_superseded: int
    lost_to_failover: int
    lost_to_split_brain: int
    lost_otherwise: int


def routes(sink: str, text: str) -> list[tuple[str, int]]:
    """The (host, port) a proxy config routes to (HAProxy's server line, PgBouncer's database)."""
    return [(host, int(port)) for host, port in _ROUTES[sink].findall(text)]


def published_non_primary(h: History) -> list[Violation]:
    """A record must name a node PostgreSQL had as the writable primary on the record's
    timeline when it was published: the node's last sample before or first sample after the
    publication (within the evidence window) must say so. A withdrawn record publishes no
    master: it names a former primary."""
    by_node: dict[str, list[PgSample]] = defaultdict(list)
    for sample in sorted(h.pg, key=lambda s: s.at):
        by_node[sample.node].append(sample)
    found = []
    for r in (r for r in h.records if r.withdrawn is None):
        samples = by_node.get(r.node, [])
        i = bisect.bisect_left([s.at for s in samples], r.at)
        near = [s for s in samples[max(i - 1, 0) : i + 1] if abs(s.at - r.at) <= EVIDENCE_WINDOW_S]
        if not any(_confirms(s, r) for s in near):
            seen = ", ".join(f"{s.state}/tl{s.timeline} at {s.at - r.at:+.2f}s" for s in near)
            found.append(
                Violation(
                    "published_non_primary",
                    r.at,
                    f"epoch {r.epoch} names {r.node} on timeline {r.timeline}; "
                    f"PostgreSQL said: {seen or 'nothing within the evidence window'}",
                )
            )
    return found


def _confirms(sample: PgSample, record: Record) -> bool:
    return sample.state == "primary" and record.timeline in (None, sample.timeline)


def epochs_not_increasing(h: History) -> list[Violation]:
    """Epochs go strictly up, in history/ sequence order and in the order a watch saw them."""
    found = []
    for source, items in (("history", h.records), ("watch", h.seen)):
        seq = [(i.at, i.epoch, i.node) for i in items]
        for (_, before, _), (at, epoch, node) in itertools.pairwise(seq):
            if epoch <= before:
                found.append(
                    Violation(
                        "epochs_not_increasing",
                        at,
                        f"{source}: epoch {epoch} ({node}) after {before}",
                    )
                )
    return found


def two_masters_one_timeline(h: History) -> list[Violation]:
    """One timeline has one primary: in the records, and in what PostgreSQL said at once."""
    found = []
    named: dict[int, str] = {}
    for r in h.records:
        if r.timeline is None:
            continue
        first = named.setdefault(r.timeline, r.node)
        if first != r.node:
            found.append(
                Violation(
                    "two_masters_one_timeline",
                    r.at,
                    f"records name {first} and {r.node} on timeline {r.timeline}",
                )
            )
    last: dict[int, PgSample] = {}
    for s in sorted(h.pg, key=lambda s: s.at):
        if s.state != "primary" or s.timeline is None:
            continue
        other = last.get(s.timeline)
        if other and other.node != s.node and s.at - other.at <= 1.0:
            found.append(
                Violation(
                    "two_masters_one_timeline",
                    s.at,
                    f"{other.node} and {s.node} both writable on timeline {s.timeline}",
                )
            )
        last[s.timeline] = s
    return found


def _quiet_from(h: History, t: float) -> float:
    """The first moment at or after `t` when no fault is active."""
    moved = True
    while moved:
        moved = False
        for f in h.faults:
            if f.start <= t < f.end:
                t, moved = f.end, True
    return t


def watcher_not_converged(h: History, bound: float = CONVERGENCE_BOUND_S) -> list[Violation]:
    """Once no fault is active, every watcher acknowledges each record within `bound` (of
    the heal, or of the publication if later), when the quiet lasts that long."""
    found = []
    for r in h.records:
        quiet = _quiet_from(h, r.at)
        deadline = quiet + bound
        if deadline > h.end or any(quiet < f.start < deadline for f in h.faults):
            continue
        for app in h.apps:
            if not any(
                a.app == app and a.epoch is not None and a.epoch >= r.epoch and a.at <= deadline
                for a in h.acks
            ):
                found.append(
                    Violation(
                        "watcher_not_converged",
                        deadline,
                        f"{app} had not acknowledged epoch {r.epoch} ({r.node}) "
                        f"{bound:.0f}s after the faults healed",
                    )
                )
    return found


def bad_proxy_config(h: History) -> list[Violation]:
    """No proxy config is ever blank or invalid, routes nowhere once it has routed (unless
    the newest record then, or up to the apply lag before, withdrew the master), or routes to
    an address no record published."""
    found = []
    routed: set[tuple[str, str]] = set()
    newest_until = [r.at for r in h.records[1:]] + [math.inf]  # each record stayed newest
    for c in sorted(h.configs, key=lambda c: c.at):
        where = routes(c.sink, c.text)
        published = {(r.host, r.port) for r in h.records if r.at <= c.at}
        withdrawn = any(
            r.withdrawn is not None and r.at <= c.at and until >= c.at - APPLY_LAG_S
            for r, until in zip(h.records, newest_until, strict=True)
        )
        problem = ""
        if not c.text.strip():
            problem = "blank"
        elif not c.valid:
            problem = f"invalid ({c.detail})"
        elif not where and (c.app, c.sink) in routed and not withdrawn:
            problem = "routes nowhere"
        elif any(w not in published for w in where):
            problem = f"routes to {where}, never published"
        routed |= {(c.app, c.sink)} if where else set()
        if problem:
            found.append(Violation("bad_proxy_config", c.at, f"{c.app} {c.sink}: {problem}"))
    return found


def process_exited(h: History) -> list[Violation]:
    """No agrajag process ends but by the campaign's own hand."""
    return [
        Violation("process_exited", e.at, f"{e.name} exited with {e.code}")
        for e in h.exits
        if not e.expected
    ]


@dataclass(frozen=True)
class Reign:
    """A node writable on one timeline, from its first to its last such sample (a node that
    does not answer is not taken to have stopped; one that answers as a standby, or on
    another timeline, has)."""

    node: str
    timeline: int
    start: float
    end: float


def reigns(h: History) -> list[Reign]:
    found: list[Reign] = []
    current: dict[str, Reign] = {}
    for s in sorted(h.pg, key=lambda s: s.at):
        reign = current.get(s.node)
        if s.state == "down":
            continue
        if reign and (s.state != "primary" or s.timeline != reign.timeline):
            found.append(current.pop(s.node))
            reign = None
        if s.state == "primary" and s.timeline is not None:
            start = reign.start if reign else s.at
            current[s.node] = Reign(s.node, s.timeline, start, s.at)
    return found + list(current.values())


def _superseded_since(all_reigns: list[Reign], w: Write) -> float | None:
    """Since when, at the write, another node reigned on a newer timeline than the write's
    (a timeline number may come back after a fork is wiped, so only reigns around the write)."""
    if w.timeline is None:
        return None
    starts = [
        r.start
        for r in all_reigns
        if r.node != w.node and r.timeline > w.timeline and r.start < w.at <= r.end + 1.0
    ]
    return min(starts, default=None)


def _classify(h: History) -> dict[str, list[Write]]:
    present = set(h.present)
    all_reigns = reigns(h)
    kinds: dict[str, list[Write]] = defaultdict(list)
    for w in h.writes:
        if not w.ok:
            continue
        since = _superseded_since(all_reigns, w)
        if since is not None:
            kinds["superseded"].append(w)
            if w.at > since + SUPERSEDED_WRITE_BOUND_S:
                kinds["late"].append(w)
        if (w.client, w.seq) in present:
            continue
        if since is not None:
            kinds["lost_split_brain"].append(w)
        elif _failed_over_after(h.records, w):
            kinds["lost_failover"].append(w)
        else:
            kinds["lost_otherwise"].append(w)
    return kinds


def write_report(h: History) -> WriteReport:
    kinds = _classify(h)
    return WriteReport(
        attempted=len(h.writes),
        acknowledged=sum(w.ok for w in h.writes),
        acknowledged_superseded=len(kinds["superseded"]),
        lost_to_failover=len(kinds["lost_failover"]),
        lost_to_split_brain=len(kinds["lost_split_brain"]),
        lost_otherwise=len(kinds["lost_otherwise"]),
    )


def _failed_over_after(records: Iterable[Record], w: Write) -> bool:
    """A record published after the write names a node other than its writer."""
    return any(r.at > w.at and r.node != w.node for r in records)


def lost_writes(h: History) -> list[Violation]:
    """Acknowledged writes missing at the end that no later failover explains."""
    return [
        Violation(
            "lost_write",
            w.at,
            f"{w.client}#{w.seq} acknowledged by {w.node} on timeline {w.timeline}, "
            "missing at the end, no failover after it",
        )
        for w in _classify(h)["lost_otherwise"]
    ]


def superseded_writes(h: History) -> list[Violation]:
    """A primary that another node superseded on a newer timeline takes writes through the
    proxies for no longer than the bound (one violation per client and superseded primary)."""
    groups: dict[tuple[str, str | None, int | None], list[Write]] = defaultdict(list)
    for w in _classify(h)["late"]:
        groups[(w.client, w.node, w.timeline)].append(w)
    return [
        Violation(
            "write_to_superseded_primary",
            ws[0].at,
            f"{client}: {len(ws)} writes acknowledged by {node} on timeline {tl} more than "
            f"{SUPERSEDED_WRITE_BOUND_S:.0f}s after a newer timeline was writable, over "
            f"{ws[-1].at - ws[0].at:.1f}s",
        )
        for (client, node, tl), ws in groups.items()
    ]


RULES: list[Callable[[History], list[Violation]]] = [
    published_non_primary,
    epochs_not_increasing,
    two_masters_one_timeline,
    watcher_not_converged,
    bad_proxy_config,
    process_exited,
    lost_writes,
    superseded_writes,
]


def check(h: History) -> list[Violation]:
    """Every violation of every rule, in time order."""
    return sorted((v for rule in RULES for v in rule(h)), key=lambda v: v.at)
