"""Secrets come from files or the environment and stay out of every repr and error; the ACL
each znode must carry; bringing a tree under ACLs is idempotent."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from agrajag.config import MetricsSettings, MetricsTls, Section, read_secret
from agrajag.daemon.settings import CheckSettings
from agrajag.errors import ConfigError
from agrajag.metrics import serve
from agrajag.registry.acl import Grant, Perm, Policy, secure_tree
from agrajag.zookeeper_settings import AclSettings, DigestAuth, Role, ZooKeeperSettings, digest_id
from tools.harness.tls import make_pki

SECRET = "planted-s3cret-value"
DAEMON = digest_id("agrajag-daemon", SECRET)
WATCHER = digest_id("agrajag-watch", "other")
WORLD_ALL = frozenset({Grant("world", "anyone", int(Perm.ALL))})


def secret_file(tmp_path: Path, mode: int = 0o600, value: str = SECRET) -> Path:
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def section(data: dict[str, Any]) -> Section:
    return Section(data, "daemon.yaml", "zookeeper.auth.")


def test_a_secret_is_read_from_a_file_without_its_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, 0o640)
    assert read_secret(section({"password_file": str(path)}), "password") == SECRET


def test_a_secret_is_read_from_the_environment() -> None:
    s = section({"password_env": "ZK_PASSWORD"})
    assert read_secret(s, "password", {"ZK_PASSWORD": SECRET}) == SECRET
    with pytest.raises(ConfigError, match="password_env: environment variable ZK_PASSWORD is not"):
        read_secret(s, "password", {})


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o666, 0o601])
def test_a_secret_file_others_can_access_is_refused_naming_it(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, mode)
    with pytest.raises(ConfigError) as err:
        read_secret(section({"password_file": str(path)}), "password")
    message = str(err.value)
    assert message.startswith(f"daemon.yaml: zookeeper.auth.password_file: {path} is accessible")
    assert SECRET not in message


def test_a_secret_inline_or_twice_or_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password: secrets are not taken inline") as err:
        read_secret(section({"password": SECRET}), "password")
    assert SECRET not in str(err.value)
    both = {"password_file": str(secret_file(tmp_path)), "password_env": "X"}
    with pytest.raises(ConfigError, match="not both"):
        read_secret(section(both), "password")
    with pytest.raises(ConfigError, match=f"cannot read {tmp_path}/nope"):
        read_secret(section({"password_file": str(tmp_path / "nope")}), "password")
    assert read_secret(section({}), "password") is None


def test_the_check_password_comes_from_a_file_and_stays_out_of_repr(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    check = CheckSettings.from_section(
        Section({"user": "agrajag", "password_file": str(path)}, "daemon.yaml", "check.")
    )
    assert check.credentials.password == SECRET
    assert SECRET not in repr(check)
    with pytest.raises(ConfigError, match=r"check\.password: secrets are not taken inline"):
        CheckSettings.from_section(Section({"user": "a", "password": SECRET}, "d.yaml", "check."))


def zookeeper(tmp_path: Path, role: Role, **changes: Any) -> ZooKeeperSettings:
    data: dict[str, Any] = {
        "hosts": "127.0.0.1:2181",
        "auth": {"user": "agrajag-daemon", "password_file": str(secret_file(tmp_path))},
        "acl": {"daemons": [DAEMON], "watchers": [WATCHER]},
    }
    data.update(changes)
    return ZooKeeperSettings.from_section(Section(data, "daemon.yaml", "zookeeper."), role)


def test_the_zookeeper_identity_stays_out_of_repr(tmp_path: Path) -> None:
    zk = zookeeper(tmp_path, Role.DAEMON)
    assert zk.auth == DigestAuth("agrajag-daemon", SECRET)
    assert SECRET not in repr(zk)


def test_an_identity_missing_from_its_own_acl_list_is_refused(tmp_path: Path) -> None:
    """A wrong password (or a stale list) would lock the process out of what it creates."""
    with pytest.raises(ConfigError, match=r"zookeeper.auth: user agrajag-daemon .* not in") as err:
        zookeeper(tmp_path, Role.WATCHER)  # the daemon's identity is not among the watchers
    assert "zookeeper.acl.watchers" in str(err.value)
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match=r"zookeeper\.auth: missing"):
        zookeeper(tmp_path, Role.DAEMON, auth=None)
    assert zookeeper(tmp_path, Role.READER, auth=None).auth is None  # status reads as it can


@pytest.mark.parametrize(
    ("acl", "message"),
    [
        ({"daemons": ["agrajag-daemon"], "watchers": [WATCHER]}, r"daemons\[0\]: must be a digest"),
        ({"daemons": [], "watchers": [WATCHER]}, "daemons: must name at least one"),
        ({"daemons": [DAEMON], "watchers": [WATCHER], "world_read": "yes"}, "true or false"),
    ],
)
def test_bad_acl_settings_are_named(tmp_path: Path, acl: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        zookeeper(tmp_path, Role.DAEMON, acl=acl)


def test_nobody_but_the_identities_gets_a_right_unless_world_read() -> None:
    policy = Policy(AclSettings((DAEMON,), (WATCHER,)))
    for grants in (policy.tree(), policy.watchers_dir(), policy.ack()):
        assert {g.scheme for g in grants} == {"digest"}
    watcher_rights = {g.id: g.perms for g in policy.tree()}[WATCHER]
    assert watcher_rights == Perm.READ  # never write, create or delete in the daemons' tree
    assert {g.id: g.perms for g in policy.watchers_dir()}[WATCHER] == Perm.READ | Perm.CREATE
    opened = Policy(AclSettings((DAEMON,), (WATCHER,), world_read=True))
    assert Grant("world", "anyone", int(Perm.READ)) in opened.tree()


class FakeTree:
    """An in-memory znode tree with ACLs and ACL versions: `secure_tree`'s store."""

    def __init__(self, paths: list[str]) -> None:
        self.acls = {p: (WORLD_ALL, 0) for p in paths}

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(
            {
                p[len(prefix) :]
                for p in self.acls
                if p.startswith(prefix) and "/" not in p[len(prefix) :]
            }
        )

    def acl(self, path: str) -> tuple[frozenset[Grant], int] | None:
        return self.acls.get(path)

    def set_acl(self, path: str, grants: frozenset[Grant], version: int) -> None:
        assert self.acls[path][1] == version
        self.acls[path] = (grants, version + 1)


