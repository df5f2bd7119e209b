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
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    SessionExpiredError,
    SessionMovedError,
)
from kazoo.handlers.utils import create_tcp_connection
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry, RetryFailedError
from kazoo.security import ACL, Id

from agrajag.config import Role, TlsSettings, ZooKeeperSettings
from agrajag.errors import AgrajagError, ConfigError
from agrajag.reasons import Reason
from agrajag.record import MasterRecord, NodeRecord, RecordError, WatcherAck
from agrajag.registry.acl import Grant, Policy
from agrajag.registry.errors import (
    AccessDenied,
    AgentNameTaken,
    NodeNameTaken,
    RegistryError,
    Unavailable,
)
from agrajag.registry.values import Current, Paths, Session, Znode

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

#: kazoo's errors that mean "ZooKeeper is not reachable now": the caller may try again later.
_UNREACHABLE = (
    ConnectionLoss,
    OperationTimeoutError,
    RetryFailedError,
    SessionExpiredError,  # and ConnectionClosedError, its subclass
    SessionMovedError,
)


@contextlib.contextmanager
def kazoo_errors(what: str) -> Iterator[None]:
    """Turn any kazoo error raised inside into a RegistryError naming `what`: the one place
    where library errors become agrajag's own (httpx's `map_httpcore_exceptions` is the model)."""
    try:
        yield
    except AgrajagError:
        raise
    except _UNREACHABLE as exc:
        raise Unavailable(f"ZooKeeper {what}: {exc!r}") from exc
    except NoAuthError as exc:
        raise AccessDenied(
            f"ZooKeeper {what}: not allowed by the znode's ACL for this identity (check "
            "zookeeper.auth and zookeeper.acl; agrajag secure-registry sets the ACLs)"
        ) from exc
    except AuthFailedError as exc:
        raise AccessDenied(f"ZooKeeper {what}: authentication failed") from exc
    except KazooException as exc:
        raise RegistryError(f"ZooKeeper {what}: {exc!r}") from exc


def _edge(method: Callable[P, T]) -> Callable[P, T]:
    """A public method of Registry: whatever kazoo raises leaves as a RegistryError."""

    @functools.wraps(method)
    def mapped(*args: P.args, **kwargs: P.kwargs) -> T:
        cluster = [a for a in args[1:2] if isinstance(a, str)]  # the first argument, if a name
        with kazoo_errors(" ".join([method.__name__, *cluster])):
            return method(*args, **kwargs)

    return mapped


