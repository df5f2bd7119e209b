"""docker/: the configs the images get from conf.d's examples, and the runner's own logic.

The topology itself is tested for real by `make docker-test` (docker/topology.py test).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agrajag.config import Section
from agrajag.daemon.settings import DaemonSettings
from agrajag.errors import ConfigError
from agrajag.zookeeper_settings import Role, ZooKeeperSettings
from tools.harness.shipped import CONF_D, example

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


container = load(DOCKER / "agrajag-container.py", "agrajag_container")
topology = load(DOCKER / "topology.py", "agrajag_topology")


def overlaid(example_name: str, *overlays: str, sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config an entrypoint writes: the example, docker/config/'s overlays, --set."""
    result: dict[str, Any] = example(example_name)
    for name in overlays:
        result = container.overlay(result, yaml.safe_load((DOCKER / "config" / name).read_text()))
    for text in sets:
        result = container.overlay(result, container.assignment(text))
    return result


#: the topology's secret holding each ZooKeeper user's password
SECRET_OF = dict(topology.IDENTITIES.values())
#: compose's secrets: {name: the file's name in the secrets directory}
MOUNTED = {
    name: Path(secret["file"]).name
    for name, secret in yaml.safe_load((DOCKER / "compose.yaml").read_text())["secrets"].items()
}


def with_secrets(conf: dict[str, Any], secrets: Path, tmp_path: Path) -> dict[str, Any]:
    """`conf` as the entrypoints complete it, on this machine: the topology's zookeeper.acl;
    a file under /run/secrets/ is compose's secret of that name, from `secrets`; each
    private file (passwords, TLS key) a copy of its secret in tmp_path, mode 0600."""
    conf = container.overlay(conf, yaml.safe_load((secrets / MOUNTED["zookeeper-acl"]).read_text()))
    zookeeper = conf["zookeeper"]
    identity = SECRET_OF[zookeeper["auth"]["user"]]
    private = [
        (zookeeper["auth"], "password_file", identity),
        (zookeeper["tls"], "key", f"{identity}-key"),
    ]
    private += [
        (s["admin"], "password_file", "pgbouncer-admin")
        for s in conf.get("sinks", [])
        if "admin" in s
    ]
    private += [(conf["check"], "password_file", "check")] if "check" in conf else []
    for section, key, secret in private:
        copy = tmp_path / Path(section[key]).name
        copy.write_text((secrets / MOUNTED[secret]).read_text())
        copy.chmod(0o600)
        section[key] = str(copy)
    for key, path in zookeeper["tls"].items():
        if path.startswith("/run/secrets/"):
            zookeeper["tls"][key] = str(secrets / MOUNTED[path.removeprefix("/run/secrets/")])
    return conf


def load_settings(conf: dict[str, Any], tmp_path: Path) -> DaemonSettings:
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(conf))
    return DaemonSettings.load(path)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    topology.make_secrets(directory)
    return directory


