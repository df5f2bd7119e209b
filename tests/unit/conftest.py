"""Fixtures the unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from agrajag.daemon.settings import DaemonSettings

#: A daemon on node3 of cluster main; nothing else differs from the defaults.
DAEMON_CONFIG = """\
cluster: main
node: node3
zookeeper: {hosts: "127.0.0.1:2181"}
check: {user: agrajag}
"""


@pytest.fixture
def settings(tmp_path: Path) -> DaemonSettings:
    """The settings a unit test's daemon runs with (a round's I/O is faked, not configured)."""
    path = tmp_path / "daemon.yaml"
    path.write_text(DAEMON_CONFIG)
    return DaemonSettings.load(path)
