"""`python -m build` makes a wheel and an sdist; the wheel installs into a fresh virtual
environment, its `agrajag` command runs, and it carries conf.d (what the README tells users
to copy), found with `agrajag conf-dir`.

About a minute: the build fetches setuptools and the install agrajag's dependencies from
the package index (pip's cache makes later runs quicker).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agrajag import __version__
from tools.harness.shipped import CONF_D

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SOURCE = CONF_D.parent


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]} {done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_and_carries_conf_d(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, SOURCE, cwd=tmp_path)
    wheel = dist / f"agrajag-{__version__}-py3-none-any.whl"
    sdist = dist / f"agrajag-{__version__}.tar.gz"
    assert sorted(dist.iterdir()) == [wheel, sdist]
    with tarfile.open(sdist) as tar:
        assert f"agrajag-{__version__}/agrajag/conf.d/daemon.example.yaml" in tar.getnames()

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)
    agrajag = venv / "bin" / "agrajag"

    assert run(agrajag, "--version", cwd=tmp_path) == f"agrajag {__version__}\n"
    help_text = run(agrajag, "--help", cwd=tmp_path)
    for command in ("daemon", "watch", "notify", "status", "registry", "check-config"):
        assert command in help_text
    conf_dir = Path(run(agrajag, "conf-dir", cwd=tmp_path).strip())
    assert conf_dir.is_relative_to(venv)
    shipped = {p.name: p.read_bytes() for p in CONF_D.iterdir()}
    assert {p.name: p.read_bytes() for p in conf_dir.iterdir()} == shipped
    # the installed example is one the installed command accepts, up to the missing files
    done = subprocess.run(
        [agrajag, "check-config", conf_dir / "watch-sinks.example.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "sinks[0].template: file not found: /etc/agrajag/haproxy.cfg.j2" in done.stderr
