"""A secured registry on a real ZooKeeper: only the daemons name the master, over TLS, and no
secret leaks into any output."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import OPEN_ACL_UNSAFE

from agrajag.record import WatcherAck
from agrajag.registry.client import Registry
from agrajag.registry.errors import AccessDenied
from agrajag.zookeeper_settings import Role, TlsSettings, ZooKeeperSettings, digest_id
from tests.factories import master_record, node_record
from tools.harness.agrajag import Daemons
from tools.harness.identities import (
    PASSWORDS,
    identity_settings,
    kazoo_auth,
    secure_example,
    write_secret,
)
from tools.harness.postgres import CHECK_PASSWORD, PgCluster
from tools.harness.procs import free_port, service_dir, wait_until
from tools.harness.shipped import AGRAJAG, example
from tools.harness.tls import Pki, make_pki
from tools.harness.watch import WatchProc
from tools.harness.zookeeper import ZkEnsemble

pytestmark = pytest.mark.integration

BASE = "/agrajag/main"
SECRETS = [*PASSWORDS.values(), CHECK_PASSWORD]


@pytest.fixture
def pki() -> Pki:
    return make_pki(service_dir("pki"))


@pytest.fixture
def zk_tls(pki: Pki) -> Iterator[ZkEnsemble]:
    """A standalone ZooKeeper that speaks TLS only (client certificates required)."""
    ensemble = ZkEnsemble(1, pki)
    try:
        yield ensemble.start()
    finally:
        ensemble.stop()


def tls_settings(pki: Pki, ca: Path | None = None) -> TlsSettings:
    return TlsSettings(**pki.client(ca=ca))


def registry(hosts: str, role: Role, tls: TlsSettings | None = None) -> Registry:
    r = Registry.connect(identity_settings(hosts, role, tls), role, start_timeout=10)
    return r


def published(hosts: str, tls: TlsSettings | None = None) -> Registry:
    """A daemon's registry that has laid out cluster main, registered node1, published it."""
    daemon = registry(hosts, Role.DAEMON, tls)
    daemon.ensure_layout("main")
    daemon.register_node("main", node_record("node1"))
    assert daemon.publish(master_record(1, 1), -1, 0) is None
    return daemon


