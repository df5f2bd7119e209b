"""The ZooKeeper identities the harness runs agrajag with: a daemon and a watcher (digest
auth), their passwords in files only their process's user can read, and the ACL lists
conf.d's examples ask for. Every test thus runs the registry under ACLs, as shipped."""

from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path
from typing import Any

from agrajag.zookeeper_settings import (
    AclSettings,
    DigestAuth,
    Role,
    TlsSettings,
    ZooKeeperSettings,
    digest_id,
)
from tools.harness.procs import SERVICE_USER

USERS = {Role.DAEMON: "agrajag-daemon", Role.WATCHER: "agrajag-watch"}
#: Fresh per run, recognisable: the leak test searches every output for them.
PASSWORDS = {role: f"zk-{role}-secret-{secrets.token_hex(6)}" for role in USERS}
ACL = {
    "daemons": [digest_id(USERS[Role.DAEMON], PASSWORDS[Role.DAEMON])],
    "watchers": [digest_id(USERS[Role.WATCHER], PASSWORDS[Role.WATCHER])],
}


def write_secret(path: Path, value: str, *, service: bool = False) -> Path:
    """A secret file (mode 0600), owned by the service user when its process reads it."""
    path.write_text(value + "\n")
    path.chmod(0o600)
    if service and SERVICE_USER:
        pw = pwd.getpwnam(SERVICE_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def zookeeper_security(home: Path, role: Role, *, service: bool = False) -> dict[str, Any]:
    """The `auth` and `acl` keys of a `zookeeper:` section for `role`, its password file in
    `home`."""
    secret = write_secret(home / f"zookeeper-{role}.password", PASSWORDS[role], service=service)
    return {
        "auth": {"user": USERS[role], "password_file": str(secret)},
        "acl": {key: list(ids) for key, ids in ACL.items()},
    }


def secure_example(
    zookeeper: dict[str, Any],
    home: Path,
    role: Role,
    *,
    tls: dict[str, str] | None = None,
    service: bool = False,
) -> None:
    """Point an example's `zookeeper:` section at the harness's identity for `role` and at
    `tls` (the example's TLS files do not exist here; None: plaintext)."""
    zookeeper.update(zookeeper_security(home, role, service=service))
    zookeeper.pop("tls", None)
    if tls is not None:
        zookeeper["tls"] = tls


def identity_settings(
    hosts: str, role: Role = Role.DAEMON, tls: TlsSettings | None = None
) -> ZooKeeperSettings:
    """ZooKeeper settings with the harness's identity for `role` (tests acting as one)."""
    return ZooKeeperSettings(
        hosts,
        call_timeout_s=5,
        auth=DigestAuth(USERS[role], PASSWORDS[role]),
        acl=AclSettings(tuple(ACL["daemons"]), tuple(ACL["watchers"])),
        tls=tls,
    )


def kazoo_auth(role: Role = Role.DAEMON) -> list[tuple[str, str]]:
    """auth_data for a plain KazooClient acting as `role` (tests that play a daemon)."""
    return [("digest", f"{USERS[role]}:{PASSWORDS[role]}")]
