"""ZooKeeper 3.8 from Debian's package, standalone or as a 3-server ensemble, on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from tools.harness.procs import LOCAL, Host, Proc, free_port, service_dir, wait_until

CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
TICK_MS = 500  # sessions may then last 1 s to 10 s (the server clamps to [2, 20] ticks)


def four_letter(port: int, word: str, timeout: float = 1.0, address: str = "127.0.0.1") -> str:
    """Ask a ZooKeeper server a four-letter word (`ruok`, `srvr`, `mntr`)."""
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class ZkServer:
    """One ZooKeeper server process; a member of an ensemble when `peers` is given."""

    def __init__(
        self,
        base: Path,
        myid: int = 1,
        peers: dict[int, tuple[int, int]] | None = None,
        *,
        host: Host = LOCAL,
        peer_addresses: dict[int, str] | None = None,
    ):
        """`peers` maps each member's id to its quorum and election ports, `peer_addresses`
        to its address (default: all on 127.0.0.1); this server binds `host.address`."""
        self.myid = myid
        self.host = host
        self.dir = base / f"zk{myid}"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        self.port = free_port()
        self.peers = peers
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={self.dir / 'data'}",
            f"clientPort={self.port}",
            f"clientPortAddress={host.address}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,stat,mntr,srvr",
            "maxClientCnxns=0",
            "globalOutstandingLimit=10000",
        ]
        if peers:
            (self.dir / "data" / "myid").write_text(f"{myid}\n")
            where = peer_addresses or {}
            lines += [
                f"server.{i}={where.get(i, '127.0.0.1')}:{q}:{e}"
                for i, (q, e) in sorted(peers.items())
            ]
        self.cfg = self.dir / "zoo.cfg"
        self.cfg.write_text("\n".join(lines) + "\n")
        self.proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{self.port}"

    def start(self) -> None:
        argv = [
            "java",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dzookeeper.log.dir={self.dir}",
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            "-cp",
            CLASSPATH,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.cfg),
        ]
        self.proc = Proc(
            f"zookeeper-{self.myid}",
            argv,
            log=self.dir / "zookeeper.log",
            cwd=self.dir,
            host=self.host,
        )
        self.proc.start()

    def serving(self) -> bool:
        """True when the server answers client requests (standalone, leader or follower)."""
        try:
            info = four_letter(self.port, "srvr", address=self.host.address)
        except OSError:
            return False
        return "Mode: standalone" in info or "Mode: leader" in info or "Mode: follower" in info

    def wait_serving(self, timeout: float = 30) -> None:
        wait_until(self.serving, timeout=timeout, what=f"ZooKeeper {self.address} to serve")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()

    def freeze(self) -> None:
        assert self.proc
        self.proc.freeze()

    def resume(self) -> None:
        assert self.proc
        self.proc.resume()


class ZkEnsemble:
    """N ZooKeeper servers forming one ensemble; each can be stopped, killed, frozen, resumed."""

    def __init__(self, size: int = 3, hosts: Sequence[Host] = ()):
        """`hosts` puts server i on hosts[i] (default: all on loopback)."""
        base = service_dir("zk")
        peers = {i: (free_port(), free_port()) for i in range(1, size + 1)}
        where = {i: hosts[i - 1] if hosts else LOCAL for i in range(1, size + 1)}
        addresses = {i: h.address for i, h in where.items()}
        self.servers = [
            ZkServer(base, i, peers if size > 1 else None, host=where[i], peer_addresses=addresses)
            for i in range(1, size + 1)
        ]

    @property
    def hosts(self) -> str:
        """The kazoo / ZooKeeper connect string."""
        return ",".join(s.address for s in self.servers)

    def start(self, timeout: float = 60) -> ZkEnsemble:
        for server in self.servers:
            server.start()
        for server in self.servers:
            server.wait_serving(timeout)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def serving(self) -> list[ZkServer]:
        return [s for s in self.servers if s.serving()]