def client(hosts: str, auth: list[tuple[str, str]]) -> KazooClient:
    c = KazooClient(hosts=hosts, timeout=4, auth_data=auth)
    c.start(timeout=10)
    return c


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGRAJAG, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_clear_error(done: subprocess.CompletedProcess[str], command: str, text: str) -> None:
    """Exit 2, no traceback, the last line names the problem; no secret anywhere."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"agrajag {command}: ") and text in last, output
    assert not [s for s in SECRETS if s in output]


def test_neither_anonymous_nor_a_watcher_can_change_the_master_nodes_or_history(
    zk: ZkEnsemble,
) -> None:
    daemon = published(zk.hosts)
    watcher = registry(zk.hosts, Role.WATCHER)
    watcher.acknowledge("main", WatcherAck("app1", 1, "2026-12-01T00:00:00Z", {}))
    before = daemon.read_master("main")
    try:
        for who, auth in (("anonymous", []), ("watcher", kazoo_auth(Role.WATCHER))):
            c = client(zk.hosts, auth)
            attempts: dict[str, Callable[[], object]] = {
                "set the master": lambda c=c: c.set(f"{BASE}/master", b'{"epoch": 99}'),
                "delete the master": lambda c=c: c.delete(f"{BASE}/master"),
                "delete a daemon's node": lambda c=c: c.delete(f"{BASE}/nodes/node1"),
                "add a daemon's node": lambda c=c: c.create(f"{BASE}/nodes/evil", ephemeral=True),
                "create history": lambda c=c: c.create(f"{BASE}/history/epoch-", sequence=True),
                "open the master's ACL": lambda c=c: c.set_acls(f"{BASE}/master", OPEN_ACL_UNSAFE),
                "create a cluster": lambda c=c: c.create("/agrajag/evil"),
            }
            for what, attempt in attempts.items():
                with pytest.raises(NoAuthError):
                    attempt()
                    pytest.fail(f"{who} could {what}")
            c.stop()
            c.close()
        with pytest.raises(AccessDenied, match="ZooKeeper publish: not allowed by the znode's"):
            watcher.publish(master_record(1, 2), before.version, 0)  # the daemons' multi-op
        anonymous = client(zk.hosts, [])
        with pytest.raises(NoAuthError):
            anonymous.get(f"{BASE}/master")  # no world-read unless the operator opts in
        anonymous.stop()
        anonymous.close()
        after = daemon.read_master("main")
        assert (after.record, after.version) == (before.record, before.version)
        assert daemon.live_nodes("main") == ["node1"]
        assert [h.epoch for h in daemon.history("main")] == [1]
        ack = daemon.watchers("main")["app1"]  # the daemons (and status) read the watchers
        assert isinstance(ack, WatcherAck) and ack.applied_epoch == 1
    finally:
        watcher.close()
        daemon.close()


def daemon_config(tmp_path: Path, hosts: str, tls: dict[str, str] | None = None) -> Path:
    """conf.d's daemon example with the harness's daemon identity."""
    conf = example("daemon.example.yaml")
    conf["zookeeper"].update(hosts=hosts)
    secure_example(conf["zookeeper"], tmp_path, Role.DAEMON, tls=tls)
    conf["check"] = {"user": "agrajag", "password_file": str(write_secret(tmp_path / "c", "x"))}
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_secure_registry_brings_an_open_tree_under_the_acls_once(
    zk: ZkEnsemble, tmp_path: Path
) -> None:
    open_registry = Registry.connect(ZooKeeperSettings(zk.hosts), Role.DAEMON, start_timeout=10)
    open_registry.ensure_layout("main")
    open_registry.register_node("main", node_record("node1"))
    assert open_registry.publish(master_record(1, 1), -1, 0) is None
    open_registry.acknowledge("main", WatcherAck("app1", 1, "2026-12-01T00:00:00Z", {}))
    config = daemon_config(tmp_path, zk.hosts)
    try:
        dry = run("secure-registry", "--config", str(config), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines()[-1] == "9 znodes under /agrajag: 9 would change"
        first = run("secure-registry", "--config", str(config))
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        assert lines[0] == (
            "set /agrajag: world:anyone=rwcda -> digest:agrajag-daemon=rwcda digest:agrajag-watch=r"
        )
        assert (
            f"set {BASE}/watchers: world:anyone=rwcda -> "
            "digest:agrajag-daemon=rwcda digest:agrajag-watch=rc"
        ) in lines
        assert lines[-1] == "9 znodes under /agrajag: 9 changed"
        again = run("secure-registry", "--config", str(config))
        assert again.stdout == "9 znodes under /agrajag: 0 changed\n", again.stdout

        anonymous = client(zk.hosts, [])
        with pytest.raises(NoAuthError):
            anonymous.set(f"{BASE}/master", b"{}")
        anonymous.stop()
        anonymous.close()
        status = run("status", "--config", str(config), "--json")  # the daemon's identity reads
        assert status.returncode == 0, status.stderr
        assert list(json.loads(status.stdout)["main"]["watchers"]) == ["app1"]
        daemon = registry(zk.hosts, Role.DAEMON)  # the daemons go on publishing
        daemon.register_node("main", node_record("node2"))
        current = daemon.read_master("main")
        assert daemon.publish(master_record(2, 2), current.version, 0) is None
        daemon.close()
    finally:
        open_registry.close()


def watch_config(tmp_path: Path, hosts: str, **zookeeper: Any) -> Path:
    """The watcher's YAML as the harness writes it, its `zookeeper:` section changed."""
    proc = WatchProc(tmp_path / "app1", hosts)
    conf = yaml.safe_load(proc.config.read_text())
    conf["zookeeper"].update(zookeeper)
    proc.config.write_text(yaml.safe_dump(conf))
    return proc.config


def test_wrong_credentials_give_one_clear_line_and_a_nonzero_exit(
    zk: ZkEnsemble, tmp_path: Path
) -> None:
    daemon = published(zk.hosts)
    try:
        wrong = write_secret(tmp_path / "wrong.password", "not-the-password")
        auth = {"user": "agrajag-watch", "password_file": str(wrong)}
        # a wrong password: the config's own ACL list does not name the identity
        config = watch_config(tmp_path, zk.hosts, auth=auth)
        done = run("watch", "--config", str(config))
        assert_one_clear_error(done, "watch", "zookeeper.auth: user agrajag-watch with this")

        # an identity the tree does not know (the lists in this config are not the tree's)
        unknown = digest_id("agrajag-watch", "not-the-password")
        acl = {"daemons": [digest_id("agrajag-daemon", "x")], "watchers": [unknown]}
        config = watch_config(tmp_path, zk.hosts, auth=auth, acl=acl)
        done = run("watch", "--config", str(config))
        assert_one_clear_error(done, "watch", "not allowed by the znode's ACL")

        done = run("status", "--zookeeper", zk.hosts)  # anonymous
        assert_one_clear_error(done, "status", "ZooKeeper clusters: not allowed")
    finally:
        daemon.close()


