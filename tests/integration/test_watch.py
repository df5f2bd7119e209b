"""`agrajag watch` as a real process against a real ZooKeeper; the test plays the daemon."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from agrajag.sinks.haproxy import HAProxySink
from agrajag.sinks.haproxy_plan import Processes
from tools.harness.injection import OTHER_PAYLOADS, PAYLOADS, render_raw
from tools.harness.procs import wait_until
from tools.harness.proxies import PGBOUNCER_ADMIN, HAProxy, PgBouncer
from tools.harness.records import master_record
from tools.harness.watch import (
    AGRAJAG,
    Backend,
    Publisher,
    WatchProc,
    example_sinks,
    greeting,
    still_open,
)
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(zk: ZkEnsemble) -> Iterator[Publisher]:
    pub = Publisher(zk.hosts)
    try:
        yield pub
    finally:
        pub.close()


def converged(
    watch: WatchProc, publisher: Publisher, epoch: int, node: int = 1, port: int = 5432
) -> bool:
    """The watcher routes to node `node` at `epoch` and has acknowledged that epoch."""
    routed = watch.routed_to() == (f"10.0.0.{node}", port, epoch)
    return routed and publisher.acked_epoch(watch.agent) == epoch


def test_a_record_is_rendered_and_acknowledged_and_sigterm_removes_the_ack(
    watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    publisher.write(master_record(epoch=1))
    watch = watchers()
    wait_until(lambda: converged(watch, publisher, 1), timeout=20, what="epoch 1")
    ack = publisher.ack("app1")
    assert ack is not None and ack.sinks == {"app-env": "written"}

    publisher.write(master_record(2, epoch=2, port=6432))
    wait_until(lambda: converged(watch, publisher, 2, 2, 6432), timeout=10, what="2")
    assert '"epoch": 2' in watch.state_file.read_text()

    watch.stop()
    assert watch.proc.popen is not None and watch.proc.popen.returncode == 0
    assert publisher.ack("app1") is None, "the ephemeral ack must go with the session"
    assert "stopped" in watch.output()


MALFORMED = [
    ("host with a control character", {"host": "db\x1b[2J"}),
    ("port 0", {"port": 0}),
    ("port 70000", {"port": 70000}),
    ("port as a string", {"port": "5432"}),
    ("missing host", {"host": None}),
    ("another cluster", {"cluster": "other"}),
]


def proxy_sinks(home: Path, haproxy: HAProxy, pgbouncer: PgBouncer) -> list[dict[str, Any]]:
    """conf.d's example sinks (HAProxy, PgBouncer, template) on these running proxies."""
    sinks = example_sinks(home)
    sinks["haproxy"].update(
        dest=str(haproxy.config),
        stats_socket=str(haproxy.stats_socket),
        master_socket=str(haproxy.master_socket),
    )
    sinks["haproxy"]["params"].update(
        stats_socket=str(haproxy.stats_socket),
        server_state_file=str(haproxy.dir / "server-state"),
        bind="127.0.0.1",
        ports={"main": haproxy.port},
    )
    sinks["pgbouncer"].update(
        dest=str(pgbouncer.databases),
        admin={"host": "127.0.0.1", "port": pgbouncer.port, "user": PGBOUNCER_ADMIN},
    )
    return list(sinks.values())


@pytest.fixture
def proxied(
    tmp_path: Path,
    haproxy: HAProxy,
    pgbouncer: PgBouncer,
    watchers: Callable[..., WatchProc],
    publisher: Publisher,
) -> Callable[..., WatchProc]:
    """Start HAProxy and PgBouncer routing to 127.0.0.1:`port`, publish that master at
    `epoch`, and start watcher app1 with conf.d's three example sinks on them; returns it
    once it has acknowledged the epoch."""

    def start(port: int, epoch: int = 1, **overrides: object) -> WatchProc:
        haproxy.write_config(port)
        haproxy.start()
        pgbouncer.write_config(f"app = host=127.0.0.1 port={port} dbname=app")
        pgbouncer.start()
        publisher.write(master_record(epoch=epoch, host="127.0.0.1", port=port))
        sinks = proxy_sinks(tmp_path / "app1", haproxy, pgbouncer)
        watch = watchers(sinks=sinks, **overrides)
        wait_until(lambda: publisher.acked_epoch("app1") == epoch, timeout=30, what="the ack")
        return watch

    return start


