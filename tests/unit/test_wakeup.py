"""repmgr's hook (`agrajag-notify`, or `agrajag notify`) wakes a listening daemon and never
fails repmgr's action."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agrajag.daemon.notify import parse
from agrajag.daemon.wakeup import WakeupListener

#: The console script repmgr runs, and the same through the full command line.
HOOKS = {
    "agrajag-notify": [str(Path(sys.executable).parent / "agrajag-notify")],
    "agrajag notify": [sys.executable, "-m", "agrajag", "notify"],
}
NOTIFY = HOOKS["agrajag-notify"]


@pytest.mark.parametrize("hook", HOOKS)
def test_notify_delivers_the_event_to_the_listener(tmp_path: Path, hook: str) -> None:
    received: list[dict[str, str]] = []
    got = threading.Event()

    def on_event(event: dict[str, str]) -> None:
        received.append(event)
        got.set()

    path = str(tmp_path / "run" / "main.sock")
    listener = WakeupListener(path, on_event)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # repmgr runs as postgres
        args = ["--socket", path, "--node-id", "2", "--event", "repmgrd_failover_promote"]
        done = subprocess.run([*HOOKS[hook], *args, "--success", "1"], timeout=30, check=False)
        assert done.returncode == 0
        assert got.wait(5)
    finally:
        listener.close()
    assert received[0]["event"] == "repmgrd_failover_promote"
    assert received[0]["node_id"] == "2" and received[0]["success"] == "1"
    assert not os.path.exists(path)


@pytest.mark.parametrize("hook", HOOKS)
def test_notify_without_a_daemon_exits_zero_and_says_so(tmp_path: Path, hook: str) -> None:
    path = str(tmp_path / "absent.sock")
    done = subprocess.run(
        [*HOOKS[hook], "--socket", path, "--event", "standby_promote"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert f"daemon not woken ({path}" in done.stderr


def test_the_hook_takes_flag_value_and_flag_equals_value() -> None:
    values = parse(["--socket", "/run/a.sock", "--event=standby_promote", "--details", "-x y"])
    assert values == {
        "socket": "/run/a.sock",
        "node_id": "",
        "event": "standby_promote",
        "success": "",
        "timestamp": "",
        "details": "-x y",
    }


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--event", "x"], "--socket is required"),
        (["--socket"], "--socket needs a value"),
        (["--socket", "/s", "--evnt", "x"], "unknown argument '--evnt'"),
        (["/s"], "unknown argument '/s'"),
    ],
)
def test_a_wrong_hook_command_line_is_refused_with_the_usage(argv: list[str], error: str) -> None:
    done = subprocess.run([*NOTIFY, *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "usage: agrajag-notify --socket PATH" in done.stderr
    assert f"agrajag-notify: {error}" in done.stderr


def test_the_hook_loads_neither_argparse_nor_logging() -> None:
    """It runs on the failover's path: its start-up is part of the publish time."""
    code = "import sys, agrajag.daemon.notify; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'argparse'" not in loaded and "'logging'" not in loaded, loaded


def test_an_event_with_long_details_still_arrives_whole(tmp_path: Path) -> None:
    received: list[dict[str, str]] = []
    got = threading.Event()
    path = str(tmp_path / "main.sock")
    listener = WakeupListener(path, lambda event: (received.append(event), got.set()))
    try:
        args = ["--socket", path, "--event", "standby_promote", "--details", "é" * 1024]
        assert subprocess.run([*NOTIFY, *args], timeout=30, check=False).returncode == 0
        assert got.wait(5)
    finally:
        listener.close()
    assert received[0]["event"] == "standby_promote"
