"""Running another program: no shell, stdin closed, a deadline, stdout and stderr apart.

repmgr, `haproxy -c` and a template's check and reload commands all go through `run`, so
every failure reads the same way: the command line, what went wrong, its stderr quoted.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Collection, Mapping, Sequence

from agrajag.errors import AgrajagError

QUOTE_LIMIT = 2000


class CommandError(AgrajagError):
    """A program could not be run, did not finish in time, or exited with a code not accepted."""


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    accept: Collection[int] = (0,),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion within `timeout` seconds; exit codes outside `accept` raise.

    >>> run(["true"], timeout=5).returncode
    0
    >>> run(["sh", "-c", "echo oops >&2; exit 3"], timeout=5)
    Traceback (most recent call last):
    ...
    agrajag.command.CommandError: sh -c 'echo oops >&2; exit 3': exit code 3; stderr: 'oops'
    """
    command = shlex.join(argv)
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=None if env is None else dict(env),
            encoding="utf-8",
            errors="replace",
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            f"{command}: no answer within {timeout:g} s; stderr: {quote(exc.stderr)}"
        ) from None
    except OSError as exc:
        raise CommandError(f"{command}: cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    if done.returncode not in accept:
        outcome = (
            f"killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exit code {done.returncode}"
        )
        raise CommandError(f"{command}: {outcome}; stderr: {quote(done.stderr or done.stdout)}")
    return done


def quote(output: str | bytes | None) -> str:
    """A program's output, trimmed and quoted on one line for a log message."""
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    text = (output or "").strip()
    if len(text) > QUOTE_LIMIT:
        text = text[:QUOTE_LIMIT] + "..."
    return repr(text)
