"""Replacing a file so that a crash or a power cut leaves the old one or the new one, whole.

The data goes to a temp file beside the destination (same directory, so the rename is atomic),
which is fsynced, takes the destination's mode and owner, and is renamed over it; then the
directory is fsynced so the rename itself is durable. Used by every sink and the state file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def stage(dest: Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to a new temp file beside `dest`, fsynced, with `mode` (None: `dest`'s,
    0644 for a new file) and `dest`'s owner; the caller installs or removes it."""
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


def install(staged: Path, dest: Path) -> None:
    """Rename a staged file over `dest` and make the rename durable."""
    os.replace(staged, dest)
    fsync_directory(dest.parent)


def replace_file(dest: Path, data: bytes | None, mode: int | None = None) -> None:
    """Atomically and durably make `dest` hold `data` (None: no file at all)."""
    if data is None:
        if _stat_or_none(dest) is not None:
            dest.unlink(missing_ok=True)
            fsync_directory(dest.parent)
        return
    path = stage(dest, data, mode)
    try:
        install(path, dest)
    finally:
        path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
