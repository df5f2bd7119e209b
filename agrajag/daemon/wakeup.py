"""The local wake-up channel: repmgr's event hook (`agrajag notify`) wakes the daemon at once.

A Unix datagram socket: sending never blocks, a daemon that is not running costs the hook
nothing, and repmgr is never held up or failed by agrajag ("push", with polling as the
fallback). Configure repmgr.conf as in `conf.d/repmgr-event-notification.conf`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from agrajag.daemon.notify import MAX_DATAGRAM

log = logging.getLogger(__name__)


class WakeupListener:
    """The daemon's end: a thread that calls `on_event(event)` for every datagram received."""

    def __init__(self, path: str, on_event: Callable[[dict[str, str]], None], mode: int = 0o666):
        self.path = path
        self.on_event = on_event
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
