"""The registry's error boundary: whatever kazoo raises, a public method of `Registry` (and of
`Maintenance`, the operators' registry) raises
an agrajag `RegistryError` (or answers), never a kazoo exception that would end the process.

Every public method is called on a plain fake client whose every request fails with one
kazoo exception class; the matrix covers each class a call can raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from kazoo import exceptions as kz
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from agrajag.record import MasterRecord, NodeRecord, WatcherAck
from agrajag.registry.client import Registry
from agrajag.registry.errors import AccessDenied, RegistryError, Unavailable
from agrajag.registry.maintenance import Maintenance

RECORD = MasterRecord("main", 7, 2, "node2", "10.0.0.2", 5432, 2, "node3", "t", {})

UNREACHABLE = [
    kz.ConnectionLoss,
    kz.OperationTimeoutError,
    kz.SessionExpiredError,
    kz.ConnectionClosedError,
    kz.SessionMovedError,
]
DENIED = [kz.AuthFailedError, kz.NoAuthError]
OTHER = [
    kz.NoNodeError,
    kz.NodeExistsError,
    kz.BadVersionError,
    kz.NotEmptyError,
    kz.RuntimeInconsistency,
    kz.MarshallingError,
    kz.APIError,
    kz.InvalidACLError,
    kz.BadArgumentsError,
    kz.NoChildrenForEphemeralsError,
    kz.ZookeeperError,
    kz.KazooException,
]


class Failing:
    """What a `*_async` call returns: its `.get()` raises the scripted exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def get(self, timeout: float) -> Any:
        raise self.exc


class FailingTransaction:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def check(self, *args: Any) -> None: ...

    def create(self, *args: Any, **kwargs: Any) -> None: ...

    def set_data(self, *args: Any) -> None: ...

    def delete(self, *args: Any) -> None: ...

    def commit_async(self) -> Failing:
        return Failing(self.exc)


class FailingClient:
    """A stand-in for KazooClient, connected, on which every request raises `exc`."""

    state = KazooState.CONNECTED
    client_id = (0x1234, b"")

    class handler:  # kazoo's attribute name
        timeout_exception = KazooTimeoutError

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def add_listener(self, listener: Any) -> None: ...

    def __getattr__(self, name: str) -> Callable[..., Failing]:
        if not name.endswith("_async"):
            raise AttributeError(name)
        return lambda *args, **kwargs: Failing(self.exc)

    def transaction(self) -> FailingTransaction:
        return FailingTransaction(self.exc)

    def DataWatch(self, path: str, func: Any) -> None:
        raise self.exc

    def stop(self) -> None:
        raise self.exc

    def close(self) -> None: ...


CALLS: dict[str, Callable[[Maintenance], object]] = {
    "close": lambda r: r.close(),
    "ensure_layout": lambda r: r.ensure_layout("main"),
    "register_node": lambda r: r.register_node("main", NodeRecord("node1", None, 1, "0", "t")),
    "unregister_node": lambda r: r.unregister_node("main", "node1"),
    "update_node": lambda r: r.update_node("main", NodeRecord("node1", None, 1, "0", "t")),
    "guard_version": lambda r: r.guard_version("main", "node1"),
    "live_nodes": lambda r: r.live_nodes("main"),
    "read_master": lambda r: r.read_master("main"),
    "publish": lambda r: r.publish(RECORD, 3, 0),
    "history": lambda r: r.history("main"),
    "epoch_floor": lambda r: r.epoch_floor("main"),
    "watch_master": lambda r: r.watch_master("main", lambda: None),
    "acknowledge": lambda r: r.acknowledge("main", WatcherAck("app1", 7, "t", {})),
    "watchers": lambda r: r.watchers("main"),
    "node_records": lambda r: r.node_records("main"),
    "clusters": lambda r: r.clusters(),
    "tree": lambda r: r.tree("main"),
    "history_names": lambda r: r.history_names("main"),
    "delete_history": lambda r: r.delete_history("main", ["epoch-0000000001"]),
    "reset": lambda r: r.reset("main", RECORD, -1),
    "children": lambda r: r.children("/agrajag"),
    "acl": lambda r: r.acl("/agrajag"),
    "set_acl": lambda r: r.set_acl("/agrajag", frozenset(), 0),
}


def test_every_public_method_is_covered() -> None:
    public = {
        name
        for cls in (Registry, Maintenance)
        for name in vars(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }
    assert public - {"connect", "on_session"} == set(CALLS)


def call(name: str, exc: BaseException) -> object:
    retry = KazooRetry(max_tries=1, delay=0, max_jitter=0, sleep_func=lambda _s: None)
    return CALLS[name](Maintenance(FailingClient(exc), call_timeout=0.1, retry=retry))


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("exc", UNREACHABLE, ids=lambda e: e.__name__)
def test_unreachable_zookeeper_is_unavailable(name: str, exc: type[Exception]) -> None:
    with pytest.raises(Unavailable, match=f"ZooKeeper {name}"):
        call(name, exc())


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("exc", DENIED, ids=lambda e: e.__name__)
def test_refused_credentials_are_access_denied(name: str, exc: type[Exception]) -> None:
    with pytest.raises(AccessDenied, match=f"ZooKeeper {name}"):
        call(name, exc())


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("exc", OTHER, ids=lambda e: e.__name__)
def test_any_other_kazoo_error_is_an_answer_or_a_registry_error(
    name: str, exc: type[Exception]
) -> None:
    with contextlib.suppress(RegistryError):  # mapped; a kazoo exception fails the test
        call(name, exc())


def test_a_request_timing_out_on_the_client_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="read_master main"):
        call("read_master", KazooTimeoutError())
