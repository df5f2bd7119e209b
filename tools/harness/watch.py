"""`agrajag watch` run for real from conf.d's example, and a kazoo client playing the daemon."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from agrajag.record import MasterRecord, WatcherAck
from agrajag.registry.client import Registry
from agrajag.zookeeper_settings import Role
from tools.harness.identities import identity_settings, kazoo_auth, secure_example
from tools.harness.procs import LOCAL, Host, Proc, free_port
from tools.harness.shipped import AGRAJAG, CONF_D, example

ROOT = "/agrajag"


def example_sinks(home: Path) -> dict[str, dict[str, Any]]:
    """The example's sinks by type, rendering conf.d's templates into `home`, without the
    template sink's reload command (there is no app to reload here)."""
    sinks = {}
    for sink in example("watch.example.yaml")["sinks"]:
        key = "src" if sink["type"] == "template" else "template"
        sink[key] = str(CONF_D / Path(sink[key]).name)
        sink["dest"] = str(home / Path(sink["dest"]).name)
        sink.pop("reload_cmd", None)
        sinks[sink["type"]] = sink
    return sinks


class WatchProc:
    """One `agrajag watch` process in `home`, with conf.d/watch.example.yaml's settings
    except where a test has to differ: ZooKeeper, agent, paths, timings; and by default only
    the example's template sink (conf.d/primary.env.j2 into `dest`). It runs on `host`."""

    def __init__(
        self,
        home: Path,
        zk_hosts: str,
        *,
        agent: str = "app1",
        tls: dict[str, str] | None = None,
        host: Host = LOCAL,
        **overrides: Any,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.agent = agent
        self.state_file = home / "watch-state.json"
        self.log = home / "watch.log"
        template_sink = example_sinks(home)["template"]
        self.dest = Path(template_sink["dest"])
        conf = example("watch.example.yaml")
        conf["sinks"] = [template_sink]
        conf.update(agent=agent, state_file=str(self.state_file), reconcile_interval_s=1)
        conf.update(start_wait_s=1)
        conf["zookeeper"].update(hosts=zk_hosts, session_timeout_s=4, call_timeout_s=1)
        conf["zookeeper"].update(overrides.pop("zookeeper", {}))  # a test's timings, say
        secure_example(conf["zookeeper"], home, Role.WATCHER, tls=tls)
        self.metrics_port = free_port()
        conf["metrics"] = {"address": "127.0.0.1", "port": self.metrics_port}
        conf["retry_backoff"] = {"initial_s": 0.2, "max_s": 1}
        conf.update(overrides)
        self.config = home / "watch.yaml"
        self.config.write_text(yaml.safe_dump(conf))
        self.proc = Proc(
            f"agrajag-watch-{agent}",
            [AGRAJAG, "--log-level", "DEBUG", "watch", "--config", str(self.config)],
            log=self.log,
            cwd=home,
            host=host,
        )

    def start(self) -> WatchProc:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def routed_to(self) -> tuple[str, int, int] | None:
        """(host, port, epoch) of cluster main in conf.d/primary.env.j2's output; None when
        it names no master (or there is no file)."""
        if not self.dest.exists():
            return None
        env = dict(line.split("=", 1) for line in self.dest.read_text().splitlines() if "=" in line)
        if not env.get("MAIN_PRIMARY_HOST"):
            return None
        return (
            env["MAIN_PRIMARY_HOST"],
            int(env["MAIN_PRIMARY_PORT"]),
            int(env["MAIN_PRIMARY_EPOCH"]),
        )


class Publisher:
    """Writes master znodes as the daemon would (and as an attacker might), reads acks."""

    def __init__(self, hosts: str) -> None:
        self.client = KazooClient(hosts=hosts, timeout=4, auth_data=kazoo_auth(Role.DAEMON))
        self.client.start(timeout=20)
        self.registry = Registry.connect(identity_settings(hosts), Role.DAEMON, start_timeout=20)
        self.laid_out: set[str] = set()

    def write(self, data: bytes | MasterRecord, cluster: str = "main") -> int:
        """Set the master znode; returns its new version."""
        raw = data.to_json() if isinstance(data, MasterRecord) else data
        if cluster not in self.laid_out:  # as the daemons do: watchers/ with its ACL
            self.registry.ensure_layout(cluster)
            self.laid_out.add(cluster)
        path = f"{ROOT}/{cluster}/master"
        retry = self.client.retry
        if retry(self.client.exists, path) is None:
            retry(self.client.create, path, raw, makepath=True)
            return 0
        return int(retry(self.client.set, path, raw).version)

    def ack(self, agent: str, cluster: str = "main") -> WatcherAck | None:
        path = f"{ROOT}/{cluster}/watchers/{agent}"
        try:
            data, _ = self.client.retry(self.client.get, path)
        except NoNodeError:
            return None
        return WatcherAck.from_json(data, source=path)

    def ack_owner(self, agent: str, cluster: str = "main") -> int | None:
        """The ZooKeeper session that owns `watchers/<agent>`; None when there is none."""
        stat = self.client.retry(self.client.exists, f"{ROOT}/{cluster}/watchers/{agent}")
        return None if stat is None else int(stat.ephemeralOwner)

    def acked_epoch(self, agent: str, cluster: str = "main") -> int | None:
        ack = self.ack(agent, cluster)
        return None if ack is None else ack.applied_epoch

    def close(self) -> None:
        self.registry.close()
        self.client.stop()
        self.client.close()


class Backend:
    """A TCP server standing in for a primary: greets each client with its name, then holds
    the connection until the client (or a proxy cutting it) closes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        greeting = f"{self.name}\n".encode()

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    self.request.sendall(greeting)
                    while self.request.recv(1024):
                        pass

        return Greet

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def greeting(port: int, timeout: float = 5.0) -> tuple[socket.socket, str]:
    """Connect to 127.0.0.1:port and read the backend's name; the socket stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock, sock.recv(64).decode().strip()


def still_open(sock: socket.socket) -> bool:
    """No EOF nor reset within a moment: nobody has cut this session."""
    sock.settimeout(0.2)
    try:
        return sock.recv(64) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


class MasterWatch:
    """A DataWatch on the master znode: when it first names a node other than `old`.

    `first` is when this process was told (late when it is busy), `written_at` when
    ZooKeeper wrote the record (its mtime, milliseconds), both on time.monotonic()'s clock:
    the server runs on this machine, so its wall clock is ours."""

    def __init__(self, client: KazooClient, path: str, old: str) -> None:
        self.old = old
        self.first: tuple[float, dict[str, Any]] | None = None
        self.written_at: float | None = None
        self.changed = threading.Event()
        client.DataWatch(path, self._on_data)

    def _on_data(self, data: bytes | None, stat: Any, event: Any = None) -> bool | None:
        at = time.monotonic()
        if not data:
            return None
        record = json.loads(data)
        if record.get("node") != self.old and self.first is None:
            self.first = (at, record)
            self.written_at = stat.mtime / 1e3 - (time.time() - time.monotonic())
            self.changed.set()
            return False  # stop watching: this cluster is done
        return None
