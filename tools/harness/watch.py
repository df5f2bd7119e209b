"""`agrajag watch` run for real from conf.d's example, and a kazoo client playing the daemon."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from agrajag.record import MasterRecord, WatcherAck
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


def master(
    epoch: int,
    node: int = 1,
    *,
    host: str | None = None,
    port: int = 5432,
    cluster: str = "main",
) -> MasterRecord:
    return MasterRecord(
        cluster=cluster,
        epoch=epoch,
        node_id=node,
        node=f"node{node}",
        host=host or f"10.0.0.{node}",
        port=port,
        timeline=1,
        published_by="test",
        published_at="2026-11-22T00:00:00.000Z",
    )


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
        conf["zookeeper"].update(hosts=zk_hosts, session_timeout_s=4, call_timeout_s=1)
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
        self.client = KazooClient(hosts=hosts, timeout=4)
        self.client.start(timeout=20)

    def write(self, data: bytes | MasterRecord, cluster: str = "main") -> int:
        """Set the master znode; returns its new version."""
        raw = data.to_json() if isinstance(data, MasterRecord) else data
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

    def acked_epoch(self, agent: str, cluster: str = "main") -> int | None:
        ack = self.ack(agent, cluster)
        return None if ack is None else ack.applied_epoch

    def close(self) -> None:
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
