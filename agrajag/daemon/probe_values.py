"""The INSERT check's values: what to check, with which credentials, and each node's answer.

Apart from `probe` (which holds psycopg) so that the publishing rules take a round without
loading a PostgreSQL driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    """How one node answered the write. Stable: the daemon logs, counts and publishes these."""

    WRITABLE = "writable"
    READ_ONLY = "read_only"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One node to check; the daemon builds these from the repmgr view."""

    name: str
    host: str
    port: int
    dbname: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the check logs in: from agrajag's config, never from the registry.

    With no password, libpq's passfile (or PGPASSFILE, ~/.pgpass) or service file may supply
    one. The password stays out of repr() so that logging a value never leaks it.

    >>> Credentials("agrajag", password="s3cret")
    Credentials(user='agrajag', passfile=None, sslmode=None)
    """

    user: str
    password: str | None = field(default=None, repr=False)
    passfile: str | None = None
    sslmode: str | None = None


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """One node's answer; `detail` is the server's message or the reason, empty when writable."""

    name: str
    outcome: Outcome
    latency_s: float
    detail: str
    timeline: int | None = None  # the timeline a writable node writes on


@dataclass(frozen=True, slots=True)
class ProbeRound:
    """Every node's answer to one round, in the order of the targets.

    >>> ok = NodeCheck("node1", Outcome.WRITABLE, 0.004, "")
    >>> ro = NodeCheck("node2", Outcome.READ_ONLY, 0.003, "cannot execute INSERT ...")
    >>> ProbeRound((ok, ro)).writable, ProbeRound((ok, ro)).split_brain
    (('node1',), False)
    >>> ProbeRound((ok, NodeCheck("node2", Outcome.WRITABLE, 0.005, ""))).split_brain
    True
    """

    checks: tuple[NodeCheck, ...]

    @property
    def writable(self) -> tuple[str, ...]:
        """The names of the nodes that committed the write."""
        return tuple(check.name for check in self.checks if check.outcome is Outcome.WRITABLE)

    @property
    def split_brain(self) -> bool:
        """More than one node accepts writes: never publish, raise the alarm."""
        return len(self.writable) > 1

    def by_name(self, name: str) -> NodeCheck | None:
        return next((check for check in self.checks if check.name == name), None)