def test_securing_a_tree_sets_each_znode_once_and_then_changes_nothing() -> None:
    base = "/agrajag/main"
    tree = FakeTree(
        [
            "/agrajag",
            base,
            *(f"{base}/{p}" for p in ("master", "nodes", "nodes/node1", "history")),
            *(f"{base}/{p}" for p in ("history/epoch-0000000001", "watchers", "watchers/app1")),
        ]
    )
    policy = Policy(AclSettings((DAEMON,), (WATCHER,)))
    dry_seen, dry = secure_tree(tree, "/agrajag", policy, dry_run=True)
    assert all(grants == WORLD_ALL for grants, _ in tree.acls.values())
    seen, changes = secure_tree(tree, "/agrajag", policy)
    assert seen == dry_seen == 9 and [c.path for c in changes] == [c.path for c in dry]
    assert changes[0].path == "/agrajag"  # parents first
    assert tree.acls[f"{base}/watchers/app1"][0] == policy.ack()
    assert tree.acls[f"{base}/watchers"][0] == policy.watchers_dir()
    assert tree.acls[f"{base}/master"][0] == policy.tree()
    assert secure_tree(tree, "/agrajag", policy) == (9, [])
    shown = str(changes[0])
    assert shown.startswith("/agrajag: world:anyone=rwcda -> digest:agrajag-daemon=rwcda")
    assert DAEMON.partition(":")[2] not in shown  # the password's hash is not printed


def test_the_metrics_endpoint_serves_https_and_can_require_client_certificates(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = MetricsTls(str(pki.cert("server")), str(pki.key("server")), client_ca=str(pki.ca))
    registry = CollectorRegistry()
    Gauge("agrajag_test", "A gauge to scrape.", registry=registry).set(1)
    port = serve(MetricsSettings(port=0, tls=tls), registry)
    url = f"https://127.0.0.1:{port}/metrics"
    context = ssl.create_default_context(cafile=pki.ca)
    with pytest.raises(OSError):  # no client certificate
        urllib.request.urlopen(url, context=context, timeout=5)
    context.load_cert_chain(pki.cert("client"), pki.key("client"))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert "agrajag_test 1.0" in response.read().decode()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_metrics_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = secret_file(tmp_path, 0o644)
    s = Section({"cert": "c.pem", "key": str(key)}, "watch.yaml", "metrics.tls.")
    with pytest.raises(ConfigError, match=f"metrics.tls.key: {key} is accessible by others"):
        MetricsTls.from_section(s)
