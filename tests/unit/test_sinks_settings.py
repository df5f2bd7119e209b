"""Sink sections of watch.yaml: errors name the file and key; the shipped example builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agrajag.errors import ConfigError
from agrajag.sinks import SINK_TYPES, build_sink
from agrajag.sinks.haproxy import HAProxySink
from agrajag.sinks.pgbouncer import PgBouncerSink
from agrajag.sinks.template import TemplateSink
from tools.harness.shipped import CONF_D

SOURCE = "watch.yaml: sinks[0]"


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "t.j2"
    path.write_text("x\n")
    return path


def section(tmp_path: Path, src: Path, kind: str, /, **keys: object) -> dict[str, object]:
    base: dict[str, object] = {"type": kind, "name": kind, "dest": str(tmp_path / "out")}
    own: dict[str, dict[str, object]] = {
        "template": {"src": str(src)},
        "haproxy": {
            "template": str(src),
            "stats_socket": "/run/haproxy/admin.sock",
            "master_socket": "/run/haproxy-master.sock",
        },
        "pgbouncer": {
            "template": str(src),
            "admin": {"port": 6432, "user": "pgbouncer_admin"},
        },
    }
    return {**base, **own[kind], **keys}


@pytest.mark.parametrize(
    ("kind", "keys", "message"),
    [
        ("template", {"src": "/nowhere/t.j2"}, "sinks[0].src: file not found: /nowhere/t.j2"),
        ("template", {"src": "t.j2"}, "sinks[0].src: must be an absolute path"),
        ("template", {"dest": "/nowhere/out"}, "sinks[0].dest: directory not found: /nowhere"),
        ("template", {"name": "a b"}, "sinks[0].name: must be a plain name"),
        ("template", {"name": None}, "sinks[0].name: missing"),
        ("template", {"check_cmd": "no-such-cmd {staged}"}, "check_cmd: command not found"),
        ("template", {"reload_cmd": "echo 'open"}, "sinks[0].reload_cmd: cannot split"),
        ("template", {"mode": "rw-r--r--"}, "sinks[0].mode: must be an octal file mode"),
        ("template", {"clusters": "main"}, "sinks[0].clusters: must be a list"),
        ("template", {"params": ["x"]}, "sinks[0].params: must be a mapping"),
        ("template", {"timeout_s": 0}, "sinks[0].timeout_s: must be >= 0.1"),
        ("template", {"templat": "x"}, "sinks[0].templat: unknown key"),
        ("haproxy", {"master_socket": None}, "sinks[0].master_socket: missing"),
        ("haproxy", {"haproxy_bin": "/nowhere/haproxy"}, "haproxy_bin: file not found"),
        ("haproxy", {"template": "/nowhere.j2"}, "sinks[0].template: file not found"),
        ("pgbouncer", {"cut": "pause"}, "sinks[0].cut: must be one of reconnect, kill"),
        ("pgbouncer", {"admin": None}, "sinks[0].admin: missing"),
        ("pgbouncer", {"admin": "x"}, "sinks[0].admin: must be a mapping"),
        ("template", {"clusters": ["a b"]}, "sinks[0].clusters[0]: must be a plain name"),
        ("pgbouncer", {"admin": {"user": "a"}}, "sinks[0].admin.port: missing"),
        ("pgbouncer", {"admin": {"port": 0, "user": "a"}}, "sinks[0].admin.port: must be >= 1"),
        ("pgbouncer", {"admin": {"port": 1, "user": "a", "db": "x"}}, "admin.db: unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key(
    tmp_path: Path, template: Path, kind: str, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_sink(section(tmp_path, template, kind, **keys), SOURCE)
    assert str(caught.value).startswith("watch.yaml: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("kind", [None, "nginx"])
def test_unknown_type_is_refused(tmp_path: Path, template: Path, kind: str | None) -> None:
    with pytest.raises(ConfigError, match=r"watch\.yaml: sinks\[0\]\.type: must be one of"):
        build_sink(section(tmp_path, template, "template", type=kind), SOURCE)


def test_each_type_builds_its_sink(tmp_path: Path, template: Path) -> None:
    kinds = {"haproxy": HAProxySink, "pgbouncer": PgBouncerSink, "template": TemplateSink}
    assert set(SINK_TYPES) == set(kinds)
    for kind, cls in kinds.items():
        built = build_sink(section(tmp_path, template, kind), SOURCE)
        assert isinstance(built, cls)
        assert built.name == kind


def test_yaml_octal_mode_and_defaults(tmp_path: Path, template: Path) -> None:
    data = yaml.safe_load(f"{{name: a, src: {template}, dest: {tmp_path / 'o'}, mode: 0640}}")
    built = build_sink({"type": "template", **data}, SOURCE)
    assert isinstance(built, TemplateSink)
    files = built.settings.files
    assert (files.mode, files.clusters, files.timeout_s, dict(files.params)) == (
        0o640,
        None,
        10.0,
        {},
    )


def test_the_shipped_example_builds(tmp_path: Path) -> None:
    """conf.d/watch-sinks.example.yaml with its /etc paths moved under tmp_path."""
    text = (CONF_D / "watch-sinks.example.yaml").read_text()
    text = text.replace("/etc/agrajag/", f"{CONF_D}/").replace("/etc/", f"{tmp_path}/")
    for directory in ("haproxy", "pgbouncer", "app"):
        (tmp_path / directory).mkdir()
    items = yaml.safe_load(text)["sinks"]
    sinks = [
        build_sink(item, f"watch-sinks.example.yaml: sinks[{i}]") for i, item in enumerate(items)
    ]
    assert [type(s) for s in sinks] == [HAProxySink, PgBouncerSink, TemplateSink]
