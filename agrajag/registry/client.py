"""The registry in ZooKeeper: the only module that talks to ZooKeeper.

Layout under the root (default ``/agrajag``), one subtree per cluster::

    <cluster>/master            persistent, the MasterRecord; written only by `publish`
    <cluster>/nodes/<node>      ephemeral, one per running daemon (its liveness, the guard)
    <cluster>/history/epoch-N   persistent-sequential, the record at each write of master
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
from typing import Any, Self, TypeVar

from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
)
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from agrajag.reasons import Reason
from agrajag.record import MasterRecord, NodeRecord, WatcherAck
from agrajag.registry.acl import Policy
from agrajag.registry.boundary import edge
from agrajag.registry.connection import kazoo_acl, new_client
from agrajag.registry.errors import (
    AgentNameTaken,
    NodeNameTaken,
    RegistryError,
    Unavailable,
)
from agrajag.registry.values import Current, Paths, Session, parse_all
from agrajag.zookeeper_settings import Role, ZooKeeperSettings

log = logging.getLogger(__name__)

R = TypeVar("R")

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
        acl: Policy | None = None,
    ) -> None:
        self.client = client
        self.root = root
        self.call_timeout = call_timeout
        self.retry = retry or default_retry(call_timeout)
        self.acl_policy = acl  # None: znodes are created open to anyone, as ZooKeeper's default
        self._listeners: list[Callable[[Session], None]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        if client.state == KazooState.CONNECTED:
            self._connected.set()
        client.add_listener(self._on_state)

    @classmethod
    def connect(
        cls, zk: ZooKeeperSettings, role: Role = Role.READER, *, start_timeout: float = 0.0
    ) -> Self:
        """A registry on a new client for `role`; starts connecting, waits up to
        `start_timeout` for it.

        The process goes on when ZooKeeper is down at start: kazoo keeps trying, and the
        session state tells the caller when it may act. A TLS server that answers with a
        certificate we cannot trust (or without TLS) is refused at once: that is not an
        outage that may pass.
        """
        policy = Policy(zk.acl) if zk.acl else None
        client = new_client(zk, kazoo_acl(policy.created_by(role)) if policy else [])
        registry = cls(client, zk.root, call_timeout=zk.call_timeout_s, acl=policy)
        event = client.start_async()
        event.wait(start_timeout)
        return registry

    @edge
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
        if session is Session.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
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
        """Run `client.<method>_async(...)` with a bound per attempt and kazoo's retry policy.
        kazoo's errors go up as they are: the public method's `_edge` maps them."""
        self._require_connected(method)
        async_method = getattr(self.client, f"{method}_async")
        return self.retry.copy()(lambda: self._wait(async_method(*args, **kwargs)))

    def _call_all(self, calls: list[tuple[str, str]]) -> list[Any]:
        """`_call(method, path)` for each (method, path), sent all at once: one round trip, not
        one each (a publish reads every history entry first, on the failover's path). A znode
        gone meanwhile answers None. Bounded and retried as a whole."""
        self._require_connected("reads")

        def attempt() -> list[Any]:
            sent = [getattr(self.client, f"{method}_async")(path) for method, path in calls]
            return [self._answer(request) for request in sent]

        return list(self.retry.copy()(attempt))

    def _answer(self, request: Any) -> Any:
        with contextlib.suppress(NoNodeError):
            return self._wait(request)
        return None

    def _get_all(self, paths: list[str]) -> list[tuple[str, Any]]:
        """(path, (data, stat) or None when gone) for each path, read at once."""
        return list(zip(paths, self._call_all([("get", p) for p in paths]), strict=True))

    def _commit(self, transaction: Any) -> list[Any]:
        """Commit a multi-op transaction within the bound, once: after a failure the next
        round re-reads instead of retrying blindly. Returns kazoo's result list."""
        self._require_connected("commit")
        result: list[Any] = self._wait(transaction.commit_async())
        return result

    # -- layout and liveness ---------------------------------------------------------------

    @edge
    def ensure_layout(self, cluster: str) -> None:
        """Create the cluster's `nodes/`, `history/` and `watchers/` where missing."""
        paths = Paths(self.root, cluster)
        for path in (paths.nodes, paths.history, paths.watchers):
            # watchers/ lets watchers create their acknowledgement in it; the rest is the
            # client's default ACL
            acl = (
                kazoo_acl(self.acl_policy.watchers_dir())
                if self.acl_policy and path == paths.watchers
                else None
            )
            with contextlib.suppress(NodeExistsError):
                self._call("create", path, b"", acl=acl, makepath=True)

    @edge
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

    @edge
    def update_node(self, cluster: str, record: NodeRecord) -> None:
        """Rewrite this daemon's own `nodes/<node>`; if it is gone, the next `register_node`
        creates it again with the current record."""
        with contextlib.suppress(NoNodeError):
            self._call("set", Paths(self.root, cluster).node(record.node), record.to_json())

    @edge
    def unregister_node(self, cluster: str, node: str) -> None:
        with contextlib.suppress(NoNodeError):
            self._call("delete", Paths(self.root, cluster).node(node))

    @edge
    def guard_version(self, cluster: str, node: str) -> int | None:
        """The version of `nodes/<node>` (the guard of a publish), None when that daemon is gone."""
        stat = self._call("exists", Paths(self.root, cluster).node(node))
        return None if stat is None else int(stat.version)

    @edge
    def live_nodes(self, cluster: str) -> list[str]:
        """Names of the daemons that have a liveness node now."""
        return self._children(Paths(self.root, cluster).nodes)

    def _children(self, path: str) -> list[str]:
        try:
            return sorted(self._call("get_children", path))
        except NoNodeError:
            return []

    # -- the master ------------------------------------------------------------------------

    @edge
    def read_master(self, cluster: str) -> Current:
        """The master znode as read; an unreadable record is a `problem`, never an exception."""
        path = Paths(self.root, cluster).master
        return Current.parse(path, *self._call_all([("get", path)]))

    @edge
    def epoch_floor(self, cluster: str) -> int:
        """The highest epoch the registry still shows anywhere: the master, every history entry
        and every watcher's acknowledgement (publishing rule 6). Read only before a publish:
        it reads every history entry and watcher (in two round trips, all at once)."""
        p = Paths(self.root, cluster)
        master, history, watchers = self._call_all(
            [("get", p.master), ("get_children", p.history), ("get_children", p.watchers)]
        )
        entries = [f"{p.history}/{name}" for name in history or []]
        answers = self._get_all(entries + [f"{p.watchers}/{name}" for name in watchers or []])
        records = parse_all(answers[: len(entries)], MasterRecord.from_json).values()
        acks = parse_all(answers[len(entries) :], WatcherAck.from_json).values()
        return max(
            [
                Current.parse(p.master, master).last_epoch,
                *(r.epoch for r in records if isinstance(r, MasterRecord)),
                *(a.applied_epoch for a in acks if isinstance(a, WatcherAck)),
            ]
        )

    @edge
    def publish(
        self, record: MasterRecord, master_version: int, guard_version: int | None
    ) -> Reason | None:
        """Write `record` in ONE multi-op (publishing rule 7): check the new master's liveness
        node at `guard_version`, set (or create, at -1) the master at `master_version`, add a
        history entry. None when written, else why not (never retried: the caller re-reads).
        Only a withdrawn record goes without a guard (None): it names a former primary."""
        if guard_version is None and record.routes:
            raise RegistryError(f"refusing to publish {record.node} without its guard (rule 5)")
        paths = Paths(self.root, record.cluster)
        data = record.to_json()
        tx = self.client.transaction()
        if guard_version is not None:
            tx.check(paths.node(record.node), guard_version)
        if master_version < 0:
            tx.create(paths.master, data)
        else:
            tx.set_data(paths.master, data, master_version)
        tx.create(f"{paths.history}/epoch-", data, sequence=True)
        results = self._commit(tx)
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return None
        first = next(r for r in failures if not isinstance(r, RolledBackError))
        failed_op = results.index(first) - (guard_version is not None)  # 0: the master
        if isinstance(first, NoNodeError):
            if failed_op < 0:
                return Reason.GUARD_MISSING
            if failed_op == 0 and master_version >= 0:  # deleted since it was read
                return Reason.LOST_RACE
            # The parent of `master` or of the history entry is gone: someone deleted
            # history/ or the cluster's subtree. The caller recreates the layout and re-reads.
            return Reason.LAYOUT_MISSING
        if isinstance(first, BadVersionError | NodeExistsError):
            return Reason.LOST_RACE
        if isinstance(first, NoAuthError):
            raise first  # the edge makes it AccessDenied: an ACL refusal is not a lost race
        raise RegistryError(f"publishing {paths.master} failed: {results!r}")

    @edge
    def history(self, cluster: str, last: int | None = 10) -> list[MasterRecord]:
        """The newest `last` history entries (None: all), oldest first; unreadable entries
        are skipped."""
        return self._history(cluster, last)

    def _history(self, cluster: str, last: int | None) -> list[MasterRecord]:
        history = Paths(self.root, cluster).history
        names = self._children(history)
        entries = [f"{history}/{name}" for name in (names if last is None else names[-last:])]
        parsed = parse_all(self._get_all(entries), MasterRecord.from_json)
        for name, problem in parsed.items():
            if isinstance(problem, str):
                log.warning("skipping history entry %s: %s", name, problem)
        return [record for record in parsed.values() if isinstance(record, MasterRecord)]

    @edge
    def watch_master(self, cluster: str, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever the master znode may have changed (kazoo's thread: the
        callback must only wake someone up). DataWatch re-arms itself across reconnects and
        may coalesce versions, so the caller re-reads every time.

        Waits for the session first, then reads the znode once: a watch kazoo cannot read
        (the ACL refuses this identity) raises AccessDenied here, instead of failing in kazoo's
        own threads at every reconnect."""
        path = Paths(self.root, cluster).master
        self._connected.wait()
        with contextlib.suppress(NoNodeError):
            self._call("get", path)

        def changed(data: bytes | None, stat: Any, event: Any = None) -> None:
            on_change()

        self.client.DataWatch(path, changed)

    # -- watchers ---------------------------------------------------------------------------

    @edge
    def acknowledge(self, cluster: str, ack: WatcherAck) -> None:
        """Create or update this watcher's ephemeral `watchers/<agent>` node, only if this
        session owns it (`ephemeralOwner`, as `register_node` judges): a node left by a dead
        session would vanish at its expiry, taking the acknowledgement with it, so it is
        refused with AgentNameTaken until it expires and can be created anew."""
        path = Paths(self.root, cluster).watcher(ack.agent)
        stat = self._call("exists", path)
        try:
            if stat is None:
                # under ACLs watchers/ must come from a daemon's ensure_layout: it carries the
                # right to create in it, which parents made here would not
                makepath = self.acl_policy is None
                self._call("create", path, ack.to_json(), ephemeral=True, makepath=makepath)
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

    @edge
    def watchers(self, cluster: str) -> dict[str, WatcherAck | str]:
        """Each live watcher's acknowledgement (or why it could not be read)."""
        return self._records(Paths(self.root, cluster).watchers, WatcherAck.from_json)

    def _records(self, parent: str, parse: Callable[[bytes, str], R]) -> dict[str, R | str]:
        """Each child of `parent` parsed (or why it could not be); one gone meanwhile is left
        out (ephemeral nodes come and go)."""
        return parse_all(self._get_all([f"{parent}/{n}" for n in self._children(parent)]), parse)

    @edge
    def node_records(self, cluster: str) -> dict[str, NodeRecord | str]:
        """Each live daemon's liveness record (or why it could not be read)."""
        return self._records(Paths(self.root, cluster).nodes, NodeRecord.from_json)

    @edge
    def clusters(self) -> list[str]:
        return self._children(self.root)
