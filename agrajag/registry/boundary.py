"""Where kazoo's errors become agrajag's: one context manager, one decorator for every public
method of the registry (httpx's `map_httpcore_exceptions` is the model)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from kazoo.exceptions import (
    AuthFailedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
)
from kazoo.retry import RetryFailedError

from agrajag.errors import AgrajagError
from agrajag.registry.errors import AccessDenied, RegistryError, Unavailable

P = ParamSpec("P")
T = TypeVar("T")

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


def edge(method: Callable[P, T]) -> Callable[P, T]:
    """A public method of Registry: whatever kazoo raises leaves as a RegistryError."""

    @functools.wraps(method)
    def mapped(*args: P.args, **kwargs: P.kwargs) -> T:
        cluster = [a for a in args[1:2] if isinstance(a, str)]  # the first argument, if a name
        with kazoo_errors(" ".join([method.__name__, *cluster])):
            return method(*args, **kwargs)

    return mapped
