"""The confd pipeline (render, stage, check, swap, reload, restore) through the template sink,
against files in tmp_path and small real commands."""

from __future__ import annotations

import os
import resource
import stat
import time
from pathlib import Path

import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.base import ApplyResult, SinkError, render
from agrajag.sinks.template import Settings, TemplateSink
from tools.harness.shipped import CONF_D

TEMPLATE = "{% for name, m in clusters.items() %}{{ name }}={{ m.host }}:{{ m.port }}\n{% endfor %}"


def master(port: int = 5432, cluster: str = "main", host: str = "10.0.0.1") -> MasterRecord:
    return MasterRecord(cluster, 1, 1, "node1", host, port, 1, "node1", "t", {})


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def sink(tmp_path: Path, template: str = TEMPLATE, **keys: object) -> TemplateSink:
    src = tmp_path / "app.j2"
    src.write_text(template)
    (tmp_path / "etc").mkdir(exist_ok=True)
    data = {"name": "app", "src": str(src), "dest": str(tmp_path / "etc" / "app.conf"), **keys}
    return TemplateSink(Settings.from_mapping(data, "watch.yaml: sinks[0]"))


@pytest.fixture
def reloads(tmp_path: Path) -> Path:
    """A reload command that counts its runs in a file."""
    return script(tmp_path, "reload", f"echo reloaded >> '{tmp_path / 'reloads'}'\n")


def reload_count(tmp_path: Path) -> int:
    log = tmp_path / "reloads"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_writes_then_leaves_an_unchanged_render_alone(tmp_path: Path, reloads: Path) -> None:
    app = sink(tmp_path, reload_cmd=str(reloads))
    first = app.apply({"main": master()})
    assert (first.changed, first.action) == (True, "reload")
    dest = tmp_path / "etc" / "app.conf"
    assert dest.read_text() == "main=10.0.0.1:5432\n"
    before = dest.stat()

    again = app.apply({"main": master()})

    assert (again.changed, again.action) == (False, "unchanged")
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert reload_count(tmp_path) == 1


def test_without_reload_cmd_the_file_is_written(tmp_path: Path) -> None:
    result = sink(tmp_path).apply({"main": master()})
    assert (result.changed, result.action, result.cut_sessions) == (True, "written", None)


def test_failing_check_leaves_the_old_file_byte_identical(tmp_path: Path, reloads: Path) -> None:
    dest = tmp_path / "etc" / "app.conf"
    sink(tmp_path, reload_cmd=str(reloads)).apply({"main": master()})
    old = dest.read_bytes()

    with pytest.raises(SinkError) as caught:
        sink(tmp_path, check_cmd="false", reload_cmd=str(reloads)).apply({"main": master(5433)})

    assert caught.value.step == "check"
    assert dest.read_bytes() == old
    assert reload_count(tmp_path) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.conf"]


def test_check_runs_on_the_staged_file_beside_dest_which_is_gone_after(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    check = script(
        tmp_path,
        "check",
        f'echo "$1" > "{seen}"\n'
        'if grep -q 5999 "$1"; then echo "port 5999 is refused" >&2; exit 3; fi\n',
    )
    app = sink(tmp_path, check_cmd=f"{check} {{staged}}")
    dest = tmp_path / "etc" / "app.conf"
    app.apply({"main": master(5432)})
    staged = Path(seen.read_text().strip())
    assert staged.parent == dest.parent
    assert staged != dest
    assert not staged.exists()

    with pytest.raises(SinkError, match="port 5999 is refused") as caught:
        app.apply({"main": master(5999)})

    assert caught.value.step == "check"
    assert "exit code 3" in str(caught.value)
    assert dest.read_text() == "main=10.0.0.1:5432\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.conf"]


def test_failing_reload_puts_the_old_file_back(tmp_path: Path) -> None:
    dest = tmp_path / "etc" / "app.conf"
    sink(tmp_path).apply({"main": master()})
    old = dest.read_bytes()
    failing = script(tmp_path, "reload", "echo 'reload refused' >&2\nexit 1\n")

    with pytest.raises(SinkError, match="reload refused") as caught:
        sink(tmp_path, reload_cmd=str(failing)).apply({"main": master(5433)})

    assert (caught.value.sink, caught.value.step) == ("app", "reload")
    assert str(dest) in str(caught.value)
    assert dest.read_bytes() == old


def test_failing_first_reload_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(SinkError):
        sink(tmp_path, reload_cmd="false").apply({"main": master()})
    assert list((tmp_path / "etc").iterdir()) == []


def test_reload_cmd_is_bounded_in_time(tmp_path: Path) -> None:
    slow = script(tmp_path, "slow", "exec sleep 30\n")
    with pytest.raises(SinkError, match=r"no answer within 0\.5 s"):
        sink(tmp_path, reload_cmd=str(slow), timeout_s=0.5).apply({"main": master()})


def test_undefined_variable_names_template_file_and_line(tmp_path: Path) -> None:
    template = "# header\n{% for name, m in clusters.items() %}\n{{ m.hots }}\n{% endfor %}\n"
    with pytest.raises(SinkError) as caught:
        sink(tmp_path, template).apply({"main": master()})
    assert caught.value.step == "render"
    assert f"{tmp_path / 'app.j2'}:3" in str(caught.value)
    assert "hots" in str(caught.value)
    assert not (tmp_path / "etc" / "app.conf").exists()


def test_syntax_error_names_template_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as caught:
        sink(tmp_path, "ok\nok\n{% for x in %}\n").apply({"main": master()})
    assert f"{tmp_path / 'app.j2'}:3" in str(caught.value)


