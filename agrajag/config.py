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

import math
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


@dataclass(frozen=True, slots=True)
class ZooKeeperSettings:
    """Where the registry is and how long to wait for it."""

    hosts: str
    root: str = "/agrajag"
    session_timeout_s: float = 10.0
    call_timeout_s: float = 2.0

    @classmethod
    def from_section(cls, s: Section) -> ZooKeeperSettings:
        s.reject_unknown({"hosts", "root", "session_timeout_s", "call_timeout_s"})
        root = s.string("root", "/agrajag")
        if not root.startswith("/") or root != "/" + "/".join(p for p in root.split("/") if p):
            raise s.error("root", f"must be an absolute znode path like /agrajag, got {root!r}")
        return cls(
            hosts=s.string("hosts"),
            root=root,
            session_timeout_s=s.number("session_timeout_s", 10.0, minimum=1, maximum=120),
            call_timeout_s=s.number("call_timeout_s", 2.0, minimum=0.1, maximum=60),
        )


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where Prometheus scrapes the process; loopback unless the operator says otherwise."""

    address: str = "127.0.0.1"
    port: int | None = None  # None: no metrics endpoint

    @classmethod
    def from_section(cls, s: Section) -> MetricsSettings:
        s.reject_unknown({"address", "port"})
        port = s.data.get("port")
        return cls(
            address=s.string("address", "127.0.0.1"),
            port=None if port is None else s.integer("port", minimum=0, maximum=65535),
        )