_KAZOO_STATES = {
    KazooState.CONNECTED: Session.CONNECTED,
    KazooState.SUSPENDED: Session.SUSPENDED,
    KazooState.LOST: Session.LOST,
}


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """kazoo's logger with our secrets taken out: at DEBUG kazoo logs every request it sends,
    the authentication request with its password included.

    >>> import io
    >>> out = io.StringIO(); base = logging.getLogger("redact-demo"); base.propagate = False
    >>> base.addHandler(logging.StreamHandler(out)); base.setLevel(logging.DEBUG)
    >>> RedactingLogger(base, ["s3cret"]).debug("Sending %r", ("digest", "u:s3cret"))
    >>> out.getvalue()
    "Sending ('digest', 'u:***')\\n"
    """

    def __init__(self, logger: logging.Logger, secrets: list[str]) -> None:
        super().__init__(logger, {})
        self.secrets = secrets

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # a malformed call must not break kazoo's thread
            text = f"{msg} {args!r}"
        for secret in self.secrets:
            text = text.replace(secret, "***")
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", text, **kwargs)


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
    ) -> Registry:
        """A registry on a new client for `role`; starts connecting, waits up to
        `start_timeout` for it.

        The process goes on when ZooKeeper is down at start: kazoo keeps trying, and the
        session state tells the caller when it may act. A TLS server that answers with a
        certificate we cannot trust (or without TLS) is refused at once: that is not an
        outage that may pass.
        """
        policy = Policy(zk.acl) if zk.acl else None
        secrets = [zk.auth.password] if zk.auth else []
        tls = zk.tls
        creates = _kazoo_acl(policy.created_by(role)) if policy else []
        try:
            client = KazooClient(
                hosts=zk.hosts,
                timeout=zk.session_timeout_s,
                connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
                auth_data=[("digest", f"{zk.auth.user}:{zk.auth.password}")] if zk.auth else None,
                default_acl=creates or None,  # None: kazoo's default, open to anyone
                use_ssl=tls is not None,
                ca=tls and tls.ca,
                certfile=tls and tls.cert,
                keyfile=tls and tls.key,
                verify_certs=True,
                check_hostname=tls is not None,
                logger=RedactingLogger(logging.getLogger("kazoo.client"), secrets),
            )
        except ValueError as exc:
            raise ConfigError(f"zookeeper.hosts {zk.hosts!r}: {exc}") from None
        if tls:
            _check_tls(client.hosts, tls, timeout=min(zk.call_timeout_s, 5.0))
        registry = cls(client, zk.root, call_timeout=zk.call_timeout_s, acl=policy)
        event = client.start_async()
        event.wait(start_timeout)
        return registry

    @_edge
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

    def _commit(self, transaction: Any) -> list[Any]:
        """Commit a multi-op transaction within the bound, once: after a failure the next
        round re-reads instead of retrying blindly. Returns kazoo's result list."""
        self._require_connected("commit")
        result: list[Any] = self._wait(transaction.commit_async())
        return result

    # -- layout and liveness ---------------------------------------------------------------

    @_edge
    def ensure_layout(self, cluster: str) -> None:
        """Create the cluster's `nodes/`, `history/` and `watchers/` where missing."""
        paths = Paths(self.root, cluster)
        for path in (paths.nodes, paths.history, paths.watchers):
            # watchers/ lets watchers create their acknowledgement in it; the rest is the
            # client's default ACL
            acl = (
                _kazoo_acl(self.acl_policy.watchers_dir())
                if self.acl_policy and path == paths.watchers
                else None
            )
            with contextlib.suppress(NodeExistsError):
                self._call("create", path, b"", acl=acl, makepath=True)

    @_edge
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

    @_edge
    def update_node(self, cluster: str, record: NodeRecord) -> None:
        """Rewrite this daemon's own `nodes/<node>`; if it is gone, the next `register_node`
        creates it again with the current record."""
        with contextlib.suppress(NoNodeError):
            self._call("set", Paths(self.root, cluster).node(record.node), record.to_json())

    @_edge
    def unregister_node(self, cluster: str, node: str) -> None:
        with contextlib.suppress(NoNodeError):
            self._call("delete", Paths(self.root, cluster).node(node))

    @_edge
    def guard_version(self, cluster: str, node: str) -> int | None:
        """The version of `nodes/<node>` (the guard of a publish), None when that daemon is gone."""
        stat = self._call("exists", Paths(self.root, cluster).node(node))
        return None if stat is None else int(stat.version)

    @_edge
    def live_nodes(self, cluster: str) -> list[str]:
        """Names of the daemons that have a liveness node now."""
        return self._children(Paths(self.root, cluster).nodes)

    def _children(self, path: str) -> list[str]:
        try:
            return sorted(self._call("get_children", path))
        except NoNodeError:
            return []

    # -- the master ------------------------------------------------------------------------

    @_edge
    def read_master(self, cluster: str) -> Current:
        """The master znode as read; an unreadable record is a `problem`, never an exception."""
        return self._read_master(cluster)

    def _read_master(self, cluster: str) -> Current:
        paths = Paths(self.root, cluster)
        try:
            data, stat = self._call("get", paths.master)
        except NoNodeError:
            return Current(None, -1, 0)
        try:
            record = MasterRecord.from_json(data, source=paths.master)
        except RecordError as exc:
            return Current(None, int(stat.version), 0, str(exc))
        return Current(record, int(stat.version), record.epoch)

    @_edge
    def epoch_floor(self, cluster: str) -> int:
        """The highest epoch the registry still shows anywhere: the master, every history entry
        and every watcher's acknowledgement (publishing rule 6). Read only before a publish:
        it costs a read per history entry and per watcher."""
        acks = self._watchers(cluster).values()
        return max(
            [
                self._read_master(cluster).last_epoch,
                *(record.epoch for record in self._history(cluster, last=None)),
                *(ack.applied_epoch for ack in acks if isinstance(ack, WatcherAck)),
            ]
        )

    @_edge
    def publish(
        self, record: MasterRecord, master_version: int, guard_version: int
    ) -> Reason | None:
        """Write `record` in ONE multi-op (publishing rule 7): check the new master's liveness
        node at `guard_version`, set (or create, at -1) the master at `master_version`, add a
        history entry. None when written, else why not (never retried: the caller re-reads)."""
        paths = Paths(self.root, record.cluster)
        data = record.to_json()
        tx = self.client.transaction()
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
        failed_op = results.index(first)
        if isinstance(first, NoNodeError):
            if failed_op == 0:
                return Reason.GUARD_MISSING
            if failed_op == 1 and master_version >= 0:  # deleted since it was read
                return Reason.LOST_RACE
            # The parent of `master` or of the history entry is gone: someone deleted
            # history/ or the cluster's subtree. The caller recreates the layout and re-reads.
            return Reason.LAYOUT_MISSING
        if isinstance(first, BadVersionError | NodeExistsError):
            return Reason.LOST_RACE
        if isinstance(first, NoAuthError):
            raise first  # the edge makes it AccessDenied: an ACL refusal is not a lost race
        raise RegistryError(f"publishing {paths.master} failed: {results!r}")

    @_edge
    def history(self, cluster: str, last: int | None = 10) -> list[MasterRecord]:
        """The newest `last` history entries (None: all), oldest first; unreadable entries
        are skipped."""
        return self._history(cluster, last)

    def _history(self, cluster: str, last: int | None) -> list[MasterRecord]:
        paths = Paths(self.root, cluster)
        records = []
        names = self._children(paths.history)
        for name in names if last is None else names[-last:]:
            try:
                data, _ = self._call("get", f"{paths.history}/{name}")
                records.append(MasterRecord.from_json(data, source=f"{paths.history}/{name}"))
            except (NoNodeError, RecordError) as exc:
                log.warning("skipping history entry %s: %s", name, exc)
        return records

    @_edge
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

    @_edge
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

    @_edge
    def watchers(self, cluster: str) -> dict[str, WatcherAck | str]:
        """Each live watcher's acknowledgement (or why it could not be read)."""
        return self._watchers(cluster)

    def _watchers(self, cluster: str) -> dict[str, WatcherAck | str]:
        return self._records(Paths(self.root, cluster).watchers, WatcherAck.from_json)

    def _records(self, parent: str, parse: Callable[[bytes, str], R]) -> dict[str, R | str]:
        """Each child of `parent` parsed (or why it could not be); one gone meanwhile is left
        out (ephemeral nodes come and go)."""
        result: dict[str, R | str] = {}
        for name in self._children(parent):
            path = f"{parent}/{name}"
            try:
                data, _ = self._call("get", path)
                result[name] = parse(data, path)
            except NoNodeError:
                continue
            except RecordError as exc:
                result[name] = str(exc)
        return result

    @_edge
    def node_records(self, cluster: str) -> dict[str, NodeRecord | str]:
        """Each live daemon's liveness record (or why it could not be read)."""
        return self._records(Paths(self.root, cluster).nodes, NodeRecord.from_json)

    @_edge
    def clusters(self) -> list[str]:
        return self._children(self.root)

    # -- operator maintenance (`agrajag registry`) -------------------------------------------

    @_edge
    def tree(self, cluster: str) -> list[Znode]:
        """Every znode of the cluster's subtree, each parent before its children, sorted."""
        found, pending = [], [Paths(self.root, cluster).base]
        while pending:
            path = pending.pop()
            try:
                data, stat = self._call("get", path)
                children = self._call("get_children", path)
            except NoNodeError:
                continue  # gone meanwhile (an ephemeral node, a trimmed entry)
            found.append(Znode(path, data, stat.version, stat.ephemeralOwner, stat.mtime))
            pending.extend(f"{path}/{child}" for child in sorted(children, reverse=True))
        return found

    @_edge
    def history_names(self, cluster: str) -> list[str]:
        """The names of the history entries, oldest first (sequence numbers sort as text)."""
        return self._children(Paths(self.root, cluster).history)

    @_edge
    def delete_history(self, cluster: str, names: Sequence[str]) -> None:
        history = Paths(self.root, cluster).history
        for name in names:
            with contextlib.suppress(NoNodeError):
                self._call("delete", f"{history}/{name}")

    @_edge
    def reset(self, cluster: str, entry: MasterRecord, master_version: int) -> None:
        """In ONE multi-op: delete the master read at `master_version` (-1: read as absent) and
        add `entry` to the history, so the daemons republish above its epoch. ZooKeeper has no
        "check absent": creating and deleting the master in the same multi-op fails if a
        daemon published meanwhile. Anything changed since it was read: RegistryError."""
        paths = Paths(self.root, cluster)
        tx = self.client.transaction()
        if master_version < 0:
            tx.create(paths.master, b"")
            master_version = 0
        tx.delete(paths.master, master_version)
        tx.create(f"{paths.history}/epoch-", entry.to_json(), sequence=True)
        results = self._commit(tx)
        if any(isinstance(r, Exception) for r in results):
            raise RegistryError(
                f"reset of {paths.base} not done: the master changed since it was read "
                f"({results!r}); look again and retry"
            )

    # -- ACLs (agrajag secure-registry) ----------------------------------------------------

    @_edge
    def children(self, path: str) -> list[str]:
        return self._children(path)

    @_edge
    def acl(self, path: str) -> tuple[frozenset[Grant], int] | None:
        """The znode's ACL and its ACL version; None when there is no such znode."""
        try:
            acls, stat = self._call("get_acls", path)
        except NoNodeError:
            return None
        return frozenset(Grant(a.id.scheme, a.id.id, a.perms) for a in acls), int(stat.aversion)

    @_edge
    def set_acl(self, path: str, grants: frozenset[Grant], version: int) -> None:
        """Replace the znode's ACL if it is still at ACL `version` (else BadVersion)."""
        self._call("set_acls", path, _kazoo_acl(grants), version)


