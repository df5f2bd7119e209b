"""repmgr's hook (`logger` as conf.d ships it, `agrajag-notify`, or `agrajag notify`) wakes a
listening daemon and never fails repmgr's action; whatever anyone writes to the socket, the
listener counts it, drops what is bad, and keeps listening."""

from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agrajag.daemon.notify import parse
from agrajag.daemon.wakeup import MAX_DATAGRAM, WakeupListener, read_datagram
from agrajag.errors import ConfigError
from agrajag.inbox import Inbox, Notified, Wake
from tools.harness.procs import wait_until
from tools.harness.shipped import event_command

#: The console script repmgr runs, and the same through the full command line.
HOOKS = {
    "agrajag-notify": [str(Path(sys.executable).parent / "agrajag-notify")],
    "agrajag notify": [sys.executable, "-m", "agrajag", "notify"],
}
NOTIFY = HOOKS["agrajag-notify"]


class Received:
    """What a listener handed over: event names, and every datagram's result."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.results: Counter[str] = Counter()
        self.lock = threading.Lock()

    def event(self, name: str) -> None:
        with self.lock:
            self.events.append(name)

    def result(self, result: str) -> None:
        with self.lock:
            self.results[result] += 1


@pytest.fixture
def received() -> Received:
    return Received()


def listen(path: Path, received: Received, **kwargs: str) -> WakeupListener:
    return WakeupListener(str(path), received.event, on_result=received.result, **kwargs)


def send(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, str(path))


@pytest.mark.parametrize("hook", HOOKS)
def test_notify_delivers_the_event_to_the_listener(
    tmp_path: Path, received: Received, hook: str
) -> None:
    path = tmp_path / "main.sock"
    listener = listen(path, received)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # the user and wakeup_group
        args = ["--socket", str(path), "--node-id", "2", "--event", "repmgrd_failover_promote"]
        done = subprocess.run([*HOOKS[hook], *args, "--success", "1"], timeout=30, check=False)
        assert done.returncode == 0
        wait_until(lambda: received.events, timeout=5, what="the event")
    finally:
        listener.close()
    assert received.events == ["repmgrd_failover_promote"]
    assert received.results == {"accepted": 1}
    assert not path.exists()


def test_the_shipped_logger_hook_delivers_the_event_and_never_fails(
    tmp_path: Path, received: Received
) -> None:
    """conf.d's event_notification_command, run through the shell as repmgr runs it, with
    repmgr's placeholders filled in: no interpreter starts, and no daemon is no error."""
    path = tmp_path / "main.sock"
    command = event_command(str(path)).replace("%e", "standby_promote")
    command = command.replace("%n", "2").replace("%s", "1")
    listener = listen(path, received)
    try:
        assert subprocess.run(["sh", "-c", command], timeout=30, check=False).returncode == 0
        wait_until(lambda: received.events, timeout=5, what="the event")
    finally:
        listener.close()
    assert received.events == ["standby_promote"]
    assert received.results == {"accepted": 1}
    assert subprocess.run(["sh", "-c", command], timeout=30, check=False).returncode == 0


def test_the_socket_belongs_to_wakeup_group(tmp_path: Path, received: Received) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    listener = listen(tmp_path / "main.sock", received, group=group)
    try:
        assert os.stat(tmp_path / "main.sock").st_gid == os.getgid()
    finally:
        listener.close()
    with pytest.raises(ConfigError, match="wakeup_group 'no-such-group': no such group"):
        listen(tmp_path / "main.sock", received, group="no-such-group")


JUNK = {
    "oversized": b'{"event": "standby_promote", "pad": "' + b"x" * MAX_DATAGRAM + b'"}',
    "not_utf8": b'{"event": "\xff"}',
    "not_json": b"standby_promote",
    "too_deep": b"[" * MAX_DATAGRAM,
    "invalid": b'{"event": "standby_promote\\nWARNING forged log line"}',
}


def test_junk_datagrams_are_counted_and_dropped_and_the_listener_lives_on(
    tmp_path: Path, received: Received
) -> None:
    path = tmp_path / "main.sock"
    listener = listen(path, received)
    try:
        for data in JUNK.values():
            send(path, data)
        send(path, b'{"event": "standby_promote"}')
        wait_until(lambda: received.events, timeout=5, what="the valid event after the junk")
        assert listener._thread.is_alive()
    finally:
        listener.close()
    assert received.events == ["standby_promote"]
    assert received.results == {"accepted": 1, **dict.fromkeys(JUNK, 1)}


@given(st.binary(max_size=MAX_DATAGRAM + 10))
def test_any_datagram_is_judged_without_an_exception(data: bytes) -> None:
    result, event = read_datagram(data)
    assert (result == "accepted") == bool(event)


def test_a_flood_of_wake_ups_coalesces_into_one(tmp_path: Path, received: Received) -> None:
    inbox = Inbox()
    path = tmp_path / "main.sock"
    listener = WakeupListener(
        str(path), lambda e: inbox.post(Notified(e, 0.0)), on_result=received.result
    )
    try:
        inbox.post(Wake.RELOAD)
        for _ in range(2000):
            send(path, b'{"event": "standby_promote"}')
        wait_until(lambda: received.results["accepted"] == 2000, timeout=20, what="2000")
        assert inbox.wait(0) == [Wake.RELOAD, Notified("standby_promote", 0.0)]
        assert inbox.wait(0) == []
    finally:
        listener.close()
        inbox.close()


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


def test_an_event_with_long_details_still_arrives_whole(tmp_path: Path, received: Received) -> None:
    path = tmp_path / "main.sock"
    listener = listen(path, received)
    try:
        args = ["--socket", str(path), "--event", "standby_promote", "--details", "é" * 1024]
        assert subprocess.run([*NOTIFY, *args], timeout=30, check=False).returncode == 0
        wait_until(lambda: received.events, timeout=5, what="the event")
    finally:
        listener.close()
    assert received.events == ["standby_promote"] and received.results == {"accepted": 1}
