"""conf.d's systemd units: `systemd-analyze verify` accepts them without a single warning.

`systemd-analyze verify` reads unit files without a running systemd. It needs every
ExecStart binary to exist, so the test installs the units with this environment's
`agrajag` in place of /usr/local/bin/agrajag, as an operator's copy would have it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agrajag.daemon.settings import DaemonSettings
from agrajag.zookeeper_settings import Role
from tests.factories import shipped_config
from tools.harness.shipped import AGRAJAG, CONF_D

UNITS = {"agrajag-daemon@.service": "agrajag-daemon@main.service", "agrajag-watch.service": None}


@pytest.fixture
def installed(tmp_path: Path) -> list[Path]:
    paths = []
    for name, instance in UNITS.items():
        text = (CONF_D / name).read_text()
        assert "ExecStart=/usr/local/bin/agrajag " in text
        (tmp_path / name).write_text(text.replace("/usr/local/bin/agrajag", AGRAJAG))
        paths.append(tmp_path / (instance or name))
    return paths


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    systemd_analyze = shutil.which("systemd-analyze")
    assert systemd_analyze, "systemd-analyze is missing: `make setup` installs systemd"
    return subprocess.run(
        [systemd_analyze, "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_units_verify_cleanly(installed: list[Path]) -> None:
    done = verify(*installed)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


def test_verify_would_catch_a_broken_unit(installed: list[Path]) -> None:
    """The check above can fail: a misspelt directive is reported."""
    watch = installed[1]
    watch.write_text(watch.read_text().replace("ProtectSystem=", "ProtectSytem="))
    assert "Unknown key 'ProtectSytem'" in verify(watch).stderr


def test_the_daemons_default_wakeup_socket_is_in_its_runtime_directory(tmp_path: Path) -> None:
    """Several clusters' daemons share /run/agrajag: it is created for the PostgreSQL user
    (who cannot create it in /run) and kept when one instance stops, so that the others'
    wake-up sockets stay; the socket each daemon uses by default is in it."""
    unit = set((CONF_D / "agrajag-daemon@.service").read_text().splitlines())
    assert {"User=postgres", "RuntimeDirectory=agrajag", "RuntimeDirectoryPreserve=yes"} <= unit
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump(shipped_config("daemon.example.yaml", tmp_path, Role.DAEMON)))
    settings = DaemonSettings.load(config)
    assert Path(settings.wakeup_socket).parent == Path("/run/agrajag")
