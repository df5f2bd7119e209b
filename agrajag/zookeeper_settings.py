"""Where ZooKeeper is and who a process is to it: hosts and timeouts, the digest identity,
the ACL lists every daemon and watcher shares, TLS.

>>> s = Section({"zookeeper": {"hosts": "127.0.0.1:2181"}}, "daemon.yaml")
>>> ZooKeeperSettings.from_section(s.section("zookeeper")).hosts
'127.0.0.1:2181'
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from agrajag.config import Section, private_file, read_secret
from agrajag.record import is_plain_name


def digest_id(user: str, password: str) -> str:
    """ZooKeeper's digest identity `user:base64(sha1(user:password))`, as ACLs name it.

    >>> digest_id("agrajag-daemon", "secret")
    'agrajag-daemon:UW6qsNCcQ3aRGbi3OTEnw6lDdtk='
    """
    sha1 = hashlib.sha1(f"{user}:{password}".encode()).digest()
    return f"{user}:{base64.b64encode(sha1).decode()}"


class Role(StrEnum):
    """Who a process is to ZooKeeper: what it creates, and which ACL list must name it."""

    DAEMON = "daemon"  # writes the cluster's tree
    WATCHER = "watcher"  # reads it, manages its own watchers/<agent> node
    READER = "reader"  # `agrajag status`: reads with whichever identity its config has


@dataclass(frozen=True, slots=True)
class DigestAuth:
    """This process's ZooKeeper identity (digest scheme); the password stays out of repr()."""

    user: str
    password: str = field(repr=False)

    @property
    def id(self) -> str:
        return digest_id(self.user, self.password)

    @classmethod
    def from_section(cls, s: Section) -> DigestAuth:
        s.reject_unknown({"user", "password", "password_file", "password_env"})
        user = s.name("user")
        password = read_secret(s, "password")
        if password is None:
            raise s.error("password_file", "missing (or password_env)")
        return cls(user, password)


@dataclass(frozen=True, slots=True)
class AclSettings:
    """Who may do what on the znodes agrajag creates, as ZooKeeper digest ids
    (`user:base64(sha1(user:password))`, printed by `agrajag digest-id`)."""

    daemons: tuple[str, ...]
    watchers: tuple[str, ...]
    world_read: bool = False

    @classmethod
    def from_section(cls, s: Section) -> AclSettings:
        s.reject_unknown({"daemons", "watchers", "world_read"})
        lists = {}
        for key in ("daemons", "watchers"):
            ids = s.string_list(key)
            if not ids:
                raise s.error(key, "must name at least one digest id")
            for i, value in enumerate(ids):
                user, _, digest = value.partition(":")
                if not is_plain_name(user) or len(digest) != 28 or not digest.endswith("="):
                    raise s.error(f"{key}[{i}]", "must be a digest id user:<28 base64 chars>")
            lists[key] = tuple(ids)
        world_read = s.data.get("world_read", False)
        if not isinstance(world_read, bool):
            raise s.error("world_read", f"must be true or false, got {world_read!r}")
        return cls(lists["daemons"], lists["watchers"], world_read)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS to ZooKeeper: the server's certificate is verified against `ca`, hostname
    included; `cert` and `key` are this process's client certificate (ZooKeeper's
    `ssl.clientAuth` asks for one by default)."""

    ca: str
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_section(cls, s: Section) -> TlsSettings:
        s.reject_unknown({"ca", "cert", "key"})
        cert, key = s.optional_string("cert"), s.optional_string("key")
        if (cert is None) != (key is None):
            raise s.error("key" if key is None else "cert", "cert and key go together")
        if key is not None:
            private_file(s, "key")  # a private key others can read is refused like a secret
        ca = s.string("ca")
        for name, path in (("ca", ca), ("cert", cert)):
            if path is not None and not Path(path).is_file():
                raise s.error(name, f"{path} is not a readable file")
        return cls(ca, cert, key)


@dataclass(frozen=True, slots=True)
class ZooKeeperSettings:
    """Where the registry is, how long to wait for it, and how to prove who we are."""

    hosts: str
    root: str = "/agrajag"
    session_timeout_s: float = 10.0
    call_timeout_s: float = 2.0
    auth: DigestAuth | None = None
    acl: AclSettings | None = None  # None: znodes open to anyone (world:anyone, all rights)
    tls: TlsSettings | None = None

    @classmethod
    def from_section(cls, s: Section, role: Role = Role.READER) -> ZooKeeperSettings:
        s.reject_unknown(
            {"hosts", "root", "session_timeout_s", "call_timeout_s", "auth", "acl", "tls"}
        )
        root = s.string("root", "/agrajag")
        if not root.startswith("/") or root != "/" + "/".join(p for p in root.split("/") if p):
            raise s.error("root", f"must be an absolute znode path like /agrajag, got {root!r}")
        auth = DigestAuth.from_section(a) if (a := s.optional_section("auth")) else None
        acl = AclSettings.from_section(c) if (c := s.optional_section("acl")) else None
        tls = TlsSettings.from_section(t) if (t := s.optional_section("tls")) else None
        _check_identity(s, role, auth, acl)
        return cls(
            hosts=s.string("hosts"),
            root=root,
            session_timeout_s=s.number("session_timeout_s", 10.0, minimum=1, maximum=120),
            call_timeout_s=s.number("call_timeout_s", 2.0, minimum=0.1, maximum=60),
            auth=auth,
            acl=acl,
            tls=tls,
        )


def _check_identity(
    s: Section, role: Role, auth: DigestAuth | None, acl: AclSettings | None
) -> None:
    """A daemon or watcher that creates znodes under ACLs must be named by its own list,
    or it would lock itself out of what it creates (a wrong password shows up here)."""
    if acl is None or role is Role.READER:
        return
    if auth is None:
        raise s.error("auth", f"missing: a {role} needs an identity when zookeeper.acl is set")
    listed = acl.daemons if role is Role.DAEMON else acl.watchers
    if auth.id not in listed:
        key = "acl.daemons" if role is Role.DAEMON else "acl.watchers"
        raise s.error(
            "auth",
            f"user {auth.user} with this password is not in {s.prefix}{key}: wrong password, "
            "or a digest id missing from the list (see agrajag digest-id)",
        )
