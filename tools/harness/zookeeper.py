"""ZooKeeper 3.8 from Debian's package, standalone or as a 3-server ensemble, on 127.0.0.1 or
each server on a host of its own (`procs.Host`)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from tools.harness.procs import LOCAL, Host, Proc, free_port, service_dir, wait_until
from tools.harness.tls import Pki

#: Debian's zookeeper.jar names its dependencies in its manifest but not netty-codec, which
#: the Netty connection factory (TLS) needs.
CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/netty-codec.jar"
TICK_MS = 500  # sessions may then last 1 s to 10 s (the server clamps to [2, 20] ticks)


def four_letter(
    port: int,
    word: str,
    timeout: float = 1.0,
    pki: Pki | None = None,
    address: str = LOCAL.address,
) -> str:
    """Ask the ZooKeeper server at address:port a four-letter word (`ruok`, `srvr`, `mntr`),
    over TLS with `pki`'s client certificate when given."""
    with socket.create_connection((address, port), timeout=timeout) as raw:
        s = raw
        if pki:
            context = ssl.create_default_context(cafile=pki.ca)
            context.load_cert_chain(pki.cert("client"), pki.key("client"))
            s = context.wrap_socket(raw, server_hostname=address)
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
        pki: Pki | None = None,
        *,
        hosts: dict[int, Host] | None = None,
    ):
        """`peers` maps each member's id to its quorum and election ports, `hosts` to the
        host it runs on (default: all on this machine's 127.0.0.1)."""
        self.myid = myid
        self.pki = pki
        where = hosts or {}
        self.host = where.get(myid, LOCAL)
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
            *_listen(self.host.address, self.port, pki),
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,stat,mntr,srvr",
            "maxClientCnxns=0",
            "globalOutstandingLimit=10000",
        ]
        if peers:
            (self.dir / "data" / "myid").write_text(f"{myid}\n")
            lines += [
                f"server.{i}={where.get(i, LOCAL).address}:{q}:{e}"
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
            info = four_letter(self.port, "srvr", pki=self.pki, address=self.host.address)
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


def _listen(address: str, port: int, pki: Pki | None) -> list[str]:
    """Plaintext on address:port, or with `pki` TLS only: Netty, PEM key and trust stores,
    client certificates required."""
    if pki is None:
        return [f"clientPort={port}", f"clientPortAddress={address}"]
    return [
        f"secureClientPort={port}",
        f"secureClientPortAddress={address}",
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        f"ssl.keyStore.location={pki.keystore('server')}",
        "ssl.keyStore.type=PEM",
        f"ssl.trustStore.location={pki.ca}",
        "ssl.trustStore.type=PEM",
        "ssl.clientAuth=need",
    ]


class ZkEnsemble:
    """N ZooKeeper servers forming one ensemble; each can be stopped, killed, frozen, resumed.
    With `pki` they accept TLS only (standalone only: the quorum itself stays plaintext).
    `hosts` puts server i on hosts[i - 1] (default: all on this machine's 127.0.0.1)."""

    def __init__(self, size: int = 3, pki: Pki | None = None, hosts: Sequence[Host] = ()):
        base = service_dir("zk")
        peers = {i: (free_port(), free_port()) for i in range(1, size + 1)}
        where = dict(enumerate(hosts, start=1))
        self.servers = [
            ZkServer(base, i, peers if size > 1 else None, pki, hosts=where)
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
