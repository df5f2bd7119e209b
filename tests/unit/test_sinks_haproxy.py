"""The HAProxy sink's decisions as pure functions, and its CLI dialogue against a fake that
answers like HAProxy 2.6 (the answers below were copied from a real one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agrajag.record import MasterRecord
from agrajag.sinks.base import FileSettings, SinkError
from agrajag.sinks.haproxy import HAProxySink, Settings
from agrajag.sinks.haproxy_plan import (
    Address,
    ConfigShape,
    Processes,
    plan_change,
    sessions_to,
    without_servers,
)
from tools.harness.shipped import CONF_D

CONFIG = """\
global
    stats socket /run/admin.sock level admin
    server-state-file /var/lib/haproxy/state
defaults
    mode tcp
listen main
    bind :5000
    # node1
    server primary 10.0.0.1:5432 check
listen other
    bind :5001
    server primary 10.0.1.1:5432 check
"""

SHOW_PROC = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
11669           master          1 [failed: 2]   0d00h00m07s     2.6.12-1+deb12u4
# workers
11920           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
11672           worker          1               0d00h00m07s     2.6.12-1+deb12u4
# programs

"""

SHOW_SESS = (
    "0x56233ef0b340: proto=tcpv4 src=127.0.0.1:41930 fe=main be=main srv=primary ts=00 "
    "epoch=0 age=16s calls=3 rate=0 cpu=0 lat=0 rq[f=848202h,i=0,an=00h,rx=59m59s,wx=,ax=] "
    "scf=[8,0h,fd=14] scb=[8,1h,fd=15] exp=59m45s rc=0 c_exp=\n"
    "0x56233ef0c000: proto=tcpv4 src=127.0.0.1:41932 fe=other be=other srv=primary ts=00\n"
    "0x7f68d403f300: proto=sockpair src=unix:2 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0\n"
)

STATE_HEADER = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
STATE_HEADER_PORT = STATE_HEADER.replace("admin_state", "admin_state srv_port")


def moved(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_address_only_change_to_an_ip_is_a_runtime_change() -> None:
    plan = plan_change(CONFIG, moved(CONFIG, "10.0.0.1:5432", "10.0.0.2:5433"))
    assert plan.runtime
    assert dict(plan.moves) == {("main", "primary"): Address("10.0.0.2", 5433)}
    assert plan.cut == {("main", "primary")}
    assert plan.describe() == "main/primary -> 10.0.0.2:5433"


def test_comments_and_spacing_do_not_force_a_reload() -> None:
    plan = plan_change(CONFIG, moved(CONFIG, "# node1", "# node2 epoch 7").replace("    ", "\t"))
    assert plan.runtime
    assert not plan.moves


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("10.0.0.1:5432", "db2.example.com:5432"),  # a name: `set server addr` takes IPs only
        ("10.0.0.1:5432 check", "10.0.0.2:5432 check inter 1s"),  # another server option
        ("bind :5000", "bind :6000"),
        ("mode tcp", "mode tcp\n    timeout connect 2s"),
    ],
)
def test_any_other_change_needs_a_reload(old: str, new: str) -> None:
    assert not plan_change(CONFIG, moved(CONFIG, old, new)).runtime


def test_a_removed_server_is_cut_and_a_new_one_is_not() -> None:
    without_other = CONFIG.split("listen other")[0]
    removed = plan_change(CONFIG, without_other)
    assert (removed.runtime, removed.cut) == (False, frozenset({("other", "primary")}))
    added = plan_change(without_other, CONFIG)
    assert (added.runtime, added.cut, dict(added.moves)) == (False, frozenset(), {})


def test_no_running_file_means_a_reload() -> None:
    assert plan_change(None, CONFIG).runtime is False


def test_state_file_is_read_from_the_global_section() -> None:
    assert ConfigShape.of(CONFIG).state_file == "/var/lib/haproxy/state"
    based = moved(
        CONFIG,
        "server-state-file /var/lib/haproxy/state",
        "server-state-base /s/\n    server-state-file st",
    )
    assert ConfigShape.of(based).state_file == "/s/st"
    assert ConfigShape.of("global\n    maxconn 10\n").state_file is None


def test_show_proc_is_parsed() -> None:
    assert Processes.parse(SHOW_PROC) == Processes(frozenset({11920}), frozenset({11672}), 2)


def test_sessions_are_picked_by_backend_and_server() -> None:
    assert sessions_to(SHOW_SESS, frozenset({("main", "primary")})) == ["0x56233ef0b340"]
    assert sessions_to(SHOW_SESS, frozenset()) == []