def test_injection_attempts_never_reach_haproxy_pgbouncer_or_the_env_file(
    haproxy: HAProxy,
    pgbouncer: PgBouncer,
    proxied: Callable[..., WatchProc],
    publisher: Publisher,
) -> None:
    backend = Backend("primary")
    try:
        watch = proxied(backend.port, epoch=5)
        files = (haproxy.config, pgbouncer.databases, watch.dest)

        def proxies() -> tuple[object, ...]:
            states = haproxy.server_states()
            servers = [(s["be_name"], s["srv_name"], s["srv_port"]) for s in states]
            return servers, pgbouncer.admin("SHOW DATABASES")

        before = [f.read_bytes() for f in files], proxies()
        good = json.loads(master_record(2, epoch=6, host="127.0.0.1", port=backend.port).to_json())
        attacks: list[tuple[str, bytes]] = [
            ("malformed JSON", json.dumps(good)[:-3].encode()),
            ("not an object", b'["main"]'),
            ("binary garbage", b"\xff\xfe\x00"),
            ("lower epoch", master_record(2, epoch=4).to_json()),
            ("same epoch, another master", master_record(2, epoch=5).to_json()),
        ]
        changes = [(what, {key: value}) for what, key, value in PAYLOADS + OTHER_PAYLOADS]
        for what, change in changes + MALFORMED:
            doc = {k: v for k, v in {**good, **change}.items() if v is not None}
            attacks.append((what, json.dumps(doc).encode()))

        for what, data in attacks:
            version = publisher.write(data)
            wait_until(
                lambda v=version: f"refused /agrajag/main/master (version {v})" in watch.output(),
                timeout=10,
                what=f"the refusal of {what}",
            )
            assert ([f.read_bytes() for f in files], proxies()) == before, what
        assert watch.proc.alive()
        assert publisher.acked_epoch("app1") == 5
        log = watch.output()
        for reason in ("invalid", "stale_epoch", "wrong_cluster"):
            assert f": {reason}: " in log
        assert "key 'host' must be a hostname or IP" in log

        publisher.write(json.dumps(good).encode())  # and a good record is still followed
        wait_until(lambda: publisher.acked_epoch("app1") == 6, timeout=10, what="epoch 6")

        # The control: one payload rendered without validation is taken by the real PgBouncer.
        _, key, value = next(p for p in PAYLOADS if p[0] == "CR LF and a database")
        pgbouncer.databases.write_text(render_raw("pgbouncer-databases.ini.j2", {key: value}))
        pgbouncer.admin("RELOAD")
        assert "evil" in {row[0] for row in pgbouncer.admin("SHOW DATABASES")}
    finally:
        backend.close()


