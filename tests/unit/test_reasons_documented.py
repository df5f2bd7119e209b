"""Every refusal reason the daemon can log is explained in the README's publishing rules."""

from __future__ import annotations

from agrajag.reasons import Reason
from tools.harness.shipped import CONF_D


def test_every_reason_is_in_the_readmes_publishing_rules() -> None:
    readme = (CONF_D.parent / "README.md").read_text()
    rules = readme.split("### Publishing rules", 1)[1].split("\n### ", 1)[0]
    missing = [r.value for r in Reason if f"`{r.value}`" not in rules]
    assert not missing, f"README's publishing rules do not explain {missing}"