def test_state_without_the_moved_servers() -> None:
    state = STATE_HEADER + "2 main 1 primary 10.0.0.1 2 0\n3 other 1 primary 10.0.1.1 2 0\n"
    assert without_servers(state, frozenset({("main", "primary")})) == (
        STATE_HEADER + "3 other 1 primary 10.0.1.1 2 0\n"
    )


class FakeHAProxy:
    """The stats and master CLIs of a master-worker HAProxy 2.6, as far as the sink uses them.

    `sessions` maps a worker pid to {session id: (backend, server)}.
    """

    def __init__(self) -> None:
        self.current = 100
        self.sessions: dict[int, dict[str, tuple[str, str]]] = {100: {}}
        self.stopping: set[int] = set()
        self.failed = 0
        self.refuse_reloads = False
        self.addresses: dict[tuple[str, str], str] = {}
        self.replaced: dict[int, dict[tuple[str, str], str]] = {}
        self.sent: list[str] = []

    def __call__(self, path: Path, line: str) -> str:
        self.sent.append(line)
        return "".join(self.answer(command.strip()) for command in line.split(";"))

    def answer(self, command: str) -> str:
        if command.startswith("@!"):
            prefix, _, command = command.partition(" ")
            return self.worker(int(prefix[2:]), command)
        words = command.split()
        if words[:2] == ["set", "server"] and words[3] in ("health", "state"):
            return ""
        if command == "show sess":  # the stats socket talks to the current worker
            return self.worker(self.current, command)
        if words[:3] == ["shutdown", "sessions", "server"]:
            backend, server = words[3].split("/")
            current = self.sessions[self.current]
            for sid in [i for i, target in current.items() if target == (backend, server)]:
                del current[sid]
            return ""
        if words[:2] == ["set", "server"]:
            self.addresses[tuple(words[2].split("/"))] = f"{words[4]}:{words[6]}"  # type: ignore[index]
            return f"IP changed from '10.0.0.1' to '{words[4]}' by 'stats socket command'\n"
        if command == "show servers state":
            return self.servers_state(self.current)
        if command == "show proc":
            return self.show_proc()
        if command == "reload":
            self.reload()
            return ""
        raise AssertionError(f"unexpected command {command!r}")

    def worker(self, pid: int, command: str) -> str:
        if pid not in self.sessions:
            return f"Can't find the target PID matching the prefix '@!{pid}'\n"
        sessions = self.sessions[pid]
        if command == "show info":
            return f"Pid: {pid}\nStopping: {int(pid in self.stopping)}\n"
        if command == "show servers state":
            return self.servers_state(pid)
        if command == "show sess":
            return "".join(
                f"{i}: proto=tcpv4 fe={b} be={b} srv={s} ts=00\n" for i, (b, s) in sessions.items()
            )
        if command.startswith("shutdown session "):
            return (
                ""
                if sessions.pop(command.split()[2], None)
                else "No such session (use 'show sess').\n"
            )
        raise AssertionError(f"unexpected command {command!r} for worker {pid}")

    def servers_state(self, pid: int) -> str:
        """A worker's servers: the current one has `addresses`, an old one what it had when
        it was replaced."""
        addresses = self.addresses if pid == self.current else self.replaced.get(pid, {})
        rows = [f"2 {b} 1 {s} {a.replace(':', ' 2 0 ')}" for (b, s), a in sorted(addresses.items())]
        return STATE_HEADER_PORT + "".join(row + "\n" for row in rows)

    def show_proc(self) -> str:
        old = [pid for pid in self.sessions if pid != self.current]
        return (
            "#<PID> <type> <reloads> <uptime> <version>\n"
            f"1 master 3 [failed: {self.failed}] 0d00h00m07s 2.6.12\n"
            f"# workers\n{self.current} worker 0 0d 2.6.12\n"
            "# old workers\n" + "".join(f"{pid} worker 1 0d 2.6.12\n" for pid in old)
        )

    def reload(self) -> None:
        if self.refuse_reloads:
            self.failed += 1
            return
        self.stopping.add(self.current)
        self.replaced[self.current] = dict(self.addresses)
        self.current += 1
        self.sessions[self.current] = {}


def master(node_id: int, host: str, port: int = 5432) -> MasterRecord:
    return MasterRecord("main", node_id, node_id, f"node{node_id}", host, port, 1, "n", "t", {})