def test_the_topology_makes_its_passwords_once_and_names_them_in_one_acl(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    topology.make_secrets(directory)
    passwords = {f.name: f.read_text() for f in directory.glob("*.password")}
    assert sorted(passwords) == sorted(f"{n}.password" for n in topology.PASSWORDS)
    assert len(set(passwords.values())) == len(passwords)  # random, one each
    assert directory.stat().st_mode & 0o777 == 0o700
    topology.make_secrets(directory)
    assert passwords == {f.name: f.read_text() for f in directory.glob("*.password")}
    acl = yaml.safe_load((directory / "zookeeper-acl.yaml").read_text())["zookeeper"]["acl"]

    def digest_id(user: str, password: str) -> str:  # ZooKeeper's digest scheme
        sha1 = hashlib.sha1(f"{user}:{password}".encode()).digest()
        return f"{user}:{base64.b64encode(sha1).decode()}"

    daemon = passwords["zookeeper-daemon.password"].removesuffix("\n")
    assert acl == {
        "daemons": [digest_id("agrajag-daemon", daemon)],
        "watchers": [digest_id("agrajag-watch", passwords["zookeeper-watch.password"][:-1])],
    }


def test_daemon_config_is_the_example_with_the_topologys_identity_acl_and_check_password(
    secrets: Path, tmp_path: Path
) -> None:
    conf = overlaid("daemon.example.yaml", "zookeeper.yaml", "daemon.yaml", sets=("node=node2",))
    settings = load_settings(with_secrets(conf, secrets, tmp_path), tmp_path)
    assert settings.node == "node2"
    assert settings.metrics.address == "0.0.0.0"
    zk = settings.zookeeper
    assert zk.hosts == example("daemon.example.yaml")["zookeeper"]["hosts"]
    assert zk.auth is not None and zk.acl is not None and zk.tls is not None
    assert zk.auth.id in zk.acl.daemons and not zk.acl.world_read
    assert zk.tls.ca == str(secrets / "zookeeper-ca.pem")
    assert zk.tls.cert == str(secrets / "zookeeper-daemon.pem")
    check = settings.check.credentials
    assert check.password == (secrets / "check.password").read_text().removesuffix("\n")
    assert check.passfile is None
    shipped = example("daemon.example.yaml")
    assert settings.wakeup_socket == shipped["wakeup_socket"]


def test_a_daemon_with_another_password_than_the_acls_does_not_start(
    secrets: Path, tmp_path: Path
) -> None:
    conf = with_secrets(
        overlaid("daemon.example.yaml", "zookeeper.yaml", "daemon.yaml"), secrets, tmp_path
    )
    Path(conf["zookeeper"]["auth"]["password_file"]).write_text("not the topology's\n")
    with pytest.raises(ConfigError, match="user agrajag-daemon with this password is not in"):
        load_settings(conf, tmp_path)


@pytest.mark.parametrize("proxy", ["haproxy", "pgbouncer"])
def test_each_watcher_has_the_watch_identity_in_the_topologys_acl(
    proxy: str, secrets: Path, tmp_path: Path
) -> None:
    conf = with_secrets(
        overlaid("watch.example.yaml", "zookeeper.yaml", f"watch-{proxy}.yaml"), secrets, tmp_path
    )
    zk = ZooKeeperSettings.from_section(Section(conf["zookeeper"], "watch.yaml"), Role.WATCHER)
    assert zk.auth is not None and zk.acl is not None
    assert zk.auth.user == "agrajag-watch" and zk.auth.id in zk.acl.watchers
    assert zk.hosts == example("watch.example.yaml")["zookeeper"]["hosts"]
    assert zk.tls is not None and zk.tls.cert == str(secrets / "zookeeper-watch.pem")


def test_each_watcher_keeps_only_its_proxys_sink_from_the_example() -> None:
    shipped = {s["name"]: s for s in example("watch.example.yaml")["sinks"]}
    haproxy = overlaid("watch.example.yaml", "zookeeper.yaml", "watch-haproxy.yaml")
    pgbouncer = overlaid("watch.example.yaml", "zookeeper.yaml", "watch-pgbouncer.yaml")
    assert [s["name"] for s in haproxy["sinks"]] == ["haproxy"]
    assert [s["name"] for s in pgbouncer["sinks"]] == ["pgbouncer"]
    changed = {k for k, v in haproxy["sinks"][0].items() if shipped["haproxy"][k] != v}
    assert changed == {"master_socket"}
    admin = pgbouncer["sinks"][0]["admin"]
    assert admin == {**shipped["pgbouncer"]["admin"], "password_file": admin["password_file"]}
    assert {k: v for k, v in pgbouncer["sinks"][0].items() if k != "admin"} == {
        k: v for k, v in shipped["pgbouncer"].items() if k != "admin"
    }
    assert haproxy["agent"] != pgbouncer["agent"]
    # each watcher's own private copies of its password and key (two users, two files each)
    for key in (("auth", "password_file"), ("tls", "key")):
        assert len({c["zookeeper"][key[0]][key[1]] for c in (haproxy, pgbouncer)}) == 2


def test_prometheus_scrapes_the_metrics_ports_the_configs_give() -> None:
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in scrape["scrape_configs"]}
    daemon_port = overlaid("daemon.example.yaml", "daemon.yaml")["metrics"]["port"]
    watch_ports = [
        overlaid("watch.example.yaml", f"watch-{proxy}.yaml")["metrics"]["port"]
        for proxy in ("haproxy", "pgbouncer")
    ]
    assert jobs["agrajag-daemon"] == [f"node{i}:{daemon_port}" for i in (1, 2, 3)]
    assert jobs["agrajag-watch"] == [f"app1:{port}" for port in watch_ports]
    # the job names the shipped rules assume
    assumed = set(re.findall(r'job="([^"]+)"', (CONF_D / "agrajag-alerts.yml").read_text()))
    assert assumed == set(jobs)


