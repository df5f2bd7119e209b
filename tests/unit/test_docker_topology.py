"""docker/: the configs the images get from conf.d's examples, and the runner's own logic.

The topology itself is tested for real by `make docker-test` (docker/topology.py test).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agrajag.daemon.settings import DaemonSettings
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


def overlaid(example_name: str, overlay: str, *sets: str) -> dict[str, Any]:
    result: dict[str, Any] = container.overlay(
        example(example_name), yaml.safe_load((DOCKER / "config" / overlay).read_text())
    )
    for text in sets:
        result = container.merge(result, container.assignment(text))
    return result


def test_daemon_config_is_the_example_with_the_node_and_a_scrapable_metrics_address(
    tmp_path: Path,
) -> None:
    conf = overlaid("daemon.example.yaml", "daemon.yaml", "node=node2")
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(conf))
    settings = DaemonSettings.load(path)
    assert settings.node == "node2"
    assert settings.metrics.address == "0.0.0.0"
    shipped = example("daemon.example.yaml")
    assert settings.zookeeper.hosts == shipped["zookeeper"]["hosts"]
    assert settings.wakeup_socket == shipped["wakeup_socket"]


def test_each_watcher_keeps_only_its_proxys_sink_from_the_example() -> None:
    shipped = {s["name"]: s for s in example("watch.example.yaml")["sinks"]}
    haproxy = overlaid("watch.example.yaml", "watch-haproxy.yaml")
    pgbouncer = overlaid("watch.example.yaml", "watch-pgbouncer.yaml")
    assert [s["name"] for s in haproxy["sinks"]] == ["haproxy"]
    assert [s["name"] for s in pgbouncer["sinks"]] == ["pgbouncer"]
    assert pgbouncer["sinks"][0] == shipped["pgbouncer"]
    changed = {k for k, v in haproxy["sinks"][0].items() if shipped["haproxy"][k] != v}
    assert changed == {"master_socket"}
    assert haproxy["agent"] != pgbouncer["agent"]


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
    conf = overlaid("watch.example.yaml", "watch-haproxy.yaml")
    sink = conf["sinks"][0]
    sink.update(template=str(CONF_D / "haproxy.cfg.j2"), dest=str(tmp_path / "haproxy.cfg"))
    watch_yaml = tmp_path / "watch.yaml"
    watch_yaml.write_text(yaml.safe_dump(conf))
    assert container.main(["initial", str(watch_yaml), "haproxy"]) == 0
    rendered = (tmp_path / "haproxy.cfg").read_text()
    assert "listen main" in rendered and "server primary" not in rendered
    (tmp_path / "haproxy.cfg").write_text("the watcher's since")
    assert container.main(["initial", str(watch_yaml), "haproxy"]) == 0
    assert (tmp_path / "haproxy.cfg").read_text() == "the watcher's since"
    assert container.main(["initial", str(watch_yaml), "varnish"]) == 2
