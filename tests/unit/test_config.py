"""Configuration errors name the file and the key; the shipped examples load."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agrajag.config import MetricsSettings, Section
from agrajag.daemon.settings import DaemonSettings
from agrajag.errors import ConfigError
from agrajag.metrics import serve
from agrajag.registry.client import Registry
from agrajag.zookeeper_settings import Role, ZooKeeperSettings
from tests.factories import shipped_config


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def daemon_example(tmp_path: Path) -> dict[str, Any]:
    return shipped_config("daemon.example.yaml", tmp_path, Role.DAEMON)


def test_the_shipped_daemon_example_loads(tmp_path: Path) -> None:
    s = DaemonSettings.load(write(tmp_path, daemon_example(tmp_path)))
    assert (s.cluster, s.node, s.zookeeper.root) == ("main", "node1", "/agrajag")
    assert s.zookeeper.auth and s.zookeeper.acl and s.zookeeper.tls
    assert s.check.credentials.user == "agrajag" and s.check.deadline_s == 2
    assert s.metrics.port == 9187 and s.metrics.address == "127.0.0.1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("cluster"), "cluster: missing"),
        (lambda d: d.update(node="node 1"), "node: must be a plain name"),
        (lambda d: d["zookeeper"].pop("hosts"), "zookeeper.hosts: missing"),
        (lambda d: d["zookeeper"].update(root="agrajag"), "zookeeper.root: must be an absolute"),
        (
            lambda d: d["zookeeper"].update(session_timeout_s="10"),
            "session_timeout_s: must be a number",
        ),
        (lambda d: d["check"].update(deadline_s=0), "check.deadline_s: must be >= 0.1"),
        (lambda d: d["check"].pop("user"), "check.user: missing"),
        (lambda d: d["metrics"].update(port=70000), "metrics.port: must be <= 65535"),
        (lambda d: d.update(poll_intervall_s=1), "poll_intervall_s: unknown key"),
        (lambda d: d["repmgr"].update(timeout=1), "repmgr.timeout: unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = daemon_example(tmp_path)
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        DaemonSettings.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_unreadable_and_invalid_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: cannot read"):
        DaemonSettings.load(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster: [main\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        DaemonSettings.load(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        DaemonSettings.load(listing)


def test_a_bad_zookeeper_connect_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"zookeeper\.hosts 'zk1:notaport': Port could not"):
        Registry.connect(ZooKeeperSettings("zk1:notaport"))


def test_a_metrics_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            serve(MetricsSettings(port=port), CollectorRegistry())


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        (["main", "main"], r"watch.yaml: sinks\[0\].clusters\[1\]: 'main' is listed twice"),
        (["main", "a b"], r"watch.yaml: sinks\[0\].clusters\[1\]: must be a plain name, got 'a b'"),
        ("main", r"watch.yaml: sinks\[0\].clusters: must be a list"),
    ],
)
def test_a_list_of_names_is_checked_name_by_name(clusters: object, message: str) -> None:
    section = Section({"clusters": clusters}, "watch.yaml", "sinks[0].")
    with pytest.raises(ConfigError, match=message):
        section.name_list("clusters")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize(
    ("path", "key"),
    [
        ((), "poll_interval_s"),
        (("check",), "deadline_s"),
        (("zookeeper",), "call_timeout_s"),
        (("repmgr",), "timeout_s"),
    ],
)
def test_nan_and_infinity_are_refused_naming_the_key(
    tmp_path: Path, value: str, path: tuple[str, ...], key: str
) -> None:
    data = daemon_example(tmp_path)
    section = data
    for name in path:
        section = section[name]
    section[key] = 1.0
    text = yaml.safe_dump(data).replace(f"{key}: 1.0", f"{key}: {value}")
    config = tmp_path / "daemon.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        DaemonSettings.load(config)
    dotted = ".".join([*path, key])
    assert str(err.value).startswith(f"{config}: {dotted}: must be a finite number")


def test_a_missing_wakeup_socket_directory_is_a_clear_error(tmp_path: Path) -> None:
    data = daemon_example(tmp_path)
    data["wakeup_socket"] = str(tmp_path / "absent" / "main.sock")
    data["metrics"] = {}
    config = write(tmp_path, data)
    done = subprocess.run(
        [sys.executable, "-m", "agrajag", "daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"directory {tmp_path / 'absent'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
