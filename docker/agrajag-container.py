#!/opt/agrajag/bin/python
"""Configuration helpers of agrajag's container images (docker/Dockerfile).

    agrajag-container config EXAMPLE OVERLAY... [--set KEY.PATH=VALUE ...]   (YAML to stdout)
    agrajag-container initial EXAMPLE OVERLAY SINK

`config` writes conf.d's EXAMPLE with each OVERLAY's changes in turn, so the images carry
no second copy of the shipped settings. Mappings merge key by key; other values replace (a
null leaves the feature off, as in the example's "default none"). In a `sinks:` mapping of
an overlay, each key names one sink of the example: the result keeps only those sinks,
each with its changes merged in. `--set` changes one value (parsed as YAML).

`initial` writes SINK's destination (the sink of EXAMPLE with OVERLAY's changes) rendered
with no master, unless the file is there already: a proxy can start (and a watcher's first
apply find its old config) before ZooKeeper has a master to say. It reads only that sink,
so the proxy's container needs no ZooKeeper identity.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from agrajag.errors import AgrajagError
from agrajag.sinks import build_sink


class OverlayError(Exception):
    """An overlay that does not fit its example."""


def merge(base: Any, change: Any, where: str = "") -> Any:
    """`change` over `base`: mappings merge recursively, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(change, Mapping):
        merged = dict(base)
        for key, value in change.items():
            merged[key] = merge(base.get(key), value, f"{where}{key}.")
        return merged
    return change


def pick_sinks(sinks: list[dict[str, Any]], changes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The example's sinks named in `changes` (in the example's order), each changed."""
    by_name = {sink["name"]: sink for sink in sinks}
    unknown = sorted(set(changes) - set(by_name))
    if unknown:
        raise OverlayError(f"sinks.{unknown[0]}: no such sink in the example ({sorted(by_name)})")
    return [merge(sink, changes[sink["name"]] or {}) for sink in sinks if sink["name"] in changes]


def overlay(example: dict[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """The example with `change` applied (see the module's docstring)."""
    unknown = sorted(set(change) - set(example))
    if unknown:
        raise OverlayError(f"{unknown[0]}: not a key of the example ({sorted(example)})")
    rest = {key: value for key, value in change.items() if key != "sinks"}
    result: dict[str, Any] = merge(example, rest)
    if "sinks" in change:
        if not isinstance(change["sinks"], Mapping):
            raise OverlayError("sinks: must map sink names to their changes")
        result["sinks"] = pick_sinks(example["sinks"], change["sinks"])
    return result


def assignment(text: str) -> dict[str, Any]:
    """`a.b=value` as the nested mapping {a: {b: value}}, the value parsed as YAML."""
    path, equals, value = text.partition("=")
    if not equals or not path:
        raise OverlayError(f"--set {text!r}: expected KEY.PATH=VALUE")
    nested: dict[str, Any] = {}
    leaf = nested
    *parents, last = path.split(".")
    for key in parents:
        leaf[key] = {}
        leaf = leaf[key]
    leaf[last] = yaml.safe_load(value)
    return nested


def load(path: str) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise OverlayError(f"{path}: the top level must be a mapping")
    return data


def overlaid(example: str, overlays: list[str], sets: Iterable[str] = ()) -> dict[str, Any]:
    """EXAMPLE with each overlay file in turn, then the `--set` assignments."""
    result = load(example)
    for path in overlays:
        try:
            result = overlay(result, load(path))
        except OverlayError as exc:
            raise OverlayError(f"{path} over {example}: {exc}") from None
    for text in sets:
        result = overlay(result, assignment(text))
    return result


def config(args: argparse.Namespace) -> int:
    result = overlaid(args.example, args.overlays, args.set)
    sys.stdout.write(yaml.safe_dump(result, sort_keys=False))
    return 0


def initial(args: argparse.Namespace) -> int:
    sinks = overlaid(args.example, [args.overlay])["sinks"]
    found = [i for i, s in enumerate(sinks) if s.get("name") == args.sink]
    if not found:
        raise OverlayError(f"{args.overlay} over {args.example}: no sink named {args.sink!r}")
    sink = build_sink(sinks[found[0]], f"sinks[{found[0]}]")
    dest = sink.files.dest  # type: ignore[attr-defined]
    if not dest.exists():
        dest.write_text(sink.render({}))  # type: ignore[attr-defined]
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agrajag-container", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("config", help="an example with an overlay, to stdout")
    conf.add_argument("example")
    conf.add_argument("overlays", nargs="+", metavar="overlay")
    conf.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    conf.set_defaults(run=config)
    init = sub.add_parser("initial", help="render a sink's file with no master, if absent")
    init.add_argument("example")
    init.add_argument("overlay")
    init.add_argument("sink")
    init.set_defaults(run=initial)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (OverlayError, AgrajagError, OSError, yaml.YAMLError) as exc:
        print(f"agrajag-container {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
