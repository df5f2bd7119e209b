"""How the daemon tells a decision: one log line and one count, each at the level it deserves
(a withdrawal is an error, a refusal a warning, nothing to do a debug line)."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from agrajag.daemon.decision import Decision, Publish, Refuse, Withdraw
from agrajag.reasons import Reason

log = logging.getLogger("agrajag.daemon")


def tell(decision: Decision, cluster: str, trigger: str, decisions: Counter) -> None:
    """Log `decision` and count it in `decisions` (by kind and reason)."""
    if isinstance(decision, Publish):
        r = decision.record
        decisions.labels(cluster, "publish", "ok").inc()
        log.info(
            "cluster=%s decision=publish node=%s host=%s port=%d epoch=%d trigger=%s",
            cluster, r.node, r.host, r.port, r.epoch, trigger,
        )  # fmt: skip
    elif isinstance(decision, Withdraw):
        r = decision.record
        decisions.labels(cluster, "withdraw", Reason.SPLIT_BRAIN.value).inc()
        log.error(
            "cluster=%s decision=withdraw node=%s epoch=%d trigger=%s detail=%r",
            cluster, r.node, r.epoch, trigger, r.withdrawn,
        )  # fmt: skip
    elif isinstance(decision, Refuse):
        decisions.labels(cluster, "refuse", decision.reason.value).inc()
        log.warning(
            "cluster=%s decision=refuse reason=%s trigger=%s detail=%r",
            cluster, decision.reason.value, trigger, decision.detail,
        )  # fmt: skip
    else:
        decisions.labels(cluster, "unchanged", "ok").inc()
        log.debug(
            "cluster=%s decision=unchanged node=%s epoch=%d trigger=%s",
            cluster, decision.record.node, decision.record.epoch, trigger,
        )  # fmt: skip