def test_zookeeper_killed_then_restarted(
    zk: ZkEnsemble, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    server = zk.servers[0]
    publisher.write(master_record(epoch=1))
    watch = watchers()
    wait_until(lambda: converged(watch, publisher, 1), timeout=20, what="epoch 1")
    before = watch.dest.read_bytes()

    server.kill()
    wait_until(
        lambda: "ZooKeeper session suspended" in watch.output(), timeout=10, what="suspended"
    )
    time.sleep(2.5)  # a few reconcile intervals without ZooKeeper
    assert watch.proc.alive()
    assert watch.dest.read_bytes() == before

    server.start()
    server.wait_serving()
    publisher.write(master_record(2, epoch=2))
    wait_until(lambda: converged(watch, publisher, 2, 2), timeout=30, what="epoch 2")


def test_a_watcher_restarted_during_an_outage_renders_its_state_file(
    zk: ZkEnsemble, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    publisher.write(master_record(2, epoch=3))
    watch = watchers()
    wait_until(lambda: converged(watch, publisher, 3, 2), timeout=20, what="epoch 3")
    watch.stop()
    zk.servers[0].kill()
    watch.dest.unlink()

    watch.start()
    wait_until(
        lambda: watch.routed_to() == ("10.0.0.2", 5432, 3),
        timeout=10,
        what="the state file rendered",
    )
    assert watch.proc.alive()
    assert "state file: cluster main at epoch 3" in watch.output()


def test_two_watchers_acknowledge_the_same_epoch(
    watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    first, second = watchers("app1"), watchers("app2")
    publisher.write(master_record(3, epoch=7))
    for watch in (first, second):
        wait_until(lambda w=watch: converged(w, publisher, 7, 3), timeout=20, what="7")


def test_fail_closed_routes_nowhere_while_zookeeper_is_down(
    zk: ZkEnsemble, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    server = zk.servers[0]
    publisher.write(master_record(epoch=1))
    watch = watchers(fail_mode="closed", fail_closed_after_s=2, reconcile_interval_s=0.5)
    wait_until(lambda: converged(watch, publisher, 1), timeout=20, what="epoch 1")

    server.kill()
    wait_until(
        lambda: watch.dest.exists() and watch.routed_to() is None, timeout=10, what="no master"
    )
    assert '"epoch": 1' in watch.state_file.read_text(), "the state file keeps the last record"

    server.start()
    server.wait_serving()
    wait_until(lambda: converged(watch, publisher, 1), timeout=30, what="routing again")


def test_a_config_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "watch.yaml"
    config.write_text("clusters: [main]\n")
    done = subprocess.run(
        [AGRAJAG, "watch", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{config}: fail_mode: missing" in done.stderr


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True


def test_haproxy_and_pgbouncer_follow_a_failover_and_old_sessions_are_cut(
    haproxy: HAProxy,
    pgbouncer: PgBouncer,
    proxied: Callable[..., WatchProc],
    publisher: Publisher,
) -> None:
    old, new = Backend("old"), Backend("new")
    clients: list[socket.socket] = []
    try:
        watch = proxied(old.port)

        def routed_through_haproxy(name: str) -> bool:
            sock, greeted = greeting(haproxy.port)
            clients.append(sock)
            return greeted == name

        wait_until(lambda: routed_through_haproxy("old"), timeout=10, what="HAProxy to old")
        held = clients[-1]

        publisher.write(master_record(2, epoch=2, host="127.0.0.1", port=new.port))
        wait_until(lambda: publisher.acked_epoch("app1") == 2, timeout=30, what="epoch 2")
        ack = publisher.ack("app1")
        assert ack is not None and not any(r.startswith("failed") for r in ack.sinks.values())
        held.settimeout(10)
        assert closed_by_peer(held), "HAProxy must cut the session to the old primary"
        wait_until(lambda: routed_through_haproxy("new"), timeout=10, what="HAProxy to new")
        ports = {row[0]: row[2] for row in pgbouncer.admin("SHOW DATABASES")}
        assert ports["app"] == new.port and ports["reports"] == new.port
        assert watch.routed_to() == ("127.0.0.1", new.port, 2)
    finally:
        for sock in clients:
            sock.close()
        old.close()
        new.close()


def test_a_restart_during_an_outage_never_routes_haproxy_back(
    zk: ZkEnsemble,
    haproxy: HAProxy,
    pgbouncer: PgBouncer,
    proxied: Callable[..., WatchProc],
    publisher: Publisher,
) -> None:
    """The issue's sequence: epoch 2 reaches HAProxy while PgBouncer's admin console is
    down, so only HAProxy has it; the watcher restarts while ZooKeeper is down. HAProxy
    keeps routing to the new primary (a session to it survives), and PgBouncer catches up
    from the state file once it is back, still without ZooKeeper."""
    old, new = Backend("old"), Backend("new")
    held: list[socket.socket] = []
    try:
        watch = proxied(old.port)
        pgbouncer.stop()
        publisher.write(master_record(2, epoch=2, host="127.0.0.1", port=new.port))
        wait_until(
            lambda: all(f"sink {s}" in watch.output() for s in ("pgbouncer failed", "haproxy: ")),
            timeout=15,
            what="HAProxy to take epoch 2 and PgBouncer to fail",
        )
        state = json.loads(watch.state_file.read_text())
        assert state["sinks"]["haproxy"]["main"]["epoch"] == 2
        assert state["sinks"]["pgbouncer"]["main"]["epoch"] == 1
        assert state["clusters"]["main"]["record"]["epoch"] == 1
        assert publisher.acked_epoch("app1") == 1
        sock, greeted = greeting(haproxy.port)
        held.append(sock)
        assert greeted == "new"

        watch.stop()
        zk.servers[0].kill()
        before = len(watch.output())
        watch.start()
        wait_until(
            lambda: "did not answer within start_wait_s" in watch.output()[before:],
            timeout=15,
            what="the watcher to fall back to its state file",
        )
        pgbouncer.start()
        wait_until(
            lambda: {r[0]: r[2] for r in pgbouncer.admin("SHOW DATABASES")}["app"] == new.port,
            timeout=15,
            what="PgBouncer to catch up with epoch 2 from the state file",
        )
        after_restart = watch.output()[before:]
        assert "sink haproxy: " not in after_restart, "HAProxy must not be touched again"
        assert still_open(held[0])
        assert [s["srv_port"] for s in haproxy.server_states()] == [str(new.port)]
        sock, greeted = greeting(haproxy.port)
        held.append(sock)
        assert greeted == "new"

        zk.servers[0].start()
        zk.servers[0].wait_serving()
        wait_until(lambda: publisher.acked_epoch("app1") == 2, timeout=30, what="the ack of 2")
        assert still_open(held[0])
        assert "sink haproxy: " not in watch.output()[before:]
    finally:
        for sock in held:
            sock.close()
        old.close()
        new.close()


def test_a_watcher_killed_and_restarted_within_its_session_timeout_acknowledges_again(
    zk: ZkEnsemble, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    """The killed watcher's ephemeral ack outlives it until its session expires (8 s here,
    longer than a restart takes even on a loaded machine): the restarted one must not write
    into it, but create its own once it is gone."""
    publisher.write(master_record(epoch=1))
    session = {"hosts": zk.hosts, "session_timeout_s": 8, "call_timeout_s": 1}
    watch = watchers(zookeeper=session)
    wait_until(lambda: converged(watch, publisher, 1), timeout=20, what="epoch 1")
    dead_session = publisher.ack_owner("app1")

    watch.proc.kill()
    before = len(watch.output())
    watch.start()
    wait_until(
        lambda: "is another watcher running with the same agent name?" in watch.output()[before:],
        timeout=10,
        what="the restarted watcher to see the dead session's node",
    )
    wait_until(
        lambda: publisher.ack_owner("app1") not in (None, dead_session),
        timeout=20,
        what="the restarted watcher to create its own node after the old one expired",
    )
    assert "cluster main: acknowledged epoch 1" in watch.output()[before:]
    assert publisher.acked_epoch("app1") == 1
    assert "NodeExistsError" not in watch.output()


def test_two_hosts_with_the_same_agent_name_get_a_clear_error(
    tmp_path: Path, zk: ZkEnsemble, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    publisher.write(master_record(epoch=1))
    first = watchers()
    wait_until(lambda: converged(first, publisher, 1), timeout=20, what="epoch 1")
    owner = publisher.ack_owner("app1")
    twin = WatchProc(tmp_path / "other-host", zk.hosts, agent="app1").start()
    try:
        wait_until(
            lambda: "is another watcher running with the same agent name?" in twin.output(),
            timeout=15,
            what="the second watcher to say why it cannot acknowledge",
        )
        assert twin.proc.alive() and twin.routed_to() == ("10.0.0.1", 5432, 1)
        assert publisher.ack_owner("app1") == owner
        assert twin.output().count("is another watcher running") == 1  # said once
    finally:
        twin.stop()


def test_first_start_renders_every_file_then_the_proxies_start_on_them(
    tmp_path: Path,
    zk: ZkEnsemble,
    haproxy: HAProxy,
    pgbouncer: PgBouncer,
    watchers: Callable[..., WatchProc],
    publisher: Publisher,
) -> None:
    """`agrajag watch --render-only` before HAProxy and PgBouncer exist: every file and the
    server-state file are written from ZooKeeper; the proxies start on them, and the
    watcher started next finds nothing to change."""
    backend = Backend("primary")
    try:
        publisher.write(master_record(3, epoch=3, host="127.0.0.1", port=backend.port))
        pgbouncer.write_config("")
        pgbouncer.databases.unlink()
        sinks = proxy_sinks(tmp_path / "app1", haproxy, pgbouncer)
        first = WatchProc(tmp_path / "app1", zk.hosts, sinks=sinks)

        def render_only() -> subprocess.CompletedProcess[str]:
            argv = [AGRAJAG, "watch", "--config", str(first.config), "--render-only"]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

        done = render_only()
        assert done.returncode == 0, done.stderr
        assert f"cluster main: node3 at 127.0.0.1:{backend.port}, epoch 3" in done.stderr
        assert (haproxy.dir / "server-state").read_text() == "1\n"
        assert f"port={backend.port}" in pgbouncer.databases.read_text()
        assert first.routed_to() == ("127.0.0.1", backend.port, 3)
        assert not first.state_file.exists()  # nothing was activated

        haproxy.start()
        pgbouncer.start()
        sock, greeted = greeting(haproxy.port)
        sock.close()
        assert greeted == "primary"
        assert "server state file" not in (haproxy.dir / "haproxy.log").read_text()
        assert {r[0]: r[2] for r in pgbouncer.admin("SHOW DATABASES")}["app"] == backend.port
        workers = Processes.parse(haproxy.master("show proc")).workers

        watch = watchers(sinks=sinks)
        wait_until(lambda: publisher.acked_epoch("app1") == 3, timeout=30, what="epoch 3")
        ack = publisher.ack("app1")
        assert ack is not None and set(ack.sinks.values()) == {"unchanged"}
        assert Processes.parse(haproxy.master("show proc")).workers == workers  # no reload
        assert watch.proc.alive()

        again = render_only()  # the files exist now: they are the proxies' to keep
        assert again.returncode == 0 and again.stderr.count("kept the existing") == 3
    finally:
        backend.close()


def test_first_start_on_a_withdrawn_master_renders_no_server(
    tmp_path: Path, zk: ZkEnsemble, publisher: Publisher
) -> None:
    withdrawn = replace(
        master_record(epoch=4), withdrawn="node1 takes writes on timeline 1, node2 on 2"
    )
    publisher.write(withdrawn)
    first = WatchProc(tmp_path / "app1", zk.hosts)
    argv = [AGRAJAG, "watch", "--config", str(first.config), "--render-only"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "cluster main: node1 at 10.0.0.1:5432 WITHDRAWN: routing nowhere, epoch 4" in done.stderr
    assert first.dest.exists() and first.routed_to() is None


def test_sighup_reloads_the_sinks_and_a_bad_file_keeps_the_running_config(
    tmp_path: Path, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    publisher.write(master_record(epoch=1))
    watch = watchers()
    wait_until(lambda: converged(watch, publisher, 1), timeout=20, what="epoch 1")
    conf = yaml.safe_load(watch.config.read_text())
    (app_env,) = conf["sinks"]
    template = tmp_path / "changed.env.j2"
    template.write_text("# changed\n" + Path(app_env["src"]).read_text())
    second = {**app_env, "name": "second", "dest": str(tmp_path / "second.env")}

    def reload(sinks: list[dict[str, Any]], **changes: object) -> None:
        before = len(watch.output())
        watch.config.write_text(yaml.safe_dump({**conf, "sinks": sinks, **changes}))
        watch.proc.signal(signal.SIGHUP)
        wait_until(
            lambda: "reload" in watch.output()[before:], timeout=10, what="the reload's answer"
        )

    def sinks_acked() -> dict[str, str]:
        ack = publisher.ack("app1")
        return dict(ack.sinks) if ack else {}

    reload([{**app_env, "src": str(template)}, second])  # one changed, one added
    wait_until(lambda: set(sinks_acked()) == {"app-env", "second"}, timeout=10, what="acks")
    assert watch.dest.read_text().startswith("# changed\n")
    assert "MAIN_PRIMARY_EPOCH=1" in Path(second["dest"]).read_text()
    assert "added: second" in watch.output()

    reload([second])  # one removed
    wait_until(lambda: set(sinks_acked()) == {"second"}, timeout=10, what="the removal")
    assert set(json.loads(watch.state_file.read_text())["sinks"]) == {"second"}

    reload([{**second, "src": str(tmp_path / "missing.j2")}])
    assert "reload refused, keeping the running configuration: " in watch.output()
    assert "sinks[0].src: file not found" in watch.output()
    reload([second], agent="renamed")
    assert "agent change only with a restart" in watch.output()

    publisher.write(master_record(2, epoch=2))  # the running configuration still follows
    wait_until(
        lambda: (
            "MAIN_PRIMARY_EPOCH=2" in Path(second["dest"]).read_text()
            and publisher.acked_epoch("app1") == 2
        ),
        timeout=10,
        what="epoch 2 through the kept sink",
    )
    assert "MAIN_PRIMARY_EPOCH=1" in watch.dest.read_text()  # the removed sink's file stays
    assert watch.proc.alive()


def test_a_watcher_retrying_after_a_runtime_switch_keeps_sessions_to_the_new_primary(
    haproxy: HAProxy, watchers: Callable[..., WatchProc], publisher: Publisher
) -> None:
    """HAProxy's master socket is not where the config says: the runtime switch succeeds, the
    cut of old workers' sessions fails, and the watcher retries on its own. A client of the
    new primary survives every retry, epoch 2 is not acknowledged until the sink finished,
    and once the socket is there the retry finishes without a cut."""
    old, new = Backend("old"), Backend("new")
    held: list[socket.socket] = []
    try:
        wrong = haproxy.dir / "master-elsewhere.sock"
        section = {**haproxy.sink_section(), "type": "haproxy", "master_socket": str(wrong)}
        first = master_record(epoch=1, host="127.0.0.1", port=old.port)
        haproxy.config.write_text(HAProxySink.from_mapping(section, "test").render({"main": first}))
        haproxy.start()
        publisher.write(first)
        watch = watchers(sinks=[section])
        wait_until(lambda: publisher.acked_epoch("app1") == 1, timeout=20, what="epoch 1")

        publisher.write(master_record(2, epoch=2, host="127.0.0.1", port=new.port))
        wait_until(
            lambda: [s["srv_port"] for s in haproxy.server_states()] == [str(new.port)],
            timeout=10,
            what="the runtime switch",
        )
        sock, greeted = greeting(haproxy.port)
        held.append(sock)
        assert greeted == "new"
        wait_until(
            lambda: "sink haproxy failed (3 in a row)" in watch.output(),
            timeout=15,
            what="three failed tries",
        )
        assert "the new configuration is in use" in watch.output()
        assert still_open(held[0]), "a retry cut a session to the new primary"
        assert publisher.acked_epoch("app1") == 1  # not finished: not acknowledged

        wrong.symlink_to(haproxy.master_socket)
        wait_until(lambda: publisher.acked_epoch("app1") == 2, timeout=15, what="epoch 2")
        assert still_open(held[0])
        assert f"127.0.0.1:{new.port} check" in haproxy.config.read_text()
        assert str(new.port) in (haproxy.dir / "server-state").read_text()
    finally:
        for sock in held:
            sock.close()
        old.close()
        new.close()
