"""`agrajag check-config` on daemon and watcher configs, with the real `haproxy -c`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agrajag.zookeeper_settings import Role
from tests.factories import shipped_config
from tools.harness.watch import example_sinks

pytestmark = pytest.mark.integration


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agrajag", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def secrets_dir(tmp_path: Path) -> Path:
    """Where the examples' secret and TLS files are made, apart from what the checks write."""
    home = tmp_path / "secrets"
    home.mkdir(exist_ok=True)
    return home


def watch_config(tmp_path: Path, **changes: Any) -> Path:
    """conf.d's watcher example with all three sinks, rendering into `tmp_path`."""
    conf = shipped_config("watch.example.yaml", secrets_dir(tmp_path), Role.WATCHER)
    conf["sinks"] = list(example_sinks(tmp_path).values())
    conf["state_file"] = str(tmp_path / "state.json")
    conf.update(changes)
    path = tmp_path / "watch.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_a_good_watcher_config_passes_without_touching_dest(tmp_path: Path) -> None:
    config = watch_config(tmp_path)
    (tmp_path / "haproxy.cfg").write_text("# the running config\n")
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{config}: OK (watcher config, 3 sinks rendered and checked)\n"
    assert (tmp_path / "haproxy.cfg").read_text() == "# the running config\n"
    assert not (tmp_path / "databases.ini").exists()
    assert not (tmp_path / "primary.env").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "secrets", "watch.yaml"]


def test_every_problem_of_a_watcher_config_is_listed(tmp_path: Path) -> None:
    sinks = example_sinks(tmp_path)
    sinks["haproxy"]["params"]["bind"] = "no-such-address.invalid"  # haproxy -c refuses it
    sinks["pgbouncer"]["admin"] = {"host": "127.0.0.1", "port": 6432}
    sinks["pgbouncer"]["cut"] = "sometimes"
    env = tmp_path / "env.j2"
    env.write_text("PGHOST={{ clusters.main.host }}\n")  # fails when main has no master
    sinks["template"]["src"] = str(env)
    config = watch_config(tmp_path, fail_mode="sometimes", reconcile_intervall_s=1)
    conf = yaml.safe_load(config.read_text())
    conf["sinks"] = [sinks["haproxy"], sinks["pgbouncer"], sinks["template"]]
    config.write_text(yaml.safe_dump(conf))
    (tmp_path / "haproxy.cfg").write_text("# the running config\n")

    done = check_config(config)
    assert done.returncode == 1
    problems = done.stderr.splitlines()
    assert problems[-1] == f"{config}: 6 problems"
    expected = [
        f"{config}: reconcile_intervall_s: unknown key",
        f"{config}: fail_mode: must be one of open, closed, got 'sometimes'",
        f"{config}: sinks[1].admin.user: missing",
        f"{config}: sinks[1].cut: must be one of reconnect, kill, got 'sometimes'",
        f"{config}: sinks[0] (haproxy), with a sample master: check: ",
        f"{config}: sinks[2] (app-env), with no master: render {env}:1: UndefinedError",
    ]
    for line, start in zip(problems, expected, strict=False):
        assert line.startswith(start), (line, start)
    assert "no-such-address.invalid" in problems[4]  # haproxy's own words, quoted
    assert (tmp_path / "haproxy.cfg").read_text() == "# the running config\n"


def daemon_config(tmp_path: Path, **changes: Any) -> Path:
    repmgr_conf = tmp_path / "repmgr.conf"
    repmgr_conf.write_text("node_id=1\n")
    conf = shipped_config("daemon.example.yaml", secrets_dir(tmp_path), Role.DAEMON)
    conf["repmgr"].update(bin=sys.executable, config=str(repmgr_conf))
    conf["check"]["passfile"] = str(repmgr_conf)
    conf.update(changes)
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_a_good_daemon_config_passes(tmp_path: Path) -> None:
    config = daemon_config(tmp_path)
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{config}: OK (daemon config of node node1 in cluster main)\n"


def test_every_problem_of_a_daemon_config_is_listed(tmp_path: Path) -> None:
    config = daemon_config(
        tmp_path, node="no/slash", poll_interval_s=0, zookeeper={"hosts": "zk1:2181", "root": "x"}
    )
    done = check_config(config)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{config}: node: must be a plain name (letters, digits, ._@-), got 'no/slash'",
        f"{config}: zookeeper.root: must be an absolute znode path like /agrajag, got 'x'",
        f"{config}: poll_interval_s: must be >= 0.1, got 0",
        f"{config}: 3 problems",
    ]


def test_the_files_a_daemon_needs_are_looked_for(tmp_path: Path) -> None:
    config = daemon_config(tmp_path)
    conf = yaml.safe_load(config.read_text())
    conf["repmgr"].update(bin=str(tmp_path / "repmgr"), config=str(tmp_path / "nosuch.conf"))
    config.write_text(yaml.safe_dump(conf))
    done = check_config(config)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{config}: repmgr.bin: not an executable file: {tmp_path / 'repmgr'}",
        f"{config}: repmgr.config: file not found: {tmp_path / 'nosuch.conf'}",
        f"{config}: 2 problems",
    ]


def test_a_file_that_is_neither_says_so(tmp_path: Path) -> None:
    config = tmp_path / "other.yaml"
    config.write_text("zookeeper: {hosts: 127.0.0.1:2181}\n")
    done = check_config(config)
    assert done.returncode == 1
    assert "cannot tell a daemon config" in done.stderr
