"""What every sink shares: the result and error types, settings parsing, and confd's pipeline.

A sink turns the master records into one configuration file and makes a program use it:
render (Jinja2) -> stage (a temp file beside the destination) -> check (the program's own
validator) -> swap (atomic rename) -> activate (reload, runtime API, session cuts). Unlike
confd it never ignores an error: when activation fails the old file is put back, the sink's
rollback runs, and a `SinkError` names the sink, step and file. Retrying is the watcher's job.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import jinja2

from agrajag.atomic import install, read_or_none, replace_file, stage
from agrajag.command import CommandError, run
from agrajag.config import Problems, Section
from agrajag.errors import AgrajagError
from agrajag.record import MasterRecord

T = TypeVar("T")

#: Keys every sink section accepts besides its own (`type` is read by `build_sink`).
COMMON_KEYS = frozenset({"type", "name", "dest", "clusters", "params", "mode", "timeout_s"})


class SinkError(AgrajagError):
    """A sink could not apply a configuration; says which sink, at which step, on which file.

    Steps: render, read, stage, check, swap (nothing changed yet), then runtime, reload, cut
    or activate (the old file was put back; the detail says if even that failed).
    `took_effect`: the program already routes by the new file and a later step failed; the
    file stays, and the next apply finishes the remaining steps.
    """

    def __init__(
        self, sink: str, step: str, path: Path | str, detail: str, *, took_effect: bool = False
    ) -> None:
        note = " (the new configuration is in use; the next try finishes)" if took_effect else ""
        super().__init__(f"sink {sink!r}: {step} {path}: {detail}{note}")
        self.sink = sink
        self.step = step
        self.path = str(path)
        self.detail = detail
        self.took_effect = took_effect


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one `apply` did. `action` is a stable name (it becomes a log field and label):
    `unchanged`, `written` (file only), `runtime` (HAProxy runtime API), `reload`, `cut`
    (the file was in place already: sessions a failed apply left uncut were cut).
    `cut_sessions` counts client sessions cut, None when the program does not say."""

    changed: bool
    action: str
    cut_sessions: int | None = None
    detail: str = ""


UNCHANGED = ApplyResult(changed=False, action="unchanged")


class Sink(Protocol):
    """Something that routes clients to the masters in `records` (cluster name -> record)."""

    name: str

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult: ...

    def resume(self, records: Mapping[str, MasterRecord]) -> None:
        """Told at start what this sink last fully applied (the watcher's state file)."""

    def render_only(self, records: Mapping[str, MasterRecord]) -> str:
        """First start: write the file the program starts with, without activating it."""
        ...


def section(data: Mapping[str, object], source: str) -> Section:
    """The config `Section` for one sink item; `source` is where it is, as the watcher says
    it ("watch.yaml: sinks[0]"), so that errors read "watch.yaml: sinks[0].template: ..."."""
    file, colon, where = source.rpartition(": ")
    return Section(data, file, f"{where}.") if colon else Section(data, source)


def path(s: Section, key: str, default: str | None = None) -> Path:
    value = Path(s.string(key) if default is None else s.string(key, default))
    if not value.is_absolute():
        raise s.error(key, f"must be an absolute path, got {str(value)!r}")
    return value


def existing_file(s: Section, key: str, default: str | None = None) -> Path:
    value = path(s, key, default)
    if not value.is_file():
        raise s.error(key, f"file not found: {value}")
    return value


def command(s: Section, key: str) -> tuple[str, ...] | None:
    """A command line split like a shell would (no shell runs it); its program must exist."""
    line = s.optional_string(key)
    if line is None:
        return None
    try:
        argv = tuple(shlex.split(line))
    except ValueError as exc:
        raise s.error(key, f"cannot split {line!r}: {exc}") from None
    if not argv or shutil.which(argv[0]) is None:
        raise s.error(key, f"command not found: {line!r}")
    return argv


