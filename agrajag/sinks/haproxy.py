"""The HAProxy sink: rewrite haproxy.cfg, switch servers at runtime or reload, cut old sessions.

YAML (one item of `sinks:` in watch.yaml)::

    - type: haproxy
      name: haproxy
      template: /etc/agrajag/haproxy.cfg.j2     # renders the whole haproxy.cfg
      dest: /etc/haproxy/haproxy.cfg
      stats_socket: /run/haproxy/admin.sock     # `stats socket ... level admin`
      master_socket: /run/haproxy-master.sock   # haproxy -W -S <this> (Debian: EXTRAOPTS)
      haproxy_bin: /usr/sbin/haproxy            # optional; checks with `haproxy -c -f STAGED`
      clusters: [main]                          # optional; default: every cluster followed
      params: {}                                # optional; free values for the template
      mode: 0644                                # optional; default: keep dest's mode
      timeout_s: 10                             # optional; bounds the check, sockets, reload

Naming: the template names things; the sink reads the rendered `server` lines of `backend`
and `listen` sections and compares them by (proxy, server) name with the running file. The
shipped template gives each cluster `listen <cluster>` with one `server primary`. Keep the
names stable and put nothing that changes with the master outside the server's address.

Apply:
- Only server addresses changed, to IP literals: `set server P/S addr IP port N` through the
  stats socket; no reload.
- Anything else (new cluster, a host name, another directive): reload through the master
  socket, then wait until a new worker runs and every previous worker is soft-stopping.
- Either way, sessions still held to a server whose address changed (or that is gone) are
  cut in every worker, old ones included: `show sess` then `shutdown session ID` through the
  master CLI's `@!<pid>` prefix. (`shutdown sessions server` answers "Proxy is disabled" in
  a soft-stopping worker, and a reload's old worker keeps its sessions; verified on 2.6.)
- HAProxy restores addresses from `server-state-file` over the config's (verified on 2.6):
  when the global section names one, the sink rewrites it from `show servers state` before
  every reload, leaving out the servers whose address changes, so the new config wins; and
  after every runtime switch, so that a reload by anyone else agrees too.
- Once HAProxy routes by the new file (the switch or the reload succeeded), a failing later
  step (the state file, the cut) keeps the new file; the retry reads `show servers state`
  and leaves a server already at its new address alone: its sessions are to the new primary.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from agrajag.atomic import replace_file
from agrajag.config import Problems
from agrajag.sinks.base import (
    COMMON_KEYS,
    ApplyResult,
    FileSettings,
    FileSink,
    existing_file,
    file_settings,
    path,
    section,
    wait_for,
)
from agrajag.sinks.haproxy_plan import (
    Address,
    ConfigShape,
    Processes,
    ServerKey,
    at_target,
    plan_change,
    runtime_servers,
    sessions_to,
    without_servers,
)

#: One CLI exchange: (socket path, command line) -> the whole answer. Tests pass a function.
Cli = Callable[[Path, str], str]

_ADDRESS_SET = re.compile(r"^(IP changed from|no need to change the addr)")
_NO_PID = "Can't find the target PID"  # the worker has exited
_NOT_THERE = ("No such session", _NO_PID)
_SHUTDOWNS_PER_LINE = 50
_EMPTY_STATE = b"1\n"  # `show servers state` format version 1, no server


def unix_command(path: Path, command: str, timeout: float) -> str:
    """Send one command line to an HAProxy CLI socket and read the whole answer. The master
    CLI answers only once the client has shut down its writing side."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Settings:
    files: FileSettings
    stats_socket: Path
    master_socket: Path
    haproxy_bin: Path = Path("/usr/sbin/haproxy")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> Settings:
        s = section(data, source)
        p = Problems()
        known = {*COMMON_KEYS, "template", "stats_socket", "master_socket", "haproxy_bin"}
        p.read(lambda: s.reject_unknown(known))
        settings = cls(
            files=p.read(lambda: file_settings(s, "template")),
            stats_socket=p.read(lambda: path(s, "stats_socket")),
            master_socket=p.read(lambda: path(s, "master_socket")),
            haproxy_bin=p.read(lambda: existing_file(s, "haproxy_bin", "/usr/sbin/haproxy")),
        )
        p.raise_any()
        return settings


