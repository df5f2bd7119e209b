"""`agrajag notify` wakes a listening daemon and never fails repmgr's action."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

from agrajag.daemon.wakeup import WakeupListener

NOTIFY = [sys.executable, "-m", "agrajag", "notify"]


def test_notify_delivers_the_event_to_the_listener(tmp_path: Path) -> None:
    received: list[dict[str, str]] = []
    got = threading.Event()

    def on_event(event: dict[str, str]) -> None:
        received.append(event)
        got.set()

    path = str(tmp_path / "main.sock")
    listener = WakeupListener(path, on_event)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # repmgr runs as postgres
        args = ["--socket", path, "--node-id", "2", "--event", "repmgrd_failover_promote"]
        done = subprocess.run([*NOTIFY, *args, "--success", "1"], timeout=30, check=False)
        assert done.returncode == 0
        assert got.wait(5)
    finally:
        listener.close()
    assert received[0]["event"] == "repmgrd_failover_promote"
    assert received[0]["node_id"] == "2" and received[0]["success"] == "1"
    assert not os.path.exists(path)


def test_notify_without_a_daemon_exits_zero_and_says_so(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.sock")
    done = subprocess.run(
        [*NOTIFY, "--socket", path, "--event", "standby_promote"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert f"daemon not woken ({path}" in done.stderr
