"""Start, signal and reap the real processes the tests depend on, and remember them all."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

IS_ROOT = os.geteuid() == 0
#: PostgreSQL and PgBouncer refuse to run as root: under root they run as this user.
SERVICE_USER = "postgres" if IS_ROOT else None

#: Every process and port the harness started or handed out, for the end-of-session leak check.
STARTED: list[Proc] = []
PORTS: set[int] = set()
ENDPOINTS: set[tuple[str, int]] = set()  # (loopback address other than 127.0.0.1, port)
DIRS: list[Path] = []


@dataclass(frozen=True)
class Host:
    """Where a process runs: the address its servers bind and its peers reach it at, the
    network those peers come from, and the command prefixes that put a command there (as
    root, and as the service user). This machine's loopback by default (127.0.0.1, or another
    127.x address: `free_loopback_host`); a network namespace (`tools.harness.netns`) is
    another host, with an `ip netns exec` prefix."""

    address: str = "127.0.0.1"
    network: str = "127.0.0.0/8"
    prefix: tuple[str, ...] = ()
    service_prefix: tuple[str, ...] = ()

    def command(self, argv: Sequence[str], *, service: bool) -> tuple[list[str], dict[str, Any]]:
        """argv as run on this host (as the service user if `service`), and the Popen
        keywords that go with it."""
        if not self.prefix:
            return list(argv), (as_service_user() if service else {})
        return [*(self.service_prefix if service else self.prefix), *argv], {}


LOCAL = Host()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now and that this session has not handed out."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in PORTS:
            PORTS.add(port)
            return port


def free_loopback_host(port: int) -> Host:
    """A host at an address of 127.0.0.0/8 other than 127.0.0.1 on which nobody listens on
    `port` now (Linux answers on the whole /8 without setup): for servers that must share one
    port."""
    while True:
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        if (host, port) not in ENDPOINTS:
            ENDPOINTS.add((host, port))
            return Host(host)


def loopback_hosts(count: int, port: int = 5432) -> list[Host]:
    """`count` hosts, each at its own 127.x address where `port` is free (`free_loopback_host`)."""
    return [free_loopback_host(port) for _ in range(count)]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def service_dir(prefix: str) -> Path:
    """A fresh directory the service user owns and can reach (pytest's tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=f"agrajag-{prefix}-"))
    path.chmod(0o755)
    if SERVICE_USER:
        pw = pwd.getpwnam(SERVICE_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    DIRS.append(path)
    return path


def as_service_user() -> dict[str, Any]:
    """Popen keywords that run a command as the service user when we are root."""
    if not SERVICE_USER:
        return {}
    return {"user": SERVICE_USER, "group": SERVICE_USER, "extra_groups": []}


def service_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_service(
    argv: Sequence[str],
    home: Path,
    timeout: float = 120,
    host: Host = LOCAL,
    ok: Sequence[int] = (0,),
) -> str:
    """Run a command to completion on `host` as the service user; an exit code not in `ok`
    raises, with its output."""
    command, user = host.command(argv, service=True)
    proc = subprocess.run(
        command,
        cwd=home,
        env=service_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **user,
    )
    if proc.returncode not in ok:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return str(proc.stdout)


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll check() until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a service that is still starting refuses connections
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
            )
        time.sleep(interval)


class Proc:
    """A long-running child process in its own session, with a log file and signal helpers."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        service: bool = False,
        host: Host = LOCAL,
    ) -> None:
        """`service`: run as the service user; `host`: where (this machine's by default)."""
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.cwd = cwd
        self.env = env
        self.service = service
        self.host = host
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        command, extra = self.host.command(self.argv, service=self.service)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **extra,
            )
        STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps."""
        if not self.alive():
            return
        assert self.popen is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def signal_tree(pid: int, sig: int) -> None:
    """Signal a process and all its descendants (PostgreSQL backends live under the postmaster)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def write_service_file(path: Path, text: str) -> None:
    """Write a file the service user owns (repmgr and PgBouncer read their own files)."""
    path.write_text(text)
    if SERVICE_USER:
        pw = pwd.getpwnam(SERVICE_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