def test_tls_only_zookeeper_refuses_plaintext_and_a_bad_ca(
    zk_tls: ZkEnsemble, pki: Pki, tmp_path: Path
) -> None:
    plain = KazooClient(hosts=zk_tls.hosts, timeout=2)
    with pytest.raises(KazooTimeoutError):
        plain.start(timeout=3)
    plain.close()

    daemon = published(zk_tls.hosts, tls_settings(pki))
    try:
        good = watch_config(tmp_path / "good", zk_tls.hosts, tls=pki.client())
        done = run("status", "--config", str(good), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["main"]["master"]["node"] == "node1"

        bad = watch_config(tmp_path / "bad", zk_tls.hosts, tls=pki.client(ca=pki.other_ca))
        done = run("status", "--config", str(bad))
        assert_one_clear_error(done, "status", "certificate verify failed")
        assert f"TLS to ZooKeeper {zk_tls.hosts} refused" in done.stderr

        port = zk_tls.servers[0].port
        by_name = watch_config(tmp_path / "name", f"localhost:{port}", tls=pki.client())
        done = run("status", "--config", str(by_name))  # the certificate names 127.0.0.1 only
        assert_one_clear_error(done, "status", "Hostname mismatch")
    finally:
        daemon.close()


def test_tls_configured_against_a_plaintext_server_is_refused(
    zk: ZkEnsemble, pki: Pki, tmp_path: Path
) -> None:
    config = watch_config(tmp_path, zk.hosts, tls=pki.client())
    done = run("status", "--config", str(config))
    assert_one_clear_error(done, "status", f"TLS to ZooKeeper {zk.hosts} refused: the server ended")


def test_daemons_publish_a_failover_over_tls_under_acls_and_nothing_leaks(
    zk_tls: ZkEnsemble, pki: Pki, cluster_with_hook: PgCluster, tmp_path: Path
) -> None:
    """The whole path secured: daemons and a watcher over TLS with their own identities, the
    metrics over HTTPS. Then every output is searched for the planted secrets."""
    daemons = Daemons(zk_tls.hosts, cluster_with_hook.nodes, tls=pki.client())
    metrics_port = free_port()
    metrics_tls = {"cert": str(pki.cert("server")), "key": str(pki.key("server"))}
    watch = WatchProc(
        tmp_path / "app1",
        zk_tls.hosts,
        tls=pki.client(),
        metrics={"address": "127.0.0.1", "port": metrics_port, "tls": metrics_tls},
    )
    try:
        daemons.start()
        watch.start()
        first = cluster_with_hook.nodes[0]
        wait_until(lambda: watch.routed_to() == ("127.0.0.1", first.port, 1), timeout=30,
                   what="the watcher to route to node1")  # fmt: skip
        first.crash()
        new = cluster_with_hook.wait_promotion(first, timeout=30)
        wait_until(
            lambda: watch.routed_to() == ("127.0.0.1", new.port, 2),
            timeout=30,
            what=f"the watcher to follow the failover to {new.name}",
        )

        status = run("status", "--config", str(watch.config))
        assert status.returncode == 0, status.stderr
        assert f"master {new.name} (127.0.0.1:{new.port})  epoch 2" in status.stdout
        status_json = run("status", "--config", str(watch.config), "--json")
        https = scrape(metrics_port, pki)
        assert "agrajag_watch_applied_epoch" in https
        with pytest.raises(OSError):  # plain HTTP gets nothing from the HTTPS endpoint
            scrape(metrics_port)
        outputs = {
            "daemon logs": daemons.logs(),
            "watcher log": watch.output(),
            "status": status.stdout + status.stderr,
            "status --json": status_json.stdout + status_json.stderr,
            "watcher metrics": https,
            "daemon metrics": "\n".join(scrape(p.metrics_port) for p in daemons.procs.values()),
            "znodes": znodes(zk_tls.hosts, pki),
        }
        leaks = [(name, s) for name, text in outputs.items() for s in SECRETS if s in text]
        assert not leaks, leaks
        assert "decision=publish" in outputs["daemon logs"]  # the search saw real output
    finally:
        watch.stop()
        daemons.stop()


def scrape(port: int, pki: Pki | None = None) -> str:
    """The metrics page on 127.0.0.1:port, over HTTPS trusting `pki`'s CA when given."""
    if pki is None:
        url, context = f"http://127.0.0.1:{port}/metrics", None
    else:
        url, context = (
            f"https://127.0.0.1:{port}/metrics",
            ssl.create_default_context(cafile=pki.ca),
        )
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return str(response.read().decode())


def znodes(hosts: str, pki: Pki) -> str:
    """Every znode's path and data under /agrajag, read with the daemon identity."""
    c = KazooClient(
        hosts=hosts,
        timeout=4,
        auth_data=kazoo_auth(Role.DAEMON),
        use_ssl=True,
        check_hostname=True,
        ca=str(pki.ca),
        certfile=str(pki.cert("client")),
        keyfile=str(pki.key("client")),
    )
    c.start(timeout=10)
    texts, pending = [], ["/agrajag"]
    while pending:
        path = pending.pop()
        data, _ = c.get(path)
        texts.append(f"{path} {data.decode(errors='replace')}")
        pending.extend(f"{path}/{child}" for child in c.get_children(path))
    c.stop()
    c.close()
    return "\n".join(texts)
