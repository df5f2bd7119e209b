"""docker/run.py says clearly when there is no Docker engine (as on the CI machines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "docker" / "run.py"


def test_without_an_engine_it_exits_2_naming_the_problem(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(RUN), "test"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no Docker engine reachable" in done.stderr


def test_it_only_runs_what_it_knows() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "rm-rf"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr
