"""`agrajag check-config FILE`: everything the daemon or the watcher would refuse, at once.

The kind of file is told by its keys. A daemon config is loaded as `agrajag daemon` loads
it; once it loads, the programs and files it names are looked for. A watcher config is loaded as
`agrajag watch` loads it (its sinks built: templates, destination directories, commands);
then every sink renders its template with a sample master for each cluster, and with no
master at all (fail-closed, a cluster not yet published), into a staged copy in a temporary
directory, and runs its check on it (`haproxy -c -f`, `check_cmd`): the destination is
never touched. (The case with no master is tried only when the sample passes: one problem
of a template is reported once.) Every problem is listed, each naming the file and the key.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from agrajag.config import Problems, Section, load_yaml
from agrajag.daemon import settings as daemon_settings
from agrajag.daemon.settings import DaemonSettings
from agrajag.errors import ConfigError
from agrajag.record import MasterRecord, is_plain_name, utc_now
from agrajag.sinks import build_sink
from agrajag.sinks.base import FileSink, SinkError
from agrajag.watch import settings as watch_settings
from agrajag.watch.settings import WatchConfig

#: The master every template is rendered with (192.0.2.0/24 is for documentation).
SAMPLE_HOST, SAMPLE_PORT = "192.0.2.10", 5432
PROBLEMS_FOUND = 1


def run_check_config(path: str) -> int:
    """Print every problem (exit 1) or what was checked (exit 0)."""
    problems = Problems()
    checked = problems.read(partial(check, path), "")
    for problem in problems.found:
        print(problem, file=sys.stderr)
    if problems.found:
        count = len(problems.found)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        return PROBLEMS_FOUND
    print(f"{path}: OK ({checked})")
    return 0


def check(path: str) -> str:
    """What was checked; ConfigError(s) naming every problem."""
    s = load_yaml(path)
    kind = kind_of(s)
    return check_daemon(s) if kind == "daemon" else check_watch(s)


def kind_of(s: Section) -> str:
    """`daemon` or `watch`, by the keys only one of them has."""
    daemon = s.keys() & (daemon_settings.KEYS - watch_settings.KEYS)
    watch = s.keys() & (watch_settings.KEYS - daemon_settings.KEYS)
    if len(daemon) != len(watch):
        return "daemon" if len(daemon) > len(watch) else "watch"
    raise ConfigError(
        f"{s.source}: cannot tell a daemon config (cluster, node, repmgr, check, ...) from a "
        "watcher config (clusters, sinks, fail_mode, ...) by its keys"
    )


def check_daemon(s: Section) -> str:
    settings = DaemonSettings.load(s.source)
    p = Problems()
    p.read(partial(_executable, s, "repmgr.bin", settings.repmgr.bin))
    p.read(partial(_readable, s, "repmgr.config", settings.repmgr.config))
    if settings.check.credentials.passfile:
        p.read(partial(_readable, s, "check.passfile", settings.check.credentials.passfile))
    p.raise_any()
    return f"daemon config of node {settings.node} in cluster {settings.cluster}"


def _executable(s: Section, key: str, value: str) -> None:
    if not (os.path.isfile(value) and os.access(value, os.X_OK)):
        raise s.error(key, f"not an executable file: {value}")


def _readable(s: Section, key: str, value: str) -> None:
    if not os.path.isfile(value):
        raise s.error(key, f"file not found: {value}")
    if not os.access(value, os.R_OK):
        raise s.error(key, f"not readable by this user (uid {os.getuid()}): {value}")


def check_watch(s: Section) -> str:
    p = Problems()
    p.read(partial(WatchConfig.load, s.source))
    clusters = _named_clusters(s)
    sinks = list(_buildable_sinks(s))
    for where, sink in sinks:
        p.read(partial(check_sink, where, sink, clusters))
    p.raise_any()
    return f"watcher config, {len(sinks)} sinks rendered and checked"


def _named_clusters(s: Section) -> list[str]:
    raw = s.data.get("clusters")
    return (
        [c for c in raw if isinstance(c, str) and is_plain_name(c)] if isinstance(raw, list) else []
    )


def _buildable_sinks(s: Section) -> Iterator[tuple[str, FileSink]]:
    """The sinks that can be built (the others' problems come from loading the config)."""
    items = s.data.get("sinks")
    for i, item in enumerate(items if isinstance(items, list) else []):
        where = f"{s.source}: sinks[{i}]"
        try:
            sink = build_sink(item, where) if isinstance(item, Mapping) else None
        except ConfigError:
            continue
        if isinstance(sink, FileSink):
            yield where, sink


def sample_records(clusters: list[str]) -> dict[str, MasterRecord]:
    return {
        name: MasterRecord(
            cluster=name,
            epoch=1,
            node_id=1,
            node="sample",
            host=SAMPLE_HOST,
            port=SAMPLE_PORT,
            timeline=1,
            published_by="check-config",
            published_at=utc_now(),
        )
        for name in clusters
    }


def check_sink(where: str, sink: FileSink, clusters: list[str]) -> None:
    """Render and check with a sample master for every cluster; if that passes, with none."""
    with tempfile.TemporaryDirectory(prefix="agrajag-check-") as tmp:
        staged = Path(tmp) / sink.files.dest.name
        _render_and_check(where, sink, sample_records(clusters), "a sample master", staged)
        _render_and_check(where, sink, {}, "no master", staged)


def _render_and_check(
    where: str, sink: FileSink, records: dict[str, MasterRecord], case: str, staged: Path
) -> None:
    try:
        text = sink.render(records)
        staged.write_text(text)
        sink.check(staged, text)
    except SinkError as exc:
        step = f"render {exc.path}" if exc.step == "render" else exc.step
        raise ConfigError(f"{where} ({sink.name}), with {case}: {step}: {exc.detail}") from None
