"""What every sink shares: the result and error types, settings parsing, and confd's pipeline.

A sink turns the master records into one configuration file and makes a program use it:
render (Jinja2) -> stage (a temp file beside the destination) -> check (the program's own
validator) -> swap (atomic rename) -> activate (reload, runtime API, session cuts). Unlike
confd it never ignores an error: when activation fails the old file is put back, the sink's
rollback runs, and a `SinkError` names the sink, step and file. Retrying is the watcher's job.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import jinja2

from agrajag.command import CommandError, run
from agrajag.config import Section
from agrajag.errors import AgrajagError
from agrajag.record import MasterRecord, is_plain_name

T = TypeVar("T")

#: Keys every sink section accepts besides its own (`type` is read by `build_sink`).
COMMON_KEYS = frozenset({"type", "name", "dest", "clusters", "params", "mode", "timeout_s"})


class SinkError(AgrajagError):
    """A sink could not apply a configuration; says which sink, at which step, on which file.

    Steps: render, read, stage, check, swap (nothing changed yet), then runtime, reload, cut
    or activate (the old file was put back; the detail says if even that failed).
    """

    def __init__(self, sink: str, step: str, path: Path | str, detail: str) -> None:
        super().__init__(f"sink {sink!r}: {step} {path}: {detail}")
        self.sink = sink
        self.step = step
        self.path = str(path)
        self.detail = detail


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
    """The keys every sink has (see `FileSettings`); `template_key` names its template."""
    name = s.name("name")
    template = existing_file(s, template_key)
    dest = path(s, "dest")
    if not dest.parent.is_dir():
        raise s.error("dest", f"directory not found: {dest.parent}")
    clusters = None if s.data.get("clusters") is None else s.string_list("clusters")
    for i, cluster in enumerate(clusters or ()):
        if not is_plain_name(cluster):
            raise s.error(f"clusters[{i}]", f"must be a plain name, got {cluster!r}")
    return FileSettings(
        name=name,
        template=template,
        dest=dest,
        clusters=None if clusters is None else frozenset(clusters),
        params=s.section("params", {}).data,
        mode=file_mode(s, "mode"),
        timeout_s=s.number("timeout_s", 10.0, minimum=0.1, maximum=3600),
    )


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
    no master to route to (render it without a server)}, sorted by name, and `params`."""
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


def stage(dest: Path, data: bytes, mode: int | None) -> Path:
    """Write `data` to a new temp file beside `dest` (same directory, so the rename is atomic)
    with `dest`'s mode and owner, and return its path; the caller removes or renames it."""
    like = _stat_or_none(dest)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".staged")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        path.chmod(mode if mode is not None else (like.st_mode & 0o7777 if like else 0o644))
        if like and (like.st_uid, like.st_gid) != _owner(path):
            os.chown(path, like.st_uid, like.st_gid)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def replace_file(dest: Path, data: bytes | None, mode: int | None = None) -> None:
    """Atomically make `dest` hold `data` (None: no file at all)."""
    if data is None:
        dest.unlink(missing_ok=True)
        return
    path = stage(dest, data, mode)
    try:
        os.replace(path, dest)
    finally:
        path.unlink(missing_ok=True)


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
    """The pipeline around one file; a product's sink says how to check and activate it."""

    def __init__(self, files: FileSettings) -> None:
        self.name = files.name
        self.files = files

    def error(self, step: str, detail: str, path: Path | None = None) -> SinkError:
        return SinkError(self.name, step, path or self.files.dest, detail)

    def render(self, records: Mapping[str, MasterRecord]) -> str:
        files = self.files
        context = template_context(records, files.clusters, files.params)
        try:
            return render(files.template, context)
        except Exception as exc:  # template code can raise anything; name where it did
            where = template_location(exc, files.template)
            raise SinkError(self.name, "render", where, f"{type(exc).__name__}: {exc}") from exc

    def apply(self, records: Mapping[str, MasterRecord]) -> ApplyResult:
        """Render, and when the text differs from the file: stage, check, swap, activate.
        If activation fails, the old file is put back and `rollback` runs."""
        new_text = self.render(records)
        new = new_text.encode()
        dest = self.files.dest
        try:
            old = read_or_none(dest)
        except OSError as exc:
            raise self.error("read", str(exc)) from exc
        if old == new:
            return UNCHANGED
        old_text = None if old is None else old.decode(errors="replace")
        try:
            path = stage(dest, new, self.files.mode)
        except OSError as exc:
            raise self.error("stage", str(exc)) from exc
        try:
            self.check(path, new_text)
            os.replace(path, dest)
        except OSError as exc:
            raise self.error("swap", str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)
        try:
            return self.activate(old_text, new_text)
        except SinkError as exc:
            self._restore(old, new_text, exc)
            raise
        except Exception as exc:  # whatever went wrong, the last good config must come back
            failure = self.error("activate", f"{type(exc).__name__}: {exc}")
            self._restore(old, new_text, failure)
            raise failure from exc

    def _restore(self, old: bytes | None, new_text: str, failure: SinkError) -> None:
        """Put the old file back and roll back; if that fails too, say so in the error."""
        try:
            replace_file(self.files.dest, old, self.files.mode)
            self.rollback(None if old is None else old.decode(errors="replace"), new_text)
        except (OSError, SinkError) as exc:
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
