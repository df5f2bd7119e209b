"""Simulated hosts on a private network: one network namespace per host, all on one bridge,
with links that can be cut and healed, one way or both.

The bridge lives in a namespace of its own ("switch"), so the machine's own namespace has no
interface on the network and no route to it: nothing sent here can leave the machine. Each
host gets a veth pair (`eth0` inside, `v-<host>` on the bridge), an address in
`10.250.0.0/24` and its own loopback. A cut drops packets silently (as a broken link does, so
TCP waits out its timeouts rather than seeing a refusal) with an nftables set in the
receiving host's input chain: `cut(a, b)` stops everything a sends to b and b to a;
`cut(a, b, one_way=True)` only what a sends to b.

Processes run on a host through `Topology.host(name)`, a `procs.Host` whose command prefix is
`ip netns exec <ns>` (then `setpriv` to the service user). The test process itself reaches
the network from a thread that entered a namespace (`Topology.entered`): network namespaces
are per thread, and threads and sockets created there stay there. The `observer` host is never
cut: the harness watches the system from it.

Needs root (namespaces, nftables). `Topology.destroy` kills whatever still runs in the
namespaces and deletes them; namespaces left by a run that died are removed by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Iterable, Iterator, Sequence

import psutil

from tools.harness.procs import SERVICE_USER, Host

SUBNET = "10.250.0"
NETWORK = f"{SUBNET}.0/24"
OBSERVER = "observer"
#: Every namespace of this harness starts with this, then the creating process's id.
PREFIX = "agf"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

RULESET = """
table inet faults {
    set cut { type ipv4_addr; }
    chain input { type filter hook input priority 0; policy accept; ip saddr @cut drop; }
}
"""


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be set up."""


def _run(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _kill_inside(ns: str) -> None:
    """SIGKILL whatever still runs in `ns` (only this harness starts processes there)."""
    pids = _run("ip", "netns", "pids", ns).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)


def remove_stale() -> list[str]:
    """Delete the namespaces of harness runs whose process is gone; return their names."""
    stale = []
    for ns in namespaces():
        parts = ns.split("-")
        if parts[0] != PREFIX or len(parts) < 3 or not parts[1].isdigit():
            continue
        if psutil.pid_exists(int(parts[1])):
            continue
        _kill_inside(ns)
        _run("ip", "netns", "del", ns)
        stale.append(ns)
    return stale


class Topology:
    """Hosts `names` (plus `observer`) on one bridge; see the module's docstring."""

    def __init__(self, names: Sequence[str]) -> None:
        if OBSERVER in names or len(set(names)) != len(names):
            raise ValueError(f"host names must be distinct and not {OBSERVER!r}: {names}")
        self.names = [*names, OBSERVER]
        for name in self.names:
            if len(f"v-{name}") > 15:  # an interface name's limit
                raise ValueError(f"host name too long: {name!r}")
        self.tag = f"{PREFIX}-{os.getpid()}-{id(self) % 10_000}"
        self.switch = f"{self.tag}-switch"
        self.addresses = {name: f"{SUBNET}.{i}" for i, name in enumerate(self.names, start=1)}
        self.cuts: set[tuple[str, str]] = set()
        self.created: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def create(self) -> Topology:
        remove_stale()
        try:
            self._add_ns(self.switch)
            _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.switch, "link", "set", "br0", "up")
            for name in self.names:
                self._add_host(name)
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self.created.append(ns)

    def _add_host(self, name: str) -> None:
        ns, port = self.ns(name), f"v-{name}"
        self._add_ns(ns)
        _run("ip", "link", "add", port, "netns", self.switch, "type", "veth",
             "peer", "name", "eth0", "netns", ns)  # fmt: skip
        _run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=RULESET)

    def host(self, name: str) -> Host:
        """Where to run a process on host `name` (its address, its command prefixes)."""
        enter = ("ip", "netns", "exec", self.ns(name))
        become = (
            ("setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups")
            if SERVICE_USER
            else ()
        )
        return Host(self.addresses[name], NETWORK, prefix=enter, service_prefix=(*enter, *become))

    @contextlib.contextmanager
    def entered(self, name: str = OBSERVER) -> Iterator[None]:
        """Run the calling thread (and the threads and sockets it creates) on host `name`."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns(name)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)

    def cut(self, a: str | Iterable[str], b: str | Iterable[str], *, one_way: bool = False) -> None:
        """Drop every packet from the hosts `a` to the hosts `b` (and back unless `one_way`)."""
        pairs = {(s, d) for s in _names(a) for d in _names(b) if s != d}
        if not one_way:
            pairs |= {(d, s) for s, d in pairs}
        self._apply(pairs - self.cuts, "add")
        self.cuts |= pairs

    def isolate(self, name: str) -> None:
        """Cut `name` from every other host but the observer."""
        self.cut(name, [n for n in self.names if n not in (name, OBSERVER)])

    def heal(
        self, a: str | Iterable[str] | None = None, b: str | Iterable[str] | None = None
    ) -> None:
        """Restore the links between `a` and `b` both ways; every link when not given."""
        if a is None or b is None:
            pairs = set(self.cuts)
        else:
            pairs = {(s, d) for s in _names(a) for d in _names(b)}
            pairs |= {(d, s) for s, d in pairs}
        pairs &= self.cuts
        self._apply(pairs, "delete")
        self.cuts -= pairs

    def _apply(self, pairs: set[tuple[str, str]], verb: str) -> None:
        if OBSERVER in {n for pair in pairs for n in pair}:
            raise ValueError("the observer is never cut")
        for dst in sorted({d for _, d in pairs}):
            sources = sorted(self.addresses[s] for s, d in pairs if d == dst)
            _run("ip", "netns", "exec", self.ns(dst), "nft", verb, "element", "inet", "faults",
                 "cut", "{ " + ", ".join(sources) + " }")  # fmt: skip

    def destroy(self) -> None:
        """Kill what still runs on the hosts and delete every namespace (bridge included)."""
        errors = []
        for ns in reversed(self.created):
            try:
                _kill_inside(ns)
                _run("ip", "netns", "del", ns)
            except NetnsError as exc:
                errors.append(str(exc))
        self.created.clear()
        if errors:
            raise NetnsError("; ".join(errors))


def _names(hosts: str | Iterable[str]) -> list[str]:
    return [hosts] if isinstance(hosts, str) else list(hosts)
