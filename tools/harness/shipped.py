"""What the project ships, as the tests use it: conf.d's examples and the `agrajag` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

CONF_D = Path(__file__).resolve().parents[2] / "conf.d"
#: The console script of the environment running the tests (`postgres` can run Debian's python3).
AGRAJAG = str(Path(sys.executable).parent / "agrajag")
AGRAJAG_NOTIFY = str(Path(sys.executable).parent / "agrajag-notify")


def example(name: str) -> dict[str, Any]:
    """A shipped example config, so the tests prove the examples."""
    data: dict[str, Any] = yaml.safe_load((CONF_D / name).read_text())
    return data


def event_command(socket: str) -> str:
    """conf.d's repmgr `event_notification_command`, waking the daemon listening on `socket`."""
    lines = (CONF_D / "repmgr-event-notification.conf").read_text().splitlines()
    line = next(x for x in lines if x.startswith("event_notification_command="))
    return line.partition("=")[2].strip("'").replace("/run/agrajag/main.sock", socket)
