"""What to publish: a pure function of what the daemon saw.

`decide` takes values (repmgr's view, an INSERT-check round, the master znode as read, the
guard's version) and returns a value: publish this record, nothing to do, or refuse with a
reason. The daemon does the I/O around it; the rules are here, testable case by case.
The rules are the README's publishing rules, numbered as there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agrajag.daemon.probe_values import Outcome, ProbeRound
from agrajag.daemon.view import ClusterView, Node
from agrajag.reasons import Reason
from agrajag.record import MasterRecord
from agrajag.registry.values import Current


@dataclass(frozen=True, slots=True)
class Publish:
    """Write `record` with the guarded compare-and-set, on the versions it was decided on:
    the master znode's (-1: absent) and the new master's liveness node's."""

    record: MasterRecord
    master_version: int
    guard_version: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    """A split brain in which the published master is the former primary: write `record`
    (the same master, withdrawn, at the next epoch) with a compare-and-set on the master
    znode's `master_version`. It publishes no master (rules 1 and 2 stand), so no guard."""

    record: MasterRecord
    master_version: int


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The published record already names repmgr's primary: nothing to write."""

    record: MasterRecord


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not publish, and say why."""

    reason: Reason
    detail: str


Decision = Publish | Withdraw | Unchanged | Refuse


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything one decision looks at. `current` is why the registry is not usable, if so;
    `guard_version` is the version of the candidate's `nodes/<node>`, None when absent."""

    cluster: str
    me: str
    view: ClusterView
    probe: ProbeRound
    current: Current | Refuse
    guard_version: int | None
    now: str
    epoch_floor: int = 0  # the highest epoch seen anywhere (rule 6); read before a publish


def decide(s: Situation) -> Decision:
    """Apply the publishing rules in order; the first that fails names the refusal."""
    if s.probe.split_brain:  # rule 2, first: a split brain is reported whatever repmgr says
        split_brain = Refuse(Reason.SPLIT_BRAIN, f"writable: {', '.join(s.probe.writable)}")
        return _withdrawal(s) or split_brain
    if s.view.problems:  # rule 1
        problem = s.view.problems[0]
        details = "; ".join(p.detail for p in s.view.problems)
        return Refuse(problem.reason, details)
    unusable = [n for n in s.view.data_nodes if n.address_problem]
    if unusable:  # rule 1: every node must be checkable (rule 2), the primary publishable
        details = "; ".join(f"{n.name}: {n.address_problem}" for n in unusable)
        return Refuse(Reason.UNUSABLE_CONNINFO, details)
    candidate = s.view.primary
    assert candidate is not None  # no problems means exactly one running primary
    refusal = _check_refusal(candidate, s.probe)  # rule 2
    if refusal:
        return refusal
    if isinstance(s.current, Refuse):  # rule 8
        return s.current
    published = s.current.record
    timeline = _timeline(candidate, s.probe)
    refusal = _timeline_refusal(candidate, timeline, published)  # rule 3
    if refusal:
        return refusal
    # Rule 6: higher than any epoch the registry shows or this daemon has seen.
    record = _record(s, candidate, timeline, epoch=max(s.current.last_epoch, s.epoch_floor) + 1)
    # Rule 4, unless the registry went back below an epoch seen before (rule 6): a wipe or a
    # restore; then the same master is written again, above every epoch seen.
    # A withdrawn record is never the same master: publishing its node again writes anew.
    if record.same_master(published) and published and published.epoch >= s.epoch_floor:
        return Unchanged(published)
    if s.guard_version is None:  # rule 5
        return Refuse(Reason.GUARD_MISSING, f"no live agrajag daemon on {candidate.name}")
    return Publish(record, s.current.version, s.guard_version)


