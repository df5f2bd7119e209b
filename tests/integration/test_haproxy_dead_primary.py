"""Clients of HAProxy (shipped template, real HAProxy 2.6) while the primary is dead.

The primary is a TCP backend that greets each client with its name; closing it makes its
port refuse connections, as a crashed PostgreSQL's host does. A client that connects then
must land on the new address once the sink switches it, or be closed before the switch:
never be held on the dead address until HAProxy's retries run out (3 x 1 s) and then closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.haproxy import HAProxySink, Settings
from tools.harness.proxies import HAProxy
from tools.harness.watch import Backend, greeting

pytestmark = pytest.mark.integration

SWITCH_AFTER_S = 0.5


def record(epoch: int, backend: Backend) -> MasterRecord:
    return MasterRecord("main", epoch, epoch, backend.name, "127.0.0.1", backend.port, 1, "t", "t")


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in ("old", "new")}
    yield started
    for backend in started.values():
        backend.close()


class Attempt(threading.Thread):
    """One client connecting through HAProxy: what it read (empty when closed) and when."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answer: str | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            sock, self.answer = greeting(self.port, timeout=10)
            sock.close()
        except OSError as exc:
            self.answer = f"error: {exc}"
        self.ended_at = time.monotonic()


def test_a_client_of_a_dead_primary_lands_on_the_switch_or_is_closed_before_it(
    haproxy: HAProxy, backends: dict[str, Backend]
) -> None:
    sink = HAProxySink(Settings.from_mapping(haproxy.sink_section(), "test"))
    haproxy.config.write_text(sink.render({}))
    haproxy.start()
    sink.apply({"main": record(1, backends["old"])})
    sock, name = greeting(haproxy.port)
    sock.close()
    assert name == "old"

    backends["old"].close()  # its port refuses connections from now on
    client = Attempt(haproxy.port)
    client.start()
    time.sleep(SWITCH_AFTER_S)
    switching = time.monotonic()
    assert sink.apply({"main": record(2, backends["new"])}).action == "runtime"
    client.join(timeout=10)

    if client.answer == "new":  # it waited and got through
        assert client.ended_at - switching < 0.5
    else:  # failed fast: closed while the primary was dead, not when the switch came
        assert client.answer == ""
        assert client.ended_at < switching
    sock, name = greeting(haproxy.port)
    sock.close()
    assert name == "new"
