"""The local wake-up channel: repmgr's event hook (`agrajag-notify`) wakes the daemon at once.

A Unix datagram socket: sending never blocks, a daemon that is not running costs the hook
nothing, and repmgr is never held up or failed by agrajag ("push", with polling as the
fallback). Configure repmgr.conf as in `conf.d/repmgr-event-notification.conf`.

repmgr runs the hook on every event, and the daemon publishes only once it has run, so its
start-up is on the failover's path: `agrajag-notify` (`main` here) loads this module and
contextlib, json, os, socket, sys and threading only, no argparse or logging: measured here
26 ms of CPU against 45 ms for `agrajag notify`, which takes the same options.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

MAX_DATAGRAM = 4096
#: The hook's options: flag -> help. --socket is required; the others default to "".
OPTIONS = {
    "--socket": "the daemon's wake-up socket (wakeup_socket in its YAML)",
    "--node-id": "repmgr's %n",
    "--event": "repmgr's %e",
    "--success": "repmgr's %s",
    "--timestamp": "repmgr's %t",
    "--details": "repmgr's %d",
}
USAGE = "usage: agrajag-notify --socket PATH " + " ".join(f"[{f} X]" for f in list(OPTIONS)[1:])


def key(flag: str) -> str:
    """--node-id -> node_id"""
    return flag.removeprefix("--").replace("-", "_")


def parse(argv: Sequence[str]) -> dict[str, str]:
    """`--flag value` or `--flag=value` pairs of OPTIONS; ValueError on anything else."""
    values = {key(flag): "" for flag in OPTIONS}
    rest = list(argv)
    while rest:
        flag, eq, value = rest.pop(0).partition("=")
        if flag not in OPTIONS:
            raise ValueError(f"unknown argument {flag!r}")
        if not eq:
            if not rest:
                raise ValueError(f"{flag} needs a value")
            value = rest.pop(0)
        values[key(flag)] = value
    if not values["socket"]:
        raise ValueError("--socket is required")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """`agrajag-notify`: repmgr's event_notification_command."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + "\n".join(f"  {f:<12} {h}" for f, h in OPTIONS.items()))
        return 0
    try:
        values = parse(args)
    except ValueError as exc:
        print(f"{USAGE}\nagrajag-notify: {exc}", file=sys.stderr)
        return 2
    return notify(values)


def notify(values: Mapping[str, str]) -> int:
    """Send one event to the daemon; always exit 0 so repmgr's own action never fails."""
    event = {k: values.get(k, "") for k in ("node_id", "event", "success", "timestamp")}
    event["details"] = values.get("details", "")[:1024]
    path = values["socket"]
    try:
        send(path, event)
    except OSError as exc:
        print(f"agrajag notify: daemon not woken ({path}: {exc.strerror})", file=sys.stderr)
    return 0


def send(path: str, event: Mapping[str, str]) -> None:
    data = json.dumps(event).encode()[:MAX_DATAGRAM]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.sendto(data, path)


class WakeupListener:
    """The daemon's end: a thread that calls `on_event(event)` for every datagram received."""

    def __init__(self, path: str, on_event: Callable[[dict[str, str]], None], mode: int = 0o666):
        self.path = path
        self.on_event = on_event
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)  # so that close() is noticed without a wake-up
        self._closed = threading.Event()
        # repmgr runs the hook as the PostgreSQL user, not as the daemon's user.
        os.chmod(path, mode)
        self._thread = threading.Thread(target=self._run, name="agrajag-wakeup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                event = json.loads(data)
            except ValueError:
                event = {"event": "unparseable"}
            self.on_event(event if isinstance(event, dict) else {"event": "unparseable"})

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
        _unlink(self.path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