def test_keeps_the_existing_mode_or_applies_the_configured_one(tmp_path: Path) -> None:
    dest = tmp_path / "etc" / "app.conf"
    sink(tmp_path).apply({"main": master()})
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    dest.chmod(0o640)
    sink(tmp_path).apply({"main": master(5433)})
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    sink(tmp_path, mode="0600").apply({"main": master(5434)})
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_configured_clusters_without_a_record_render_as_none(tmp_path: Path) -> None:
    template = (
        "{% for name, m in clusters.items() %}{{ name }}={{ m.port if m else '-' }}\n{% endfor %}"
    )
    app = sink(tmp_path, template, clusters=["main", "other"])
    app.apply({"main": master(), "ignored": master(cluster="ignored")})
    assert (tmp_path / "etc" / "app.conf").read_text() == "main=5432\nother=-\n"


def test_params_reach_the_template(tmp_path: Path) -> None:
    app = sink(
        tmp_path, "{{ params.greeting }} {{ clusters.main.node }}\n", params={"greeting": "hi"}
    )
    app.apply({"main": master()})
    assert (tmp_path / "etc" / "app.conf").read_text() == "hi node1\n"


def test_shipped_env_template_renders(tmp_path: Path) -> None:
    app = sink(tmp_path, (CONF_D / "primary.env.j2").read_text(), clusters=["main", "pg-2"])
    app.apply({"main": master(5433)})
    lines = (tmp_path / "etc" / "app.conf").read_text().splitlines()
    assert "MAIN_PRIMARY_HOST=10.0.0.1" in lines
    assert "MAIN_PRIMARY_PORT=5433" in lines
    assert "PG_2_PRIMARY_HOST=" in lines


def test_an_unexpected_error_while_activating_still_restores_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = sink(tmp_path)
    app.apply({"main": master()})
    dest = tmp_path / "etc" / "app.conf"
    old = dest.read_bytes()

    def broken(old_text: str | None, new_text: str) -> ApplyResult:
        raise KeyError("surprise")

    monkeypatch.setattr(app, "activate", broken)
    with pytest.raises(SinkError, match="KeyError") as caught:
        app.apply({"main": master(5433)})
    assert caught.value.step == "activate"
    assert dest.read_bytes() == old


def test_an_unreadable_destination_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "etc" / "app.conf").mkdir(parents=True)
    with pytest.raises(SinkError, match="Is a directory") as caught:
        sink(tmp_path).apply({"main": master()})
    assert caught.value.step == "read"


def test_an_edited_template_is_rendered_anew(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text("one {{ x }}\n")
    assert render(template, {"x": 1}) == "one 1\n"
    template.write_text("two {{ x }}\n")
    os.utime(template, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert render(template, {"x": 2}) == "two 2\n"


class RefusingSink(TemplateSink):
    """A template sink whose program refuses the next file while the disk is full (a file
    size limit of 1 byte stands in for it), so the old file cannot be put back either."""

    refuse = False

    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        if self.refuse:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            raise self.error("reload", "refused")
        return super().activate(old_text, new_text)


def test_a_file_that_could_not_be_put_back_is_activated_next_time_not_called_unchanged(
    tmp_path: Path, reloads: Path
) -> None:
    settings = Settings.from_mapping(
        {"name": "app", "src": str(CONF_D / "primary.env.j2"), "reload_cmd": str(reloads)}
        | {"dest": str(tmp_path / "primary.env")},
        "watch.yaml: sinks[0]",
    )
    app = RefusingSink(settings)
    app.apply({"main": master()})
    app.refuse = True
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with pytest.raises(SinkError, match="restoring the old configuration failed"):
            app.apply({"main": master(5433)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert "MAIN_PRIMARY_PORT=5433" in (tmp_path / "primary.env").read_text()
    app.refuse = False

    again = app.apply({"main": master(5433)})

    assert (again.changed, again.action) == (True, "reload")
    assert reload_count(tmp_path) == 2
    assert app.apply({"main": master(5433)}).action == "unchanged"


def test_a_file_swapped_in_just_before_a_crash_is_activated_after_a_restart(
    tmp_path: Path, reloads: Path
) -> None:
    app = sink(tmp_path, reload_cmd=str(reloads))
    app.apply({"main": master(5432)})
    dest = tmp_path / "etc" / "app.conf"
    dest.write_text("main=10.0.0.1:5433\n")  # swapped in, then the watcher died: no reload

    restarted = sink(tmp_path, reload_cmd=str(reloads))
    restarted.resume({"main": master(5432)})  # what the state file says it last applied

    assert restarted.apply({"main": master(5433)}).action == "reload"
    assert reload_count(tmp_path) == 2
    assert restarted.apply({"main": master(5433)}).action == "unchanged"


def test_a_resumed_sink_whose_file_is_what_it_applied_changes_nothing(
    tmp_path: Path, reloads: Path
) -> None:
    sink(tmp_path, reload_cmd=str(reloads)).apply({"main": master(5432)})
    restarted = sink(tmp_path, reload_cmd=str(reloads))
    restarted.resume({"main": master(5432)})
    assert restarted.apply({"main": master(5432)}).action == "unchanged"
    assert reload_count(tmp_path) == 1


def test_render_only_writes_a_missing_file_and_keeps_an_existing_one(
    tmp_path: Path, reloads: Path
) -> None:
    app = sink(tmp_path, reload_cmd=str(reloads), check_cmd="/usr/bin/test -s {staged}")
    dest = tmp_path / "etc" / "app.conf"
    assert app.render_only({"main": master(5432)}) == f"wrote {dest}"
    assert dest.read_text() == "main=10.0.0.1:5432\n"
    assert app.render_only({"main": master(5433)}) == f"kept the existing {dest}"
    assert dest.read_text() == "main=10.0.0.1:5432\n"
    assert reload_count(tmp_path) == 0
