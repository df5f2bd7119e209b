"""How kazoo's threads and signal handlers wake the watcher's single loop thread.

A deque plus a self-pipe rather than a Queue or an Event: a signal handler runs on the main
thread between two bytecodes, possibly while that thread holds the Queue's lock, and would
deadlock taking it again. `deque.append` and `os.write` take no Python-level lock.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from agrajag.registry.client import Session


class Wake(StrEnum):
    CHANGED = "changed"  # a master znode may have changed: re-read every cluster
    STOP = "stop"  # SIGTERM / SIGINT
    RELOAD = "reload"  # SIGHUP: read the configuration file again


@dataclass(frozen=True, slots=True)
class SessionChanged:
    session: Session


Event = Wake | SessionChanged


class Inbox:
    """Events for the loop; `post` from any thread or signal handler, `wait` from the loop."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def post(self, event: Event) -> None:
        self._events.append(event)
        with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> list[Event]:
        """Every event posted so far, waiting up to `timeout` seconds for the first one."""
        if not self._events:
            select.select([self._read], [], [], max(0.0, timeout))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