class HAProxySink(FileSink):
    def __init__(self, settings: Settings, cli: Cli | None = None) -> None:
        super().__init__(settings.files)
        self.settings = settings
        self.cli = cli or partial(unix_command, timeout=settings.files.timeout_s)
        # The text the running worker was started on, if nothing moved at runtime since.
        self._reloaded_to: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> HAProxySink:
        return cls(Settings.from_mapping(data, source))

    def check(self, staged_path: Path, text: str) -> None:
        """`haproxy -c`, except when the file in place passed it and the new text differs
        only in server IP addresses and ports (a runtime switch): no such change can make
        the file invalid, and the check (a fork of haproxy, 30-200 ms here) would delay the
        switch on a failover's path."""
        state_file = ConfigShape.of(text).state_file
        if state_file is not None and not state_file.startswith("/"):
            raise self.error("check", f"server-state-file {state_file!r} is not absolute")
        try:
            running = self.files.dest.read_text()
        except OSError:
            running = None
        if running is not None and plan_change(running, text).runtime:
            return
        argv = [str(self.settings.haproxy_bin), "-c", "-f", str(staged_path)]
        self.check_command(argv, staged_path)

    def prepare(self, text: str) -> None:
        """A missing server-state file makes HAProxy warn at every start: create one with
        the format's version line and no server."""
        state_file = ConfigShape.of(text).state_file
        if state_file is None or Path(state_file).exists():
            return
        try:
            replace_file(Path(state_file), _EMPTY_STATE)
        except OSError as exc:
            raise self.error("prepare", f"creating {state_file}: {exc}") from exc

    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        """Switch at runtime or reload; once HAProxy routes by the new file, a failing later
        step keeps it (`took_effect`) and the next try, seeing the servers already at their
        new addresses, finishes without cutting anything to them."""
        plan = plan_change(old_text, new_text)
        if plan.runtime:
            cut = self._switch(plan.moves)
            action = "runtime" if plan.moves else "written"
        else:
            if new_text != self._reloaded_to:  # else an earlier try reloaded, then failed
                self._save_state(new_text, forget=plan.cut)
                self._reload(new_text)
            cut, action = 0, "reload"
        with self.took_effect():
            if plan.runtime:
                self._save_state(new_text, forget=frozenset())
            # The running worker has only sessions to the new addresses: cut the old workers'.
            cut += self._cut_sessions(plan.cut, ConfigShape.of(new_text).servers)
        return ApplyResult(changed=True, action=action, cut_sessions=cut, detail=plan.describe())

    def rollback(self, old_text: str | None, new_text: str) -> None:
        """Reload the restored file, its addresses winning over the state file's."""
        if old_text is not None:
            self._save_state(old_text, forget=plan_change(new_text, old_text).cut)
            self._reload(old_text)

    def _call(self, sock: Path, command: str, step: str) -> str:
        try:
            return self.cli(sock, command)
        except OSError as exc:
            raise self.error(step, f"{command!r} on {sock}: {exc}") from exc

    def _switch(self, moves: Mapping[ServerKey, Address]) -> int:
        """Move servers to their new addresses in the running worker, cutting the sessions
        to the old ones; returns how many sessions were listed there just before.

        One CLI line per server, in this order: no new session may reach the old address
        once its sessions are cut (maint), and none to the new address is cut. The old
        primary's server may be DOWN by its health check: `health up` lets the new address
        take clients at once instead of after the checks rise (they go on checking it).
        A server already at its new address (an earlier try switched it) is only made
        ready: its sessions are to the new primary.
        """
        listing = self._call(self.settings.stats_socket, "show sess", "runtime")
        state = self._call(self.settings.stats_socket, "show servers state", "runtime")
        running = runtime_servers(state)
        cut, switched = 0, False
        for (proxy, server), address in sorted(moves.items()):
            target = f"set server {proxy}/{server}"
            if at_target(running, (proxy, server), moves):
                if not running[(proxy, server)].ready:
                    self._expect(f"{target} health up; {target} state ready", "", switched)
                continue
            cut += len(sessions_to(listing, frozenset({(proxy, server)})))
            command = "; ".join([
                f"{target} state maint",
                f"shutdown sessions server {proxy}/{server}",
                f"{target} addr {address.host} port {address.port}",
                f"{target} health up",
                f"{target} state ready",
            ])  # fmt: skip
            self._reloaded_to = None  # the running worker no longer matches a file
            self._expect(command, _ADDRESS_SET, switched)
            switched = True
        return cut

    def _expect(self, command: str, answer: re.Pattern[str] | str, took_effect: bool) -> None:
        """Send a runtime command line; raise unless its answer is one line matching `answer`
        (a pattern, or exactly this text)."""
        got = self._call(self.settings.stats_socket, command, "runtime").strip()
        ok = answer.match(got) if isinstance(answer, re.Pattern) else got == answer
        if not ok or "\n" in got:
            raise self.error("runtime", f"{command!r}: {got!r}", took_effect=took_effect)

    def _save_state(self, config_text: str, forget: frozenset[ServerKey]) -> None:
        """Rewrite the config's server-state-file from the running worker, minus `forget`."""
        state_file = ConfigShape.of(config_text).state_file
        if state_file is None:
            return
        state = self._call(self.settings.stats_socket, "show servers state", "reload")
        try:
            replace_file(Path(state_file), without_servers(state, forget).encode())
        except OSError as exc:
            raise self.error("reload", f"writing {state_file}: {exc}") from exc

    def _processes(self, step: str) -> Processes:
        return Processes.parse(self._call(self.settings.master_socket, "show proc", step))

    def _reload(self, text: str) -> None:
        """Reload HAProxy on the file holding `text`, remembered once a new worker runs."""
        before = self._processes("reload")
        self._reloaded_to = None
        self._call(self.settings.master_socket, "reload", "reload")
        timeout = self.files.timeout_s
        if wait_for(lambda: self._reloaded(before), timeout) is None:
            raise self.error("reload", f"no new worker ready within {timeout:g} s")
        self._reloaded_to = text

    def _reloaded(self, before: Processes) -> bool | None:
        """True once a new worker runs and the previous ones stopped accepting; raises when
        the master counts a failed reload (HAProxy keeps the previous workers then)."""
        now = Processes.parse(self.cli(self.settings.master_socket, "show proc"))
        if now.failed_reloads > before.failed_reloads:
            raise self.error("reload", "HAProxy refused the configuration (see its log)")
        if not now.workers - before.workers:
            return None
        return all(self._stopping(pid) for pid in before.workers) or None

    def _stopping(self, pid: int) -> bool:
        answer = self.cli(self.settings.master_socket, f"@!{pid} show info")
        return "Stopping: 1" in answer or answer.startswith(_NO_PID)

    def _cut_sessions(
        self, servers: frozenset[ServerKey], targets: Mapping[ServerKey, Address]
    ) -> int:
        """End every session to `servers` in the old workers (still draining after a reload,
        on the old configuration); how many were cut. A worker that already has a server at
        its new address (`targets`; a reload by an earlier try) keeps that server's
        sessions: they go to the new primary."""
        if not servers:
            return 0
        processes = self._processes("cut")
        cut = 0
        for pid in sorted(processes.old_workers):
            state = self._call(self.settings.master_socket, f"@!{pid} show servers state", "cut")
            running = runtime_servers(state)
            moved = frozenset(key for key in servers if not at_target(running, key, targets))
            listing = self._call(self.settings.master_socket, f"@!{pid} show sess", "cut")
            cut += self._shutdown(pid, sessions_to(listing, moved))
        return cut

    def _shutdown(self, pid: int, sessions: Sequence[str]) -> int:
        cut = 0
        for start in range(0, len(sessions), _SHUTDOWNS_PER_LINE):
            batch = sessions[start : start + _SHUTDOWNS_PER_LINE]
            line = "; ".join(f"@!{pid} shutdown session {sid}" for sid in batch)
            answer = self._call(self.settings.master_socket, line, "cut").splitlines()
            unexpected = [a for a in answer if a.strip() and not a.startswith(_NOT_THERE)]
            if unexpected:
                raise self.error("cut", f"worker {pid}: {unexpected[0]!r}")
            cut += len(batch) - sum(a.startswith(_NOT_THERE) for a in answer)
        return cut
