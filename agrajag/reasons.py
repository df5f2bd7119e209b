"""Why a daemon did not publish: one vocabulary for every producer of a refusal.

repmgr's view (`daemon.repmgr`), the publishing rules (`daemon.decision`) and the guarded
write (`registry.client.publish`) all name their refusals with these members, so no layer
converts another's names. The values are stable: logs, the `reason` and `result` metric labels
and the alert rules use them.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why nothing was published this round."""

    NO_PRIMARY = "no_primary"  # repmgr shows no running primary
    MULTIPLE_PRIMARIES = "multiple_primaries"  # repmgr shows more than one
    ANOMALY = "anomaly"  # a `!` status: some node's metadata disagrees with reality
    SPLIT_BRAIN = "split_brain"  # more than one node accepted the INSERT
    CHECK_FAILED = "check_failed"  # repmgr's primary did not accept the INSERT
    STALE_TIMELINE = "stale_timeline"  # the candidate's timeline is behind the published one
    TIMELINE_NOT_NEWER = "timeline_not_newer"  # another master, but on the published timeline
    GUARD_MISSING = "guard_missing"  # the candidate's daemon has no liveness node
    NOT_CONNECTED = "not_connected"  # this daemon's ZooKeeper session is not usable
    LOST_RACE = "lost_race"  # another daemon published first (the compare-and-set said so)
    LAYOUT_MISSING = "layout_missing"  # the cluster's subtree lacks history/ (or all of it)
    REPMGR_FAILED = "repmgr_failed"  # `repmgr cluster show` gave no usable table
    UNUSABLE_CONNINFO = "unusable_conninfo"  # a node's conninfo names no single TCP address
    NODE_NAME_TAKEN = "node_name_taken"  # another live daemon registered this node's name
    REGISTRY_ERROR = "registry_error"  # ZooKeeper answered, but refused or failed the request
