"""What a daemon says about itself in its liveness node `nodes/<node>`, kept current.

Its repmgr node id (from the view) and its last decision with the reason and since when, so
that `agrajag status` shows each daemon's verdict and a suspected split brain stands out.
Written when it changes, at most once every `min_interval_s`: a write bumps the node's
version, which is the guard of a publish (rule 7), so it must stay rare.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from agrajag import __version__
from agrajag.daemon.decision import Decision, Publish, Refuse, Withdraw
from agrajag.reasons import Reason
from agrajag.record import NodeRecord


@dataclass
class Liveness:
    """The current liveness record, and whether it still has to be written."""

    node: str
    started_at: str
    min_interval_s: float = 5.0
    node_id: int | None = None
    decision: str | None = None
    reason: str | None = None
    decided_at: str | None = None
    dirty: bool = False
    written_at: float = -math.inf

    def record(self) -> NodeRecord:
        return NodeRecord(
            node=self.node,
            node_id=self.node_id,
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
            decision=self.decision,
            reason=self.reason,
            decided_at=self.decided_at,
        )

    def saw_node_id(self, node_id: int | None) -> None:
        """repmgr's id of this node, when the view shows it."""
        if node_id is not None and node_id != self.node_id:
            self.node_id = node_id
            self.dirty = True

    def decided(self, decision: Decision, now: str) -> None:
        """A round's decision; `decided_at` moves only when the verdict changes."""
        kind = "publish" if isinstance(decision, Publish) else "unchanged"
        reason = None
        if isinstance(decision, Refuse):
            kind, reason = "refuse", decision.reason.value
        elif isinstance(decision, Withdraw):  # in a split brain: `agrajag status` says so
            kind, reason = "withdraw", Reason.SPLIT_BRAIN.value
        if (kind, reason) != (self.decision, self.reason):
            self.decision, self.reason, self.decided_at = kind, reason, now
            self.dirty = True

    def due(self, now: float) -> bool:
        """True when a change waits and the last write is `min_interval_s` old."""
        return self.dirty and now - self.written_at >= self.min_interval_s

    def written(self, now: float) -> None:
        self.dirty = False
        self.written_at = now
