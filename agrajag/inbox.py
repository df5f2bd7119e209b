"""How kazoo's threads, the wake-up socket and signal handlers wake a process's loop thread.

The daemon and the watcher each run one loop thread; everything else only posts here.

A deque plus a self-pipe rather than a Queue or an Event: a signal handler runs on the main
thread between two bytecodes, possibly while that thread holds the Queue's lock, and would
deadlock taking it again. `deque.append` and `os.write` take no Python-level lock.

Wake-ups from repmgr's hook (`Notified`) coalesce: while one waits to be taken, another adds
nothing, so a flood of datagrams costs at most one more round, and no memory. They come from
the listener thread only, never from a signal handler, so they may take a lock.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from agrajag.registry.values import Session


class Wake(StrEnum):
    CHANGED = "changed"  # a master znode may have changed: re-read every cluster
    RELOAD = "reload"  # SIGHUP: read the configuration file again
    STOP = "stop"  # SIGTERM / SIGINT


@dataclass(frozen=True, slots=True)
class SessionChanged:
    session: Session


@dataclass(frozen=True, slots=True)
class Notified:
    """repmgr's event hook woke the daemon (`agrajag notify`); `at` is time.monotonic()."""

    event: str
    at: float


Event = Wake | SessionChanged | Notified


class Inbox:
    """Events for the loop; `post` from any thread or signal handler, `wait` from the loop."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._notified: Notified | None = None  # the first of the waiting ones: its wait counts
        self._notified_lock = threading.Lock()
        #: When the latest repmgr wake-up was posted (time.monotonic()), taken or coalesced:
        #: the daemon starts a new repmgr read when one came after its current read began.
        self.last_notified_at: float | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def post(self, event: Event) -> None:
        if isinstance(event, Notified):
            self.last_notified_at = event.at
            with self._notified_lock:
                if self._notified is not None:
                    return  # the round it will run reads repmgr after this wake-up anyway
                self._notified = event
        else:
            self._events.append(event)
        with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> list[Event]:
        """Every event posted so far, waiting up to `timeout` seconds for the first one."""
        if not self._events and self._notified is None:
            select.select([self._read], [], [], max(0.0, timeout))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
        events: list[Event] = []
        while self._events:
            events.append(self._events.popleft())
        with self._notified_lock:
            notified, self._notified = self._notified, None
        if notified is not None:
            events.append(notified)
        return events

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