def _withdrawal(s: Situation) -> Withdraw | None:
    """The withdrawal rule: in a split brain, a published master that takes writes on a lower
    timeline than another writable node is a former primary (every promotion starts a new
    timeline), and the writes routed to it are lost when it is fenced and rewound. Withdraw
    it: same master, next epoch (rule 6), `withdrawn` saying why. Only on proof: both
    timelines from the INSERT check, the check made at the record's own address; a record
    already withdrawn stays as it is (no epoch churn), and a published master that is not
    writable takes no writes to lose."""
    if isinstance(s.current, Refuse) or s.current.record is None:
        return None
    published = s.current.record
    check, node = s.probe.by_name(published.node), s.view.by_name(published.node)
    if not published.routes or check is None or check.timeline is None or node is None:
        return None
    at_its_address = (node.host, node.port) == (published.host, published.port)
    if check.outcome is not Outcome.WRITABLE or not at_its_address:
        return None
    writable = [c for c in s.probe.checks if c.outcome is Outcome.WRITABLE]
    newer = [c for c in writable if (c.timeline or 0) > check.timeline]  # None: no proof
    if not newer:
        return None
    why = (
        f"{published.node} takes writes on timeline {check.timeline}, {newer[0].name} on "
        f"timeline {newer[0].timeline}: {published.node} is a former primary"
    )
    record = replace(
        published,
        epoch=max(s.current.last_epoch, s.epoch_floor) + 1,
        published_by=s.me,
        published_at=s.now,
        evidence=evidence(s.view, s.probe),
        withdrawn=why,
    )
    return Withdraw(record, s.current.version)


def _check_refusal(candidate: Node, probe: ProbeRound) -> Refuse | None:
    """Rule 2: exactly the candidate must have accepted the INSERT."""
    check = probe.by_name(candidate.name)
    if check is None:
        return Refuse(Reason.CHECK_FAILED, f"{candidate.name} has no connection info to check")
    if probe.writable != (candidate.name,):
        return Refuse(
            Reason.CHECK_FAILED,
            f"{candidate.name}: {check.outcome}{': ' + check.detail if check.detail else ''}",
        )
    return None


def _timeline(candidate: Node, probe: ProbeRound) -> int | None:
    """The timeline the candidate told the INSERT check, else the one repmgr showed."""
    check = probe.by_name(candidate.name)
    return check.timeline if check and check.timeline is not None else candidate.timeline


def _timeline_refusal(
    candidate: Node, timeline: int | None, published: MasterRecord | None
) -> Refuse | None:
    """Rule 3: never a lower timeline than the published one (an old view), and a change of
    master only onto a higher one: every promotion starts a new timeline, so another master
    on the same timeline is a second primary promoted from the same parent, and publishing
    each daemon's own would flip the master every round. Unknown timelines do not block."""
    if published is None or timeline is None or published.timeline is None:
        return None
    on = f"{candidate.name} is on timeline {timeline}, {published.node} was published on "
    if timeline < published.timeline:
        return Refuse(Reason.STALE_TIMELINE, f"{on}timeline {published.timeline}")
    if timeline == published.timeline and published.node != candidate.name:
        return Refuse(
            Reason.TIMELINE_NOT_NEWER,
            f"{on}the same timeline: a change of master needs a newer one",
        )
    return None


def _record(s: Situation, node: Node, timeline: int | None, epoch: int) -> MasterRecord:
    assert node.host is not None and node.port is not None  # the INSERT check connected to it
    return MasterRecord(
        cluster=s.cluster,
        epoch=epoch,
        node_id=node.node_id,
        node=node.name,
        host=node.host,
        port=node.port,
        timeline=timeline,
        published_by=s.me,
        published_at=s.now,
        evidence=evidence(s.view, s.probe),
    )


def evidence(view: ClusterView, probe: ProbeRound) -> dict[str, Any]:
    """What the publisher saw, kept in the record and the history for the humans."""
    return {
        "repmgr": [
            {
                "id": n.node_id,
                "name": n.name,
                "role": n.role,
                "status": f"{n.status_marker} {n.status}".strip(),
                "timeline": n.timeline,
            }
            for n in view.nodes
        ],
        "checks": {c.name: str(c.outcome) for c in probe.checks},
        "writable": list(probe.writable),
        "timelines": {c.name: c.timeline for c in probe.checks if c.timeline is not None},
        "witnesses": [n.name for n in view.nodes if n.is_witness],  # not checked (rule 2)
    }
