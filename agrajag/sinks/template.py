"""The confd-style sink: any template, an optional check command and reload command.

YAML (one item of `sinks:` in watch.yaml)::

    - type: template
      name: app-env                      # plain name; shown in logs, metrics and acks
      src: /etc/agrajag/app.env.j2       # Jinja2 template (absolute path)
      dest: /etc/app/db.env              # the file it becomes (absolute path)
      check_cmd: /usr/local/bin/check-env {staged}   # optional; {staged}: the staged file
      reload_cmd: systemctl reload app   # optional; run after the swap
      mode: 0640                         # optional; default: keep dest's mode (0644 if new)
      clusters: [main]                   # optional; default: every cluster the watcher follows
      params: {}                         # optional; free values, `params` in the template
      timeout_s: 10                      # optional; bounds check_cmd and reload_cmd

Commands are split like a shell would split them, and run without a shell. If `reload_cmd`
fails the old file is put back (the reload is not run again: the program did not take the
new file, so it still runs the old one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agrajag.command import CommandError, run
from agrajag.config import Problems
from agrajag.sinks.base import (
    COMMON_KEYS,
    ApplyResult,
    FileSettings,
    FileSink,
    command,
    file_settings,
    section,
)

STAGED = "{staged}"


@dataclass(frozen=True, slots=True)
class Settings:
    files: FileSettings
    check_cmd: tuple[str, ...] | None = None
    reload_cmd: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> Settings:
        s = section(data, source)
        p = Problems()
        p.read(lambda: s.reject_unknown({*COMMON_KEYS, "src", "check_cmd", "reload_cmd"}))
        settings = cls(
            files=p.read(lambda: file_settings(s, "src")),
            check_cmd=p.read(lambda: command(s, "check_cmd")),
            reload_cmd=p.read(lambda: command(s, "reload_cmd")),
        )
        p.raise_any()
        return settings


class TemplateSink(FileSink):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.files)
        self.settings = settings

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str) -> TemplateSink:
        return cls(Settings.from_mapping(data, source))

    def check(self, staged_path: Path, text: str) -> None:
        if self.settings.check_cmd:
            argv = [arg.replace(STAGED, str(staged_path)) for arg in self.settings.check_cmd]
            self.check_command(argv, staged_path)

    def activate(self, old_text: str | None, new_text: str) -> ApplyResult:
        if not self.settings.reload_cmd:
            return ApplyResult(changed=True, action="written")
        try:
            run(self.settings.reload_cmd, timeout=self.files.timeout_s)
        except CommandError as exc:
            raise self.error("reload", str(exc)) from None
        return ApplyResult(changed=True, action="reload")

    def rollback(self, old_text: str | None, new_text: str) -> None:
        """Nothing beyond the restored file: a failed reload left the program on the old one."""