def test_an_overlay_naming_what_the_example_lacks_is_refused() -> None:
    with pytest.raises(container.OverlayError, match=r"sinks\.varnish: no such sink"):
        container.overlay(example("watch.example.yaml"), {"sinks": {"varnish": {}}})
    with pytest.raises(container.OverlayError, match="agnet: not a key of the example"):
        container.overlay(example("watch.example.yaml"), {"agnet": "x"})


def test_set_parses_its_value_as_yaml_into_a_nested_key() -> None:
    assert container.assignment("metrics.port=9200") == {"metrics": {"port": 9200}}
    with pytest.raises(container.OverlayError, match=r"expected KEY\.PATH=VALUE"):
        container.assignment("metrics.port")


def test_the_base_image_comes_from_the_mirror_apt_uses() -> None:
    sources = {
        "/etc/apt/sources.list": "# none here\n",
        "/etc/apt/sources.list.d/debian.sources": (
            "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
            "Types: deb\n# a comment\nURIs: http://deb.example/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n\n"
            "Types: deb\nURIs: http://security.example/debian-security\n"
            "Suites: bookworm-security\n"
        ),
    }
    assert topology.apt_mirror(sources) == "http://deb.example/debian"
    one_line = {"x.list": "deb [signed-by=/k.gpg] http://one.example/debian bookworm main\n"}
    assert topology.apt_mirror(one_line) == "http://one.example/debian"
    assert topology.apt_mirror({"x.list": "deb http://o.example/debian trixie main\n"}) is None


def test_the_images_are_the_ones_compose_builds() -> None:
    assert topology.compose_images() == {
        "agrajag-zookeeper": "zookeeper",
        "agrajag-db": "db",
        "agrajag-app": "app",
        "agrajag-prometheus": "prometheus",
    }


def run_topology(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(DOCKER / "topology.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_an_engine_it_exits_2_naming_the_problem(tmp_path: Path) -> None:
    done = run_topology("build", tmp_path=tmp_path)
    assert done.returncode == 2
    assert "no Docker engine reachable (DOCKER_HOST or the local socket)" in done.stderr


def test_it_only_runs_what_it_knows(tmp_path: Path) -> None:
    done = run_topology("rm-rf", tmp_path=tmp_path)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_initial_renders_a_proxys_file_with_no_master_once(tmp_path: Path) -> None:
    change = yaml.safe_load((DOCKER / "config" / "watch-haproxy.yaml").read_text())
    change["sinks"]["haproxy"].update(
        template=str(CONF_D / "haproxy.cfg.j2"), dest=str(tmp_path / "haproxy.cfg")
    )
    change_file = tmp_path / "watch-haproxy.yaml"
    change_file.write_text(yaml.safe_dump(change))
    argv = ["initial", str(CONF_D / "watch.example.yaml"), str(change_file)]
    # no ZooKeeper password anywhere: the proxy's container has none, and needs none
    assert container.main([*argv, "haproxy"]) == 0
    rendered = (tmp_path / "haproxy.cfg").read_text()
    assert "listen main" in rendered and "server primary" not in rendered
    (tmp_path / "haproxy.cfg").write_text("the watcher's since")
    assert container.main([*argv, "haproxy"]) == 0
    assert (tmp_path / "haproxy.cfg").read_text() == "the watcher's since"
    assert container.main([*argv, "varnish"]) == 2


def test_config_applies_its_overlays_in_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("metrics: {port: 9300}\nzookeeper: {tls: ~}\n")
    second.write_text("metrics: {port: 9301}\n")
    example_file = str(CONF_D / "daemon.example.yaml")
    assert (
        container.main(["config", example_file, str(first), str(second), "--set", "node=n9"]) == 0
    )
    result = yaml.safe_load(capsys.readouterr().out)
    assert result["metrics"] == {"address": "127.0.0.1", "port": 9301}
    assert result["zookeeper"]["tls"] is None and result["node"] == "n9"
