"""The registry's retry policy is kazoo's KazooRetry, passed in: these tests never sleep."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from agrajag.record import MasterRecord
from agrajag.registry.client import Registry
from agrajag.registry.errors import Unavailable


class Answer:
    """What kazoo's `*_async` calls return: something with `.get(timeout=)`."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def get(self, timeout: float) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class FakeClient:
    """A plain stand-in for KazooClient: `get_async` answers from a script."""

    class handler:  # kazoo's attribute name
        timeout_exception = KazooTimeoutError

    def __init__(self, *script: Any, state: str = KazooState.CONNECTED) -> None:
        self.script = list(script)
        self.state = state
        self.calls = 0

    def add_listener(self, listener: Any) -> None:
        pass

    def get_async(self, path: str) -> Answer:
        self.calls += 1
        return Answer(self.script.pop(0))

    def get_children_async(self, path: str) -> Answer:
        return Answer([])  # no history


def registry(client: FakeClient, sleeps: list[float], tries: int = 3) -> Registry:
    retry = KazooRetry(max_tries=tries, delay=0.05, max_jitter=0, sleep_func=sleeps.append)
    return Registry(client, call_timeout=1.0, retry=retry)


class Stat:
    version = 4


RECORD = MasterRecord("main", 7, 2, "node2", "10.0.0.2", 5432, 2, "node3", "t", {})


def test_a_lost_connection_is_retried_by_the_policy_passed_in() -> None:
    sleeps: list[float] = []
    client = FakeClient(ConnectionLoss(), ConnectionLoss(), (RECORD.to_json(), Stat()))
    current = registry(client, sleeps).read_master("main")
    assert client.calls == 3 and len(sleeps) == 2  # slept through the injected function
    assert (current.record, current.version, current.last_epoch) == (RECORD, 4, 7)


def test_a_call_that_times_out_is_retried_then_reported_unavailable() -> None:
    sleeps: list[float] = []
    client = FakeClient(*[KazooTimeoutError()] * 3)
    with pytest.raises(Unavailable, match="ZooKeeper read_master main"):
        registry(client, sleeps).read_master("main")
    assert client.calls == 3


def test_a_missing_node_is_an_answer_not_a_retry() -> None:
    sleeps: list[float] = []
    client = FakeClient(NoNodeError())
    current = registry(client, sleeps).read_master("main")
    assert (current.record, current.version, current.last_epoch) == (None, -1, 0)
    assert sleeps == []


def test_nothing_is_sent_while_the_session_is_suspended() -> None:
    client = FakeClient(state=KazooState.SUSPENDED)
    with pytest.raises(Unavailable, match="session is suspended"):
        registry(client, []).read_master("main")
    assert client.calls == 0


class Recording(FakeClient):
    """Answers by path, and records when each request is sent and when it is waited for."""

    def __init__(self, data: dict[str, Any], children: dict[str, list[str]]) -> None:
        super().__init__()
        self.data, self.children = data, children
        self.log: list[str] = []

    def _answer(self, kind: str, path: str, table: dict[str, Any]) -> Answer:
        self.log.append(f"send {kind} {path}")
        outcome = table.get(path, NoNodeError())
        answer = Answer(outcome)
        get = answer.get

        def waited(timeout: float) -> Any:
            self.log.append(f"wait {kind} {path}")
            return get(timeout)

        answer.get = waited  # type: ignore[method-assign]
        return answer

    def get_async(self, path: str) -> Answer:
        return self._answer("get", path, self.data)

    def get_children_async(self, path: str) -> Answer:
        return self._answer("children", path, self.children)


def test_the_epoch_floor_reads_every_entry_at_once_whatever_the_history_holds() -> None:
    """It is read before every publish, on the failover's path: two round trips, not one per
    history entry and acknowledgement; an entry deleted meanwhile is no error."""
    base = "/agrajag/main"
    entries = [f"epoch-{i:010d}" for i in range(5)]
    data = {f"{base}/history/{e}": (RECORD.to_json(), Stat()) for e in entries[:-1]}
    ack = b'{"agent": "app1", "applied_epoch": 9, "applied_at": "t", "sinks": {}, "schema": 1}'
    data[f"{base}/watchers/app1"] = (ack, Stat())
    client = Recording(data, {f"{base}/history": entries, f"{base}/watchers": ["app1"]})
    assert registry(client, []).epoch_floor("main") == 9
    first = [line.split()[0] for line in client.log[:6]]
    second = [line.split()[0] for line in client.log[6:]]
    assert first == ["send"] * 3 + ["wait"] * 3  # master, history/, watchers/ together
    assert second == ["send"] * 6 + ["wait"] * 6  # 5 entries (one gone) and the ack together
