"""The registry in ZooKeeper: the only module that talks to ZooKeeper.

Layout under the root (default ``/agrajag``), one subtree per cluster::

    <cluster>/master            persistent, the MasterRecord; written only by `publish`
    <cluster>/nodes/<node>      ephemeral, one per running daemon (its liveness, the guard)
    <cluster>/history/epoch-N   persistent-sequential, the record at each change
    <cluster>/watchers/<agent>  ephemeral, what each watcher has applied

Every call is bounded: since kazoo 2.7 a call made while SUSPENDED is queued, not failed, so
each one waits at most `call_timeout` and then raises `Unavailable`. Library errors become
agrajag's own here, at the edge.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
)
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry, RetryFailedError

from agrajag.errors import AgrajagError, ConfigError
from agrajag.record import MasterRecord, NodeRecord, RecordError, WatcherAck

log = logging.getLogger(__name__)


class RegistryError(AgrajagError):
    """ZooKeeper did not do what was asked."""


class Unavailable(RegistryError):
    """ZooKeeper could not be reached within the call's bound (or the session is not connected)."""


class NodeNameTaken(RegistryError):
    """Another live session owns `nodes/<node>`: a second daemon with the same node name."""


class AgentNameTaken(RegistryError):
    """Another live session owns `watchers/<agent>`: a second watcher with the same agent
    name, or this watcher's previous run whose session has not expired yet."""


class Session(StrEnum):
    """The daemon's view of its ZooKeeper session (kazoo's states, named for agrajag)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


class Published(StrEnum):
    """How a guarded publish ended."""

    PUBLISHED = "published"
    LOST_RACE = "lost_race"  # the master znode changed since it was read: re-read, do not retry
    GUARD_MISSING = "guard_missing"  # the new master's daemon is gone (no `nodes/<node>`)


@dataclass(frozen=True, slots=True)
class Current:
    """The master znode as read: the record (None if absent or unreadable), its version and the
    highest epoch known, so that a new record always gets a higher one."""

    record: MasterRecord | None
    version: int  # -1: the znode does not exist
    last_epoch: int
    problem: str | None = None  # why an existing znode could not be used


@dataclass(frozen=True, slots=True)
class Paths:
    """Znode paths of one cluster."""

    root: str
    cluster: str

    @property
    def base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.cluster}"

    @property
    def master(self) -> str:
        return f"{self.base}/master"

    @property
    def nodes(self) -> str:
        return f"{self.base}/nodes"

    @property
    def history(self) -> str:
        return f"{self.base}/history"

    @property
    def watchers(self) -> str:
        return f"{self.base}/watchers"

    def node(self, name: str) -> str:
        return f"{self.nodes}/{name}"

    def watcher(self, agent: str) -> str:
        return f"{self.watchers}/{agent}"


_KAZOO_STATES = {
    KazooState.CONNECTED: Session.CONNECTED,
    KazooState.SUSPENDED: Session.SUSPENDED,
    KazooState.LOST: Session.LOST,
}


def default_retry(call_timeout: float) -> KazooRetry:
    """Retry a lost connection briefly, never past the call's own bound."""
    return KazooRetry(max_tries=3, delay=0.05, max_delay=0.5, deadline=call_timeout)


