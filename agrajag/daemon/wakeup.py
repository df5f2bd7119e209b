"""The local wake-up channel: repmgr's event hook wakes the daemon at once.

A Unix datagram socket: sending never blocks, a daemon that is not running costs the hook
nothing, and repmgr is never held up or failed by agrajag ("push", with polling as the
fallback). Configure repmgr.conf as in `conf.d/repmgr-event-notification.conf`. Two senders:
`agrajag-notify` (a JSON object), and util-linux's `logger -d -u SOCKET event=%e ...` (a
syslog line with `key=value` words): repmgr runs the hook, and waits for it, on every event
of a failover, and `logger` starts in about 2 ms where any Python takes 25 ms or more.

Anyone who may write to the socket can send anything: every datagram is judged by
`read_datagram`, which never raises; a bad one is counted (by `result`) and dropped, and the
listener thread goes on. The socket is mode 0660, in `wakeup_group` if configured.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agrajag.daemon.notify import MAX_DATAGRAM
from agrajag.errors import ConfigError

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
#: repmgr's event names (`standby_promote`, `repmgrd_failover_promote`, ...), bounded.
_EVENT = re.compile(r"[a-z0-9_]{0,64}")
#: A syslog line's priority, as `logger` starts every one.
_SYSLOG = re.compile(r"<[0-9]{1,3}>")
#: How often a dropped datagram is logged (the metric counts every one).
_LOG_EVERY_S = 60.0

ACCEPTED = "accepted"


def read_datagram(data: bytes) -> tuple[str, str]:
    """(result, event): `result` is ACCEPTED or why the datagram is dropped (a metric label:
    oversized, not_utf8, not_json, too_deep, invalid); `event` is the repmgr event name of an
    accepted one, "" otherwise. Never raises, whatever the bytes.

    >>> read_datagram(b'{"event": "standby_promote", "node_id": "2"}')
    ('accepted', 'standby_promote')
    >>> read_datagram(b"[" * 4096)
    ('too_deep', '')
    >>> read_datagram(b'{"event": "x\\\\nFAKE LOG LINE"}')
    ('invalid', '')
    >>> read_datagram(b"<13>Dec  1 05:03:21 agrajag: event=standby_promote node_id=2 success=1")
    ('accepted', 'standby_promote')
    """
    if len(data) > MAX_DATAGRAM:
        return "oversized", ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", ""
    if _SYSLOG.match(text):  # logger's: the words after the header, `key=value` ones
        doc: object = dict(word.split("=", 1) for word in text.split() if "=" in word)
    else:
        try:
            doc = json.loads(text)
        except RecursionError:
            return "too_deep", ""
        except ValueError:  # not JSON, or a number too long to convert
            return "not_json", ""
    event = doc.get("event", "") if isinstance(doc, dict) else None
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        return "invalid", ""
    return ACCEPTED, event or "unnamed"


class WakeupListener:
    """The daemon's end: a thread that calls `on_event(name)` for every valid datagram and
    `on_result(result)` for every datagram, valid or not (the metric)."""

    def __init__(
        self,
        path: str,
        on_event: Callable[[str], None],
        *,
        on_result: Callable[[str], None] = lambda _result: None,
        group: str | None = None,
    ) -> None:
        self.path = path
        self.on_event = on_event
        self.on_result = on_result
        gid = _group_id(group)
        directory = Path(path).parent
        if not directory.is_dir():
            raise ConfigError(
                f"wakeup_socket {path}: directory {directory} does not exist (create it, "
                "owned by the daemon's user, e.g. systemd's RuntimeDirectory=agrajag)"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(path)
            # repmgr runs the hook as the PostgreSQL user: that user or wakeup_group may send.
            os.chmod(path, SOCKET_MODE)
            if gid is not None:
                os.chown(path, -1, gid)
        except OSError as exc:
            self.sock.close()
            raise ConfigError(f"wakeup_socket {path}: cannot listen: {exc.strerror}") from None
        self.sock.settimeout(0.2)  # so that close() is noticed without a wake-up
        self._closed = threading.Event()
        self._logged_at = -_LOG_EVERY_S
        self._thread = threading.Thread(target=self._run, name="agrajag-wakeup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(MAX_DATAGRAM + 1)  # one byte more: tells oversized apart
            except TimeoutError:
                continue
            except OSError:
                return
            result, event = read_datagram(data)
            self.on_result(result)
            if result == ACCEPTED:
                self.on_event(event)
            else:
                self._log_dropped(result, data)

    def _log_dropped(self, result: str, data: bytes) -> None:
        """At most one line a minute: a flood must not flood the log too. repr() escapes."""
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "wake-up socket %s: dropped a datagram (%s): %r; further drops are only "
                "counted for a minute (agrajag_wakeup_datagrams_total)",
                self.path,
                result,
                data[:64],
            )

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"wakeup_group {group!r}: no such group") from None