def _kazoo_acl(grants: frozenset[Grant]) -> list[ACL]:
    return [ACL(g.perms, Id(g.scheme, g.id)) for g in sorted(grants)]


def _check_tls(hosts: list[tuple[str, int]], tls: TlsSettings, timeout: float) -> None:
    """Shake hands with every address of every server as kazoo will; a server we cannot trust
    (or that does not speak TLS) is an error now. One that does not answer is left to kazoo's
    retries: an outage may pass, a wrong certificate will not."""
    for host, port in hosts:
        try:
            addresses = {
                info[4][0] for info in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            }
        except OSError:
            continue
        for address in sorted(addresses):
            try:
                conn = create_tcp_connection(
                    socket,
                    (address, port),
                    hostname=host,
                    timeout=timeout,
                    use_ssl=True,
                    ca=tls.ca,
                    certfile=tls.cert,
                    keyfile=tls.key,
                    verify_certs=True,
                    check_hostname=True,
                )
            except ssl.SSLError as exc:
                why = _handshake_refusal(exc, tls)
                raise AccessDenied(f"TLS to ZooKeeper {host}:{port} refused: {why}") from None
            except OSError:
                continue
            conn.close()


def _handshake_refusal(exc: ssl.SSLError, tls: TlsSettings) -> str:
    """Why a TLS handshake failed, in the operator's terms."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message} (zookeeper.tls.ca {tls.ca})"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the server ended the handshake (a plaintext port, or it refused our certificate)"
    return str(exc.reason or exc)