def file_mode(s: Section, key: str) -> int | None:
    """A file mode: an int (YAML reads 0644 as octal) or an octal string such as "0640"."""
    value = s.data.get(key)
    if value is None:
        return None
    try:
        mode = value if type(value) is int else int(str(value), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise s.error(key, f"must be an octal file mode such as 0644, got {value!r}")
    return mode


def file_settings(s: Section, template_key: str) -> FileSettings:
    """The keys every sink has (see `FileSettings`); `template_key` names its template.
    Every problem at once (ConfigErrors)."""
    p = Problems()
    settings = FileSettings(
        name=p.read(lambda: s.name("name")),
        template=p.read(lambda: existing_file(s, template_key)),
        dest=p.read(lambda: _dest(s)),
        clusters=p.read(lambda: _clusters(s)),
        params=p.read(lambda: s.section("params", {}).data),
        mode=p.read(lambda: file_mode(s, "mode")),
        timeout_s=p.read(lambda: s.number("timeout_s", 10.0, minimum=0.1, maximum=3600)),
    )
    p.raise_any()
    return settings


def _dest(s: Section) -> Path:
    dest = path(s, "dest")
    if not dest.parent.is_dir():
        raise s.error("dest", f"directory not found: {dest.parent}")
    return dest


def _clusters(s: Section) -> frozenset[str] | None:
    return None if s.data.get("clusters") is None else frozenset(s.name_list("clusters"))


@dataclass(frozen=True, slots=True)
class FileSettings:
    """The keys every sink has: `name`, the template, `dest`, `clusters` (None: all the
    records given), `params` (free values for the template), `mode` (None: keep the
    existing file's, 0644 for a new file) and `timeout_s` (bounds every command and wait)."""

    name: str
    template: Path
    dest: Path
    clusters: frozenset[str] | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    mode: int | None = None
    timeout_s: float = 10.0


def template_context(
    records: Mapping[str, MasterRecord],
    clusters: frozenset[str] | None,
    params: Mapping[str, object],
) -> dict[str, object]:
    """What templates see: `clusters` {name: record as a dict, or None when that cluster has
    no master to route to (fail-closed, or its record withdrawn): render it without a
    server}, sorted by name, and `params`."""
    names = sorted(records if clusters is None else clusters)
    return {
        "clusters": {
            name: _record_dict(records[name]) if name in records else None for name in names
        },
        "params": params,
    }


def _record_dict(record: MasterRecord) -> dict[str, object]:
    keys = ("cluster", "epoch", "node", "node_id", "host", "port", "timeline")
    return {key: getattr(record, key) for key in keys}


@functools.cache
def _environment(directory: Path) -> jinja2.Environment:
    """One environment per template directory: it keeps compiled templates, and recompiles
    one whose file changed on disk."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: Path, context: Mapping[str, object]) -> str:
    """Render with StrictUndefined (a typo fails instead of writing an empty value); block
    tags take their line with them. Raises jinja2 errors and whatever template code raises."""
    return _environment(template.parent).get_template(template.name).render(context)


def template_location(exc: BaseException, template: Path) -> str:
    """Where in the template (file:line) an error from `render` comes from, as well as known.

    Jinja rewrites tracebacks so that template frames carry the template's file and line.
    """
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or template}:{exc.lineno}"
    frames = [
        (frame.f_code.co_filename, lineno)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename.startswith(str(template.parent) + os.sep)
    ]
    filename, lineno = frames[-1] if frames else (str(template), None)
    return f"{filename}:{lineno}" if lineno else filename


def wait_for(check: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T | None:
    """Poll `check` until it returns a value (not None) or `timeout` passes (then None).

    An OSError counts as "not yet": a program that is reloading refuses connections briefly.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value is not None:
                return value
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class FileSink(ABC):
    """The pipeline around one file; a product's sink says how to check and activate it.

    The sink remembers a file it swapped in but did not fully activate (`_unfinished`: that
    file and the last one it did activate): while the destination holds it and it is what
    the records render, an apply activates it again instead of calling it unchanged, so a
    watcher never acknowledges what the program does not run. `resume` sets it at start.
    """

    def __init__(self, files: FileSettings) -> None:
        self.name = files.name
        self.files = files
        self._unfinished: tuple[bytes | None, bytes | None] | None = None

    def resume(self, records: Mapping[str, MasterRecord]) -> None:
        """`records` is what this sink last fully applied (from the watcher's state file): a
        destination holding anything else was swapped in, maybe never activated."""
        try:
            activated = self.render(records).encode()
            on_disk = read_or_none(self.files.dest)
        except (SinkError, OSError):
            return  # the template changed or the file is unreadable: apply will say so
        self._unfinished = None if on_disk == activated else (on_disk, activated)

    def error(
        self, step: str, detail: str, path: Path | None = None, *, took_effect: bool = False
    ) -> SinkError:
        return SinkError(self.name, step, path or self.files.dest, detail, took_effect=took_effect)

    def render(self, records: Mapping[str, MasterRecord]) -> str:
        files = self.files
        context = template_context(records, files.clusters, files.params)
        try:
            return render(files.template, context)
        except Exception as exc:  # template code can raise anything; name where it did
            where = template_location(exc, files.template)
            raise SinkError(self.name, "render", where, f"{type(exc).__name__}: {exc}") from exc

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult:
        """Render, and unless the program already runs that text: stage, check, swap,
        activate. If activation fails before it took effect, the last activated file is put
        back and `rollback` runs; after (`took_effect`), the new file stays for the next try."""
        new_text = self.render(records)
        new = new_text.encode()
        try:
            on_disk = read_or_none(self.files.dest)
        except OSError as exc:
            raise self.error("read", str(exc)) from exc
        if on_disk == new:
            if self._unfinished is None or self._unfinished[0] != on_disk:
                return UNCHANGED
            activated = self._unfinished[1]
        else:
            activated = on_disk
            self._swap(new, new_text)  # raises with nothing changed
        self._unfinished = None
        try:
            return self.activate(_text(activated), new_text)
        except Exception as exc:  # whatever went wrong, the last good config must come back
            failure = exc if isinstance(exc, SinkError) else None
            failure = failure or self.error("activate", f"{type(exc).__name__}: {exc}")
            if failure.took_effect:
                self._unfinished = (new, activated)
            else:
                self._restore(activated, new, failure)
            if failure is exc:
                raise
            raise failure from exc

    def render_only(self, records: Mapping[str, MasterRecord]) -> str:
        """First start, before the program runs: render, check and write the file only if
        there is none (an existing one may be what the program runs: the watcher changes it,
        activating it), and create what the file expects (`prepare`). Says what it did."""
        new_text = self.render(records)
        dest = self.files.dest
        try:
            exists = dest.exists()
        except OSError as exc:
            raise self.error("read", str(exc)) from exc
        if not exists:
            self._swap(new_text.encode(), new_text)
        self.prepare(new_text)
        return f"{'kept the existing' if exists else 'wrote'} {dest}"

    def prepare(self, text: str) -> None:
        """Create what the program needs to start on `text` (nothing, unless a sink says)."""
        return

    @contextlib.contextmanager
    def took_effect(self) -> Iterator[None]:
        """Around the steps that follow the program's switch to the new file: their failure
        keeps the new file (putting the old one back would route back) for the next try."""
        try:
            yield
        except SinkError as exc:
            raise SinkError(exc.sink, exc.step, exc.path, exc.detail, took_effect=True) from exc

    def _swap(self, new: bytes, new_text: str) -> None:
        """Stage, check and install the new file; nothing has changed when this raises."""
        dest = self.files.dest
        try:
            path = stage(dest, new, self.files.mode)
        except OSError as exc:
            raise self.error("stage", str(exc)) from exc
        try:
            self.check(path, new_text)
            install(path, dest)
        except OSError as exc:
            raise self.error("swap", str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)

    def _restore(self, activated: bytes | None, new: bytes, failure: SinkError) -> None:
        """Put the last activated file back and roll back; if that fails too, say so in the
        error, and remember that the new file (if still there) was not activated."""
        try:
            replace_file(self.files.dest, activated, self.files.mode)
            self.rollback(_text(activated), new.decode())
        except (OSError, SinkError) as exc:
            self._unfinished = (new, activated)
            detail = f"{failure.detail}; then restoring the old configuration failed: {exc}"
            raise SinkError(failure.sink, failure.step, failure.path, detail) from exc

    def check_command(self, argv: Sequence[str], staged_path: Path) -> None:
        """Run a validator on the staged file; failure raises SinkError quoting its stderr."""
        try:
            run(argv, timeout=self.files.timeout_s)
        except CommandError as exc:
            raise self.error("check", str(exc), staged_path) from None

    @abstractmethod
    def check(self, staged_path: Path, text: str) -> None:
        """Validate the staged file (it is not in place yet); raise SinkError to refuse it."""

    @abstractmethod
    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        """Make the program use the swapped-in file; raise SinkError on failure."""

    @abstractmethod
    def rollback(self, old_text: str | None, new_text: str) -> None:
        """Make the program use the restored old file again (None: there was no file)."""


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")
