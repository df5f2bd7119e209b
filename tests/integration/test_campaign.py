"""A short fault campaign on fixed seeds (tools/campaign): the whole system on simulated hosts,
clients writing through HAProxy and PgBouncer, seeded faults, and the checker over the whole
history. A failing seed reruns exactly: `python -m tools.campaign.run --seed N --steps 4`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.campaign.run import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
]

#: Between them: failovers back and forth (node and PostgreSQL crashes), the old primary back
#: without rejoin (once the new one is published), a frozen daemon and watcher, ZooKeeper
#: server kill and quorum loss, the primary and a standby cut from ZooKeeper, an app host cut
#: from ZooKeeper. Not here: the faults that can leave the old primary writable before the new
#: one is published (a long SIGSTOP of the primary, the primary cut from its peers, the old
#: primary back at once): agrajag then keeps routing to it, a known gap the soak reports.
SEEDS = [19, 140]
STEPS = 4


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", SEEDS)
def test_campaign_on_a_fixed_seed_finds_no_violation(seed: int, tmp_path: Path) -> None:
    outcome = run(seed, STEPS, quiet_s=10, out=tmp_path)
    assert outcome.passed, outcome.summary()
    assert outcome.history.records and outcome.writes.acknowledged > 0