class Registry:
    """agrajag's operations on the registry of one ZooKeeper ensemble.

    `retry` is a KazooRetry (inject one with a fake `sleep_func` in tests); `call_timeout`
    bounds each attempt.
    """

    def __init__(
        self,
        client: Any,
        root: str = "/agrajag",
        *,
        call_timeout: float = 2.0,
        retry: KazooRetry | None = None,
    ) -> None:
        self.client = client
        self.root = root
        self.call_timeout = call_timeout
        self.retry = retry or default_retry(call_timeout)
        self._listeners: list[Callable[[Session], None]] = []
        self._lock = threading.Lock()
        client.add_listener(self._on_state)

    @classmethod
    def connect(
        cls,
        hosts: str,
        root: str = "/agrajag",
        *,
        session_timeout: float = 10.0,
        call_timeout: float = 2.0,
        start_timeout: float = 0.0,
    ) -> Registry:
        """A registry on a new client; starts connecting, waits up to `start_timeout` for it.

        The process goes on when ZooKeeper is down at start: kazoo keeps trying, and the
        session state tells the caller when it may act.
        """
        try:
            client = KazooClient(
                hosts=hosts,
                timeout=session_timeout,
                connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
            )
        except ValueError as exc:
            raise ConfigError(f"zookeeper.hosts {hosts!r}: {exc}") from None
        registry = cls(client, root, call_timeout=call_timeout)
        event = client.start_async()
        event.wait(start_timeout)
        return registry

    def close(self) -> None:
        """End the session now: its ephemeral nodes go at once."""
        try:
            self.client.stop()
        finally:
            self.client.close()

    # -- session ---------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        return _KAZOO_STATES[self.client.state]

    @property
    def session_id(self) -> int | None:
        client_id = self.client.client_id
        return int(client_id[0]) if client_id else None

    def on_session(self, listener: Callable[[Session], None]) -> None:
        """Call `listener` on every session change; it runs on kazoo's thread and must not block."""
        with self._lock:
            self._listeners.append(listener)

    def _on_state(self, state: str) -> None:
        session = _KAZOO_STATES[state]
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(session)

    # -- bounded calls ---------------------------------------------------------------------

    def _require_connected(self, what: str) -> None:
        if self.session is not Session.CONNECTED:
            raise Unavailable(f"ZooKeeper session is {self.session}: not calling {what}")

    def _wait(self, request: Any) -> Any:
        """The answer to one request, waiting at most `call_timeout`."""
        try:
            return request.get(timeout=self.call_timeout)
        except self.client.handler.timeout_exception:
            raise OperationTimeoutError() from None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run `client.<method>_async(...)` with a bound per attempt and kazoo's retry policy."""
        self._require_connected(method)
        async_method = getattr(self.client, f"{method}_async")
        try:
            return self.retry.copy()(lambda: self._wait(async_method(*args, **kwargs)))
        except (ConnectionLoss, OperationTimeoutError, RetryFailedError) as exc:
            raise Unavailable(f"ZooKeeper {method} {args[:1]} failed: {exc!r}") from exc
        except (NoNodeError, NodeExistsError, BadVersionError):
            raise
        except KazooException as exc:
            raise RegistryError(f"ZooKeeper {method} {args[:1]} failed: {exc!r}") from exc

    def _commit(self, transaction: Any) -> list[Any]:
        """Commit a multi-op transaction within the bound, once: after a failure the next
        round re-reads instead of retrying blindly. Returns kazoo's result list."""
        self._require_connected("commit")
        try:
            result: list[Any] = self._wait(transaction.commit_async())
        except (ConnectionLoss, OperationTimeoutError) as exc:
            raise Unavailable(f"ZooKeeper transaction failed: {exc!r}") from exc
        return result

    # -- layout and liveness ---------------------------------------------------------------

    def ensure_layout(self, cluster: str) -> None:
        paths = Paths(self.root, cluster)
        for path in (paths.nodes, paths.history, paths.watchers):
            with contextlib.suppress(NodeExistsError):
                self._call("create", path, b"", makepath=True)

    def register_node(self, cluster: str, record: NodeRecord) -> bool:
        """Make sure `nodes/<node>` exists and belongs to this session; True if it was created.

        A re-created ephemeral node starts again at version 0, so ownership is judged by
        `ephemeralOwner`, never by version.
        """
        path = Paths(self.root, cluster).node(record.node)
        try:
            stat = self._call("exists", path)
            if stat is not None:
                if stat.ephemeralOwner == self.session_id:
                    return False
                raise NodeNameTaken(
                    f"{path} belongs to ZooKeeper session {stat.ephemeralOwner:#x}, not ours: "
                    "is another daemon running with the same node name? (a crashed daemon's "
                    "node disappears after its session timeout)"
                )
            self._call("create", path, record.to_json(), ephemeral=True, makepath=True)
            return True
        except NodeExistsError:
            raise NodeNameTaken(f"{path} was just created by another session") from None

    def unregister_node(self, cluster: str, node: str) -> None:
        with contextlib.suppress(NoNodeError):
            self._call("delete", Paths(self.root, cluster).node(node))

    def guard_version(self, cluster: str, node: str) -> int | None:
        """The version of `nodes/<node>` (the guard of a publish), None when that daemon is gone."""
        stat = self._call("exists", Paths(self.root, cluster).node(node))
        return None if stat is None else int(stat.version)

    def live_nodes(self, cluster: str) -> list[str]:
        """Names of the daemons that have a liveness node now."""
        return self._children(Paths(self.root, cluster).nodes)

    def _children(self, path: str) -> list[str]:
        try:
            return sorted(self._call("get_children", path))
        except NoNodeError:
            return []

    # -- the master ------------------------------------------------------------------------

    def read_master(self, cluster: str) -> Current:
        paths = Paths(self.root, cluster)
        try:
            data, stat = self._call("get", paths.master)
        except NoNodeError:
            return Current(None, -1, self._last_history_epoch(paths))
        try:
            record = MasterRecord.from_json(data, source=paths.master)
        except RecordError as exc:
            return Current(None, int(stat.version), self._last_history_epoch(paths), str(exc))
        return Current(record, int(stat.version), record.epoch)

    def publish(self, record: MasterRecord, current: Current, guard_version: int) -> Published:
        """Write `record` in ONE multi-op: check the new master's liveness node at the version
        just read, set (or create) the master at the version just read, add a history entry."""
        paths = Paths(self.root, record.cluster)
        data = record.to_json()
        tx = self.client.transaction()
        tx.check(paths.node(record.node), guard_version)
        if current.version < 0:
            tx.create(paths.master, data)
        else:
            tx.set_data(paths.master, data, current.version)
        tx.create(f"{paths.history}/epoch-", data, sequence=True)
        results = self._commit(tx)
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return Published.PUBLISHED
        first = next(r for r in failures if not isinstance(r, RolledBackError))
        if results.index(first) == 0 and isinstance(first, NoNodeError):
            return Published.GUARD_MISSING
        if isinstance(first, BadVersionError | NodeExistsError):
            return Published.LOST_RACE
        raise RegistryError(f"publishing {paths.master} failed: {results!r}")

    def history(self, cluster: str, last: int = 10) -> list[MasterRecord]:
        """The newest `last` history entries, oldest first; unreadable entries are skipped."""
        paths = Paths(self.root, cluster)
        records = []
        for name in self._children(paths.history)[-last:]:
            try:
                data, _ = self._call("get", f"{paths.history}/{name}")
                records.append(MasterRecord.from_json(data, source=f"{paths.history}/{name}"))
            except (NoNodeError, RecordError) as exc:
                log.warning("skipping history entry %s: %s", name, exc)
        return records

    def _last_history_epoch(self, paths: Paths) -> int:
        entries = self.history(paths.cluster, last=1)
        return entries[-1].epoch if entries else 0

    def watch_master(self, cluster: str, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever the master znode may have changed (kazoo's thread: the
        callback must only wake someone up). DataWatch re-arms itself across reconnects and
        may coalesce versions, so the caller re-reads every time."""
        path = Paths(self.root, cluster).master

        def changed(data: bytes | None, stat: Any, event: Any = None) -> None:
            on_change()

        self.client.DataWatch(path, changed)

    # -- watchers ---------------------------------------------------------------------------

    def acknowledge(self, cluster: str, ack: WatcherAck) -> None:
        """Create or update this watcher's ephemeral `watchers/<agent>` node, only if this
        session owns it (`ephemeralOwner`, as `register_node` judges): a node left by a dead
        session would vanish at its expiry, taking the acknowledgement with it, so it is
        refused with AgentNameTaken until it expires and can be created anew."""
        path = Paths(self.root, cluster).watcher(ack.agent)
        stat = self._call("exists", path)
        try:
            if stat is None:
                self._call("create", path, ack.to_json(), ephemeral=True, makepath=True)
            elif stat.ephemeralOwner == self.session_id:
                self._call("set", path, ack.to_json(), version=stat.version)
            else:
                raise AgentNameTaken(
                    f"{path} belongs to ZooKeeper session {stat.ephemeralOwner:#x}, not ours: "
                    "is another watcher running with the same agent name? (a stopped "
                    "watcher's node disappears after its session timeout, then this one "
                    "acknowledges)"
                )
        except NodeExistsError:
            raise AgentNameTaken(f"{path} was just created by another session") from None
        except (NoNodeError, BadVersionError) as exc:
            raise RegistryError(f"{path} changed while acknowledging: {exc!r}") from None

    def watchers(self, cluster: str) -> dict[str, WatcherAck | str]:
        """Each live watcher's acknowledgement (or why it could not be read)."""
        paths = Paths(self.root, cluster)
        result: dict[str, WatcherAck | str] = {}
        for name in self._children(paths.watchers):
            try:
                data, _ = self._call("get", paths.watcher(name))
                result[name] = WatcherAck.from_json(data, source=paths.watcher(name))
            except NoNodeError:
                continue
            except RecordError as exc:
                result[name] = str(exc)
        return result

    def node_records(self, cluster: str) -> dict[str, NodeRecord | str]:
        """Each live daemon's liveness record (or why it could not be read)."""
        paths = Paths(self.root, cluster)
        result: dict[str, NodeRecord | str] = {}
        for name in self.live_nodes(cluster):
            try:
                data, _ = self._call("get", paths.node(name))
                result[name] = NodeRecord.from_json(data, source=paths.node(name))
            except NoNodeError:
                continue
            except RecordError as exc:
                result[name] = str(exc)
        return result

    def clusters(self) -> list[str]:
        return self._children(self.root)
