"""The watcher's state file: round trip, atomic replacement, and damaged files never trusted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agrajag.watch.state import Applied, State, StateError, load_state, save_state
from tests.factories import master_record

AT = "2026-11-22T03:00:00.000Z"


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = State(
        {
            "main": Applied(master_record(epoch=5), AT),
            "other": Applied(master_record(epoch=2, cluster="other"), AT),
        },
        {"haproxy": {"main": master_record(epoch=6, node=2)}, "pgbouncer": {}},
    )
    save_state(path, state)
    assert load_state(path, ["main", "other"], ["haproxy", "pgbouncer"]) == state


def test_save_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, State({"main": Applied(master_record(epoch=5), AT)}))
    save_state(path, State({"main": Applied(master_record(epoch=6, node=2), AT)}))
    assert load_state(path, ["main"], []).clusters["main"].record == master_record(epoch=6, node=2)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_missing_file_is_a_first_start(tmp_path: Path) -> None:
    assert load_state(tmp_path / "absent.json", ["main"], ["a"]) == State()


def test_a_save_into_a_missing_directory_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "state.json"
    with pytest.raises(StateError, match=r"missing-dir/state.json: cannot write"):
        save_state(path, State({"main": Applied(master_record(), AT)}))


def test_a_failed_replace_names_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(StateError, match=r"state.json: cannot write the state file"):
        save_state(path, State({"main": Applied(master_record(), AT)}))
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a schema 1 state file"),
        (b'{"schema": 2, "clusters": {}}', "not a schema 1 state file"),
        (b'{"schema": 1, "clusters": []}', "key 'clusters' must be an object"),
        (b'{"schema": 1, "clusters": {}, "sinks": []}', "key 'sinks' must be an object"),
    ],
)
def test_a_corrupt_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        assert load_state(path, ["main"], []) == State()
    assert f"ignoring state file {path}: {why}" in caplog.text


def _state_with(tmp_path: Path, **entries: object) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"schema": 1, "clusters": entries}))
    return path


def test_a_bad_entry_is_dropped_and_the_good_ones_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"applied_at": AT, "record": json.loads(master_record().to_json())}
    injected = json.loads(master_record(cluster="other").to_json()) | {
        "host": "db\nserver evil 1:1"
    }
    path = _state_with(tmp_path, main=good, other={"applied_at": AT, "record": injected})
    with caplog.at_level(logging.ERROR):
        assert load_state(path, ["main", "other"], []).clusters == {
            "main": Applied(master_record(), AT)
        }
    assert f"{path}: clusters.other: key 'host' must be a hostname or IP" in caplog.text


def test_an_entry_filed_under_another_cluster_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = {"applied_at": AT, "record": json.loads(master_record(cluster="other").to_json())}
    path = _state_with(tmp_path, main=entry)
    assert load_state(path, ["main"], []) == State()
    assert "clusters.main: the record names cluster 'other'" in caplog.text


def test_an_entry_without_applied_at_is_dropped(tmp_path: Path) -> None:
    path = _state_with(tmp_path, main={"record": json.loads(master_record().to_json())})
    assert load_state(path, ["main"], []) == State()


def test_clusters_no_longer_configured_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, State({"main": Applied(master_record(), AT)}))
    assert load_state(path, ["other"], []) == State()


def test_a_bad_sink_entry_is_dropped_and_the_good_ones_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    injected = json.loads(master_record().to_json()) | {"host": "db\nserver evil 1:1"}
    good = json.loads(master_record(epoch=4).to_json())
    path = tmp_path / "state.json"
    doc = {"schema": 1, "clusters": {}, "sinks": {"h": {"main": injected}, "p": {"main": good}}}
    path.write_text(json.dumps(doc | {"sinks": doc["sinks"] | {"gone": {"main": good}}}))
    with caplog.at_level(logging.INFO):
        assert load_state(path, ["main"], ["h", "p"]) == State(
            {}, {"h": {}, "p": {"main": master_record(epoch=4)}}
        )
    assert f"{path}: sinks.h.main: key 'host' must be a hostname or IP" in caplog.text
    assert "skipping sink 'gone', no longer configured" in caplog.text


def test_a_new_state_file_is_mode_0644_and_lists_the_sinks(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, State({"main": Applied(master_record(), AT)}))
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert json.loads(path.read_text())["sinks"] == {}
