"""Reading YAML configuration: every error names the file and the key.

Process-specific settings (daemon, watcher, sinks) are built from `Section`s; the parts both
processes share (secrets, metrics) live here, ZooKeeper's in `zookeeper_settings`.

>>> s = Section({"zookeeper": {"hosts": "127.0.0.1:2181"}}, "daemon.yaml")
>>> s.section("zookeeper").string("hosts")
'127.0.0.1:2181'
>>> s.section("zookeeper").number("session_timeout_s", minimum=2)
Traceback (most recent call last):
...
agrajag.errors.ConfigError: daemon.yaml: zookeeper.session_timeout_s: missing
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
