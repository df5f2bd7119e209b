"""The sinks of `agrajag watch`: each routes clients to the masters it is given.

`build_sink(mapping, source)` makes one from an item of the `sinks:` list in watch.yaml; its
`type:` picks the kind (see each module's docstring for its keys). `source` names the item in
errors, e.g. "watch.yaml: sinks[0]" gives "watch.yaml: sinks[0].template: file not found".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agrajag.errors import ConfigError
from agrajag.sinks.base import ApplyResult, Sink, SinkError
from agrajag.sinks.haproxy import HAProxySink
from agrajag.sinks.pgbouncer import PgBouncerSink
from agrajag.sinks.template import TemplateSink

SinkBuilder = Callable[[Mapping[str, object], str], Sink]

SINK_TYPES: dict[str, SinkBuilder] = {
    "haproxy": HAProxySink.from_mapping,
    "pgbouncer": PgBouncerSink.from_mapping,
    "template": TemplateSink.from_mapping,
}


def build_sink(mapping: Mapping[str, object], source: str) -> Sink:
    """The sink an item of `sinks:` describes; ConfigError naming `source` and the key."""
    kind = mapping.get("type")
    if not isinstance(kind, str) or kind not in SINK_TYPES:
        raise ConfigError(f"{source}.type: must be one of {', '.join(SINK_TYPES)}, got {kind!r}")
    return SINK_TYPES[kind](mapping, source)


__all__ = ["SINK_TYPES", "ApplyResult", "Sink", "SinkBuilder", "SinkError", "build_sink"]