@pytest.fixture
def fake() -> FakeHAProxy:
    return FakeHAProxy()


@pytest.fixture
def sink(tmp_path: Path, fake: FakeHAProxy) -> HAProxySink:
    return make_sink(tmp_path, fake)


def make_sink(tmp_path: Path, fake: FakeHAProxy) -> HAProxySink:
    """The shipped template, its state file in tmp_path; `true` stands in for `haproxy -c`."""
    files = FileSettings(
        name="haproxy",
        template=CONF_D / "haproxy.cfg.j2",
        dest=tmp_path / "haproxy.cfg",
        clusters=frozenset({"main"}),
        params={
            "stats_socket": str(tmp_path / "admin.sock"),
            "server_state_file": str(tmp_path / "server-state"),
            "bind": "127.0.0.1",
            "ports": {"main": 5000},
        },
        timeout_s=1,
    )
    settings = Settings(files, tmp_path / "admin.sock", tmp_path / "master.sock", Path("/bin/true"))
    return HAProxySink(settings, cli=fake)


def test_first_master_reloads_then_an_ip_move_is_a_runtime_switch_with_cuts(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    first = sink.apply({"main": master(1, "10.0.0.1")})
    assert (first.action, first.cut_sessions) == ("reload", 0)
    assert fake.current == 101
    fake.sessions[101] = {"0xa": ("main", "primary"), "0xb": ("other", "primary")}
    fake.sessions[100] = {"0xc": ("main", "primary")}  # an old worker, still draining
    fake.addresses[("main", "primary")] = "10.0.0.1:5432"
    fake.sent.clear()

    result = sink.apply({"main": master(2, "10.0.0.2", 5433)})

    assert (result.changed, result.action, result.cut_sessions) == (True, "runtime", 2)
    assert "reload" not in fake.sent
    assert fake.sent[2] == (  # cut before the switch; not left DOWN by the old checks
        "set server main/primary state maint; shutdown sessions server main/primary; "
        "set server main/primary addr 10.0.0.2 port 5433; set server main/primary health up; "
        "set server main/primary state ready"
    )
    assert fake.sessions == {100: {}, 101: {"0xb": ("other", "primary")}}
    assert "main 1 primary 10.0.0.2 2 0 5433" in (tmp_path / "server-state").read_text()
    assert "server primary 10.0.0.2:5433" in (tmp_path / "haproxy.cfg").read_text()


def test_a_runtime_switch_skips_haproxy_c_and_any_other_change_runs_it(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    sink.apply({"main": master(1, "10.0.0.1")})
    refusing = HAProxySink(replace(sink.settings, haproxy_bin=Path("/bin/false")), cli=fake)

    assert refusing.apply({"main": master(2, "10.0.0.2", 5433)}).action == "runtime"
    with pytest.raises(SinkError) as caught:
        refusing.apply({"main": master(3, "db3.example")})
    assert caught.value.step == "check"
    assert "server primary 10.0.0.2:5433" in (tmp_path / "haproxy.cfg").read_text()


def test_a_host_name_reloads_forgets_the_servers_state_and_cuts_the_old_worker(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    sink.apply({"main": master(1, "10.0.0.1")})
    fake.addresses[("main", "primary")] = "10.0.0.1:5432"
    fake.addresses[("main", "other")] = "10.0.0.9:5432"
    fake.sessions[101] = {"0xa": ("main", "primary")}

    result = sink.apply({"main": master(2, "db2.example.com")})

    assert (result.action, result.cut_sessions) == ("reload", 1)
    assert fake.current == 102
    state = (tmp_path / "server-state").read_text()
    assert "main 1 primary" not in state  # the config's new address must win over the state's
    assert "main 1 other" in state


def test_refused_reload_restores_the_file_and_reloads_it(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    sink.apply({"main": master(1, "10.0.0.1")})
    old = (tmp_path / "haproxy.cfg").read_bytes()
    fake.refuse_reloads = True
    fake.sent.clear()

    with pytest.raises(SinkError, match="refused the configuration") as caught:
        sink.apply({"main": master(2, "db2.example.com")})

    assert caught.value.step == "reload"
    assert "then restoring the old configuration failed" in str(caught.value)  # refused again
    assert (tmp_path / "haproxy.cfg").read_bytes() == old
    assert fake.sent.count("reload") == 2


def test_a_failed_cut_after_a_reload_keeps_the_new_file_and_the_next_try_finishes(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    """Reloading back to the old file would route new clients to the former primary."""
    sink.apply({"main": master(1, "10.0.0.1")})
    fake.sessions[100] = {"0xa": ("main", "primary")}  # an old worker, still draining
    answer = fake.worker
    fake.worker = lambda pid, command: (  # type: ignore[method-assign]
        "Permission denied.\n" if command.startswith("shutdown") else answer(pid, command)
    )
    fake.sent.clear()

    with pytest.raises(SinkError, match="Permission denied") as caught:
        sink.apply({"main": master(2, "db2.example.com")})

    assert (caught.value.step, caught.value.took_effect) == ("cut", True)
    assert "db2.example.com" in (tmp_path / "haproxy.cfg").read_text()
    assert fake.sent.count("reload") == 1
    fake.worker = answer  # type: ignore[method-assign]

    again = sink.apply({"main": master(2, "db2.example.com")})

    assert (again.changed, again.cut_sessions) == (True, 1)
    assert fake.sessions[100] == {}
    assert fake.sent.count("reload") == 1  # HAProxy already runs it: no second reload


def test_a_runtime_switch_then_a_failing_state_file_is_finished_without_cutting_anew(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    sink.apply({"main": master(1, "10.0.0.1")})
    fake.addresses[("main", "primary")] = "10.0.0.1:5432"
    state_file = tmp_path / "server-state"
    state_file.unlink()
    state_file.mkdir()  # cannot be replaced by a file

    with pytest.raises(SinkError, match="server-state") as caught:
        sink.apply({"main": master(2, "10.0.0.2")})

    assert caught.value.took_effect
    assert fake.addresses[("main", "primary")] == "10.0.0.2:5432"
    assert "server primary 10.0.0.2:5432" in (tmp_path / "haproxy.cfg").read_text()
    fake.sessions[101] = {"0xb": ("main", "primary")}  # a client of the new primary
    state_file.rmdir()
    fake.sent.clear()

    again = sink.apply({"main": master(2, "10.0.0.2")})

    assert (again.changed, again.action, again.cut_sessions) == (True, "runtime", 0)
    assert not [line for line in fake.sent if "shutdown" in line or "maint" in line]
    assert fake.sessions[101] == {"0xb": ("main", "primary")}
    assert "main 1 primary 10.0.0.2 2 0 5432" in state_file.read_text()
    assert sink.apply({"main": master(2, "10.0.0.2")}).action == "unchanged"


def test_unreachable_master_socket_is_a_reload_error(tmp_path: Path, sink: HAProxySink) -> None:
    def refused(path: Path, command: str) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    sink.cli = refused
    with pytest.raises(SinkError, match="Connection refused") as caught:
        sink.apply({"main": master(1, "10.0.0.1")})
    assert caught.value.step == "reload"
    assert not (tmp_path / "haproxy.cfg").exists()


def test_render_only_creates_the_server_state_file_haproxy_expects(
    sink: HAProxySink, fake: FakeHAProxy, tmp_path: Path
) -> None:
    assert sink.render_only({"main": master(1, "10.0.0.1")}).startswith("wrote ")
    assert (tmp_path / "server-state").read_text() == "1\n"
    assert fake.sent == []  # nothing activated


@pytest.mark.parametrize(("old_worker_at", "cut"), [("10.0.0.2:5432", 0), ("10.0.0.1:5432", 1)])
def test_a_restarted_watcher_finishing_a_switch_spares_old_workers_already_at_the_new_address(
    tmp_path: Path, fake: FakeHAProxy, old_worker_at: str, cut: int
) -> None:
    """A watcher killed after HAProxy took epoch 2 finishes on restart; an old worker whose
    server is already at the new address holds clients of the new primary: not cut."""
    first = make_sink(tmp_path, fake)
    first.apply({"main": master(1, "10.0.0.1")})
    (tmp_path / "haproxy.cfg").write_text(first.render({"main": master(2, "10.0.0.2")}))
    fake.addresses[("main", "primary")] = "10.0.0.2:5432"
    fake.replaced[100] = {("main", "primary"): old_worker_at}
    fake.sessions[100] = {"0xa": ("main", "primary")}
    fake.sent.clear()

    restarted = make_sink(tmp_path, fake)
    restarted.resume({"main": master(1, "10.0.0.1")})
    result = restarted.apply({"main": master(2, "10.0.0.2")})

    assert (result.changed, result.cut_sessions) == (True, cut)
    assert len(fake.sessions[100]) == 1 - cut
    assert not [line for line in fake.sent if "maint" in line]  # the switch was not redone
