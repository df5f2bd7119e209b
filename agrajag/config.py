"""Reading YAML configuration: every error names the file and the key.

Process-specific settings (daemon, watcher, sinks) are built from `Section`s; the parts both
processes share (ZooKeeper, metrics, logging) live here.

>>> s = Section({"zookeeper": {"hosts": "127.0.0.1:2181"}}, "daemon.yaml")
>>> ZooKeeperSettings.from_section(s.section("zookeeper")).hosts
'127.0.0.1:2181'
>>> s.section("zookeeper").number("session_timeout_s", minimum=2)
Traceback (most recent call last):
...
agrajag.errors.ConfigError: daemon.yaml: zookeeper.session_timeout_s: missing
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from agrajag.errors import ConfigError
from agrajag.record import is_plain_name

_MISSING: Any = object()
T = TypeVar("T")


class ConfigErrors(ConfigError):
    """Several problems of one file, one per line, each naming its key."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


class Problems:
    """Reads that go on after a ConfigError, so that one pass reports every problem of a
    file, not only the first: an operator fixes them all before the next restart.

    `read` returns `fallback` when it recorded a problem; `raise_any` must come before any
    value read is used.

    >>> p = Problems()
    >>> p.read(lambda: Section({}, "d.yaml").string("cluster"), "x"), p.read(lambda: 2, 0)
    ('x', 2)
    >>> p.read(lambda: Section({"port": "x"}, "d.yaml").integer("port"))
    >>> p.raise_any()
    Traceback (most recent call last):
    ...
    agrajag.config.ConfigErrors: d.yaml: cluster: missing
    d.yaml: port: must be an integer, got 'x'
    """

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def read(self, read: Callable[[], T], fallback: Any = None) -> T:
        try:
            return read()
        except ConfigErrors as exc:
            self.found.extend(exc.problems)
        except ConfigError as exc:
            self.found.append(exc)
        return fallback  # type: ignore[no-any-return]

    def raise_any(self) -> None:
        raise_all(self.found)


def raise_all(problems: Sequence[ConfigError]) -> None:
    """Raise the one problem as it is, several as ConfigErrors, none: return."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


def load_yaml(path: str | Path) -> Section:
    """Read a YAML file whose top level is a mapping."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return Section(data, str(path))


class Section:
    """A mapping from a config file that knows where it came from, for error messages."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix

    def where(self, key: str) -> str:
        return f"{self.source}: {self.prefix}{key}"

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {why}")

    def _value(self, key: str, default: Any) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "missing")
        return default

    def keys(self) -> set[str]:
        return set(self.data)

    def reject_unknown(self, known: set[str]) -> None:
        """Refuse keys nobody reads: a typo must not silently fall back to a default."""
        why = f"unknown key (known: {', '.join(sorted(known))})"
        raise_all([self.error(key, why) for key in sorted(self.keys() - known)])

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._value(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.string(key)

    def name(self, key: str, default: Any = _MISSING) -> str:
        value = self.string(key, default)
        if not is_plain_name(value):
            raise self.error(key, f"must be a plain name (letters, digits, ._@-), got {value!r}")
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every comparison; .inf would never end a wait
            raise self.error(key, f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value!r}")
        return float(value)

    def integer(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        self.number(key, value, minimum=minimum, maximum=maximum)
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _MISSING) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def string_list(self, key: str, default: Any = _MISSING) -> list[str]:
        value = self._value(key, default)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.error(key, f"must be a list, got {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{i}]", f"must be a non-empty string, got {item!r}")
        return list(value)

    def name_list(self, key: str, default: Any = _MISSING) -> list[str]:
        """A list of distinct plain names (clusters a watcher or a sink follows)."""
        names = self.string_list(key, default)
        for i, name in enumerate(names):
            if not is_plain_name(name):
                raise self.error(f"{key}[{i}]", f"must be a plain name, got {name!r}")
            if name in names[:i]:
                raise self.error(f"{key}[{i}]", f"{name!r} is listed twice")
        return names

    def section(self, key: str, default: Any = _MISSING) -> Section:
        value = self._value(key, {} if default is not _MISSING else _MISSING)
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a mapping, got {value!r}")
        return Section(value, self.source, f"{self.prefix}{key}.")

    def optional_section(self, key: str) -> Section | None:
        """The mapping under `key`, None when the key is absent or empty (a feature left off)."""
        return None if self.data.get(key) is None else self.section(key)

    def sections(self, key: str) -> list[Section]:
        value = self._value(key, _MISSING)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.error(key, f"must be a list, got {value!r}")
        result = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.error(f"{key}[{i}]", f"must be a mapping, got {item!r}")
            result.append(Section(item, self.source, f"{self.prefix}{key}[{i}]."))
        return result


def read_secret(s: Section, key: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The secret `key` from `<key>_file` or `<key>_env`, never inline in the config (nor on
    the command line); None when neither is given.

    A secret file that others may read is refused, naming the path; the secret itself never
    appears in an error message.
    """
    inline, from_file, from_env = key, f"{key}_file", f"{key}_env"
    if inline in s.data:
        raise s.error(inline, f"secrets are not taken inline: use {from_file} or {from_env}")
    if from_file in s.data and from_env in s.data:
        raise s.error(from_file, f"give {from_file} or {from_env}, not both")
    if from_file in s.data:
        return read_secret_file(s, from_file)
    if from_env in s.data:
        name = s.string(from_env)
        value = environ.get(name)
        if not value:
            raise s.error(from_env, f"environment variable {name} is not set or empty")
        return value
    return None


def read_secret_file(s: Section, key: str) -> str:
    """A secret file's content (one trailing newline dropped), from `private_file`."""
    path = private_file(s, key)
    try:
        value = path.read_text().removesuffix("\n")
    except OSError as exc:
        raise s.error(key, f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise s.error(key, f"{path} is empty")
    return value


def private_file(s: Section, key: str) -> Path:
    """The path `key` names, refused unless it is a regular file that others cannot access."""
    path = Path(s.string(key))
    try:
        st = path.stat()
    except OSError as exc:
        raise s.error(key, f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise s.error(key, f"{path} is not a regular file")
    if st.st_mode & 0o007:
        mode = st.st_mode & 0o777
        raise s.error(key, f"{path} is accessible by others (mode {mode:o}): chmod o-rwx")
    return path


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


@dataclass(frozen=True, slots=True)
class MetricsTls:
    """HTTPS for the scrape endpoint; with `client_ca`, scrapers must show a certificate it
    signed."""

    cert: str
    key: str
    client_ca: str | None = None

    @classmethod
    def from_section(cls, s: Section) -> MetricsTls:
        s.reject_unknown({"cert", "key", "client_ca"})
        key = str(private_file(s, "key"))
        return cls(s.string("cert"), key, s.optional_string("client_ca"))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where Prometheus scrapes the process; loopback unless the operator says otherwise."""

    address: str = "127.0.0.1"
    port: int | None = None  # None: no metrics endpoint
    tls: MetricsTls | None = None

    @classmethod
    def from_section(cls, s: Section) -> MetricsSettings:
        s.reject_unknown({"address", "port", "tls"})
        port = s.data.get("port")
        return cls(
            address=s.string("address", "127.0.0.1"),
            port=None if port is None else s.integer("port", minimum=0, maximum=65535),
            tls=MetricsTls.from_section(t) if (t := s.optional_section("tls")) else None,
        )
