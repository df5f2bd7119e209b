"""What the HAProxy sink decides from text, as pure functions of values: what a config change
needs (a runtime switch of addresses, or a reload), which sessions and servers a step must
touch, what the runtime API says the servers are at. The sink (`haproxy`) does the I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

ServerKey = tuple[str, str]

_SECTIONS = frozenset(
    {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist"}
    | {"mailers", "program", "http-errors", "ring", "cache", "fcgi-app"}
)
_PROXIES = frozenset({"backend", "listen"})
_CLI_NAME = re.compile(r"[A-Za-z0-9_.:-]+")  # fullmatch: words sent on a CLI line
_SESSION = re.compile(r"^(0x[0-9a-f]+): .*? be=(\S+) srv=(\S+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Address:
    """A server's `host:port` (`[v6]:port` too); port None when the config gives none."""

    host: str
    port: int | None

    @classmethod
    def parse(cls, token: str) -> Address:
        """
        >>> Address.parse("10.0.0.1:5432"), Address.parse("[::1]:5432")
        (Address(host='10.0.0.1', port=5432), Address(host='::1', port=5432))
        >>> Address.parse("db1")
        Address(host='db1', port=None)
        """
        host, colon, port = token.rpartition(":")
        if not colon or not host or not port.isdigit():
            return cls(token, None)
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    def same(self, other: Address) -> bool:
        """The same endpoint, however an IP address is spelled (HAProxy prints its own way)."""
        return self.port == other.port and _ip_or_name(self.host) == _ip_or_name(other.host)

    def settable_at_runtime(self) -> bool:
        """`set server ... addr` takes an IP address, not a name to resolve."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return self.port is not None


def _ip_or_name(host: str) -> object:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host


@dataclass(frozen=True, slots=True)
class ConfigShape:
    """A rendered haproxy.cfg as the sink compares it: its directives with server addresses
    masked (comments and spacing dropped), the servers' addresses, and the state file."""

    lines: tuple[tuple[str, ...], ...]
    servers: Mapping[ServerKey, Address]
    state_file: str | None

    @classmethod
    def of(cls, text: str) -> ConfigShape:
        lines: list[tuple[str, ...]] = []
        servers: dict[ServerKey, Address] = {}
        globals_: dict[str, str] = {}
        section, proxy = "", None
        for words in _directives(text):
            if words[0] in _SECTIONS:
                section = words[0]
                proxy = words[1] if section in _PROXIES and len(words) > 1 else None
            elif proxy is not None and words[0] == "server" and len(words) >= 3:
                servers[(proxy, words[1])] = Address.parse(words[2])
                words = (*words[:2], "<address>", *words[3:])
            elif section == "global" and len(words) > 1:
                globals_[words[0]] = words[1].strip("\"'")
            lines.append(words)
        return cls(tuple(lines), servers, _state_file(globals_))


def _directives(text: str) -> Iterator[tuple[str, ...]]:
    """The words of each line up to a comment (a word starting with # before any quote)."""
    for line in text.splitlines():
        words: list[str] = []
        for word in line.split():
            if word.startswith("#") and not any(q in w for w in words for q in "\"'"):
                break
            words.append(word)
        if words:
            yield tuple(words)


def _state_file(globals_: Mapping[str, str]) -> str | None:
    name = globals_.get("server-state-file")
    if name is None or name.startswith("/"):
        return name
    base = globals_.get("server-state-base")
    return f"{base.rstrip('/')}/{name}" if base else name


@dataclass(frozen=True, slots=True)
class Plan:
    """What a change of file asks of HAProxy: `runtime` when `moves` (servers whose address
    changed) can be applied without a reload; `cut`: servers whose sessions must end."""

    runtime: bool
    moves: Mapping[ServerKey, Address]
    cut: frozenset[ServerKey]

    def describe(self) -> str:
        return ", ".join(
            f"{p}/{s} -> {a.host}:{a.port}" for (p, s), a in sorted(self.moves.items())
        )


def plan_change(old_text: str | None, new_text: str) -> Plan:
    """Compare the running file with the new one (see the module docstring for the rules)."""
    new = ConfigShape.of(new_text)
    if old_text is None:
        return Plan(runtime=False, moves={}, cut=frozenset())
    old = ConfigShape.of(old_text)
    moves = {k: a for k, a in new.servers.items() if k in old.servers and old.servers[k] != a}
    runtime = old.lines == new.lines and all(
        address.settable_at_runtime() and all(_CLI_NAME.fullmatch(n) for n in key)
        for key, address in moves.items()
    )
    return Plan(runtime, moves, frozenset(moves) | (old.servers.keys() - new.servers.keys()))


@dataclass(frozen=True, slots=True)
class Processes:
    """`show proc` on the master CLI: current and old worker pids, failed reloads so far."""

    workers: frozenset[int]
    old_workers: frozenset[int]
    failed_reloads: int

    @classmethod
    def parse(cls, text: str) -> Processes:
        found: dict[str, set[int]] = {"workers": set(), "old workers": set()}
        section, failed = "", 0
        for line in text.splitlines():
            words = line.split()
            if line.startswith("# "):
                section = line[2:].strip()
            elif len(words) > 1 and words[0].isdigit() and words[1] == "master":
                match = re.search(r"\[failed: (\d+)\]", line)
                failed = int(match[1]) if match else 0
            elif words and words[0].isdigit() and section in found:
                found[section].add(int(words[0]))
        return cls(frozenset(found["workers"]), frozenset(found["old workers"]), failed)


def sessions_to(show_sess: str, servers: frozenset[ServerKey]) -> list[str]:
    """The ids of the sessions in a `show sess` answer whose backend/server is in `servers`."""
    return [m[1] for m in _SESSION.finditer(show_sess) if (m[2], m[3]) in servers]


def without_servers(state: str, servers: frozenset[ServerKey]) -> str:
    """A `show servers state` answer without the lines of `servers` (be_name, srv_name)."""
    kept = [
        line
        for line in state.splitlines()
        if not (len(words := line.split()) > 3 and (words[1], words[3]) in servers)
    ]
    return "\n".join(kept) + "\n"


@dataclass(frozen=True, slots=True)
class RuntimeServer:
    """A server as the running worker has it: its address and whether it is ready (not in
    maintenance or drain by an administrator)."""

    address: Address
    ready: bool


def runtime_servers(state: str) -> dict[ServerKey, RuntimeServer]:
    """The servers of a `show servers state` answer, read by its header's column names.

    >>> runtime_servers("1\\n# be_id be_name srv_id srv_name srv_addr srv_op_state "
    ...                 "srv_admin_state srv_port\\n2 main 1 primary 10.0.0.2 2 0 5433\\n")
    {('main', 'primary'): RuntimeServer(address=Address(host='10.0.0.2', port=5433), ready=True)}
    """
    lines = state.splitlines()
    header = next((line[2:].split() for line in lines if line.startswith("# ")), [])
    servers = {}
    for line in lines:
        row = dict(zip(header, line.split(), strict=False))
        if line.startswith("#") or not {"be_name", "srv_name", "srv_addr"} <= row.keys():
            continue
        port = row.get("srv_port", "")
        address = Address(row["srv_addr"], int(port) if port.isdigit() else None)
        ready = row.get("srv_admin_state", "0") == "0"
        servers[(row["be_name"], row["srv_name"])] = RuntimeServer(address, ready)
    return servers


def at_target(
    running: Mapping[ServerKey, RuntimeServer], key: ServerKey, targets: Mapping[ServerKey, Address]
) -> bool:
    """True when the running server `key` is already at its target address."""
    return key in running and key in targets and running[key].address.same(targets[key])
