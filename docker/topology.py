"""Build agrajag's Docker topology (docker/compose.yaml), fail it over, tear it down.

    python docker/topology.py build     the base image if missing, the wheels, the images
    python docker/topology.py test      build, then per run: up, failover, checks, down
    python docker/topology.py down      remove the topology (containers, networks, volumes)

The engine is DOCKER_HOST's or the local socket's (the docker SDK); as root, with no engine
running, `test` starts `dockerd` and stops it at the end. No registry is needed: the base
image is Debian 12 from debootstrap (the mirror apt uses), imported into the engine, and
Python wheels are built here into docker/wheels/ for the offline install in the images, and
the topology's secrets into docker/secrets/, once (`make_secrets`), for compose's `secrets:`.
Containers, networks and volumes go up and down with Debian's docker-compose 1.29, so the
very file a user runs is the one tested; `test` removes at the end every image it made
(base included) unless --keep-images.

A `test` run: wait until clients through HAProxy and PgBouncer write on node1 and
Prometheus scrapes every daemon and watcher with the shipped rules loaded; start a writer
through each proxy; `docker kill` node1; both writers must reach the new primary, the one
published in ZooKeeper, Prometheus must see every watcher apply its epoch, every znode must
carry the ACL and a client with no identity get nothing. It prints
each step's timing, from the kill: the promotion (repmgr's event), the publication (the
master record) and each client's first write on the new primary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import docker
import yaml
from docker.errors import BuildError, DockerException, ImageNotFound
from docker.models.containers import Container

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COMPOSE_FILE = HERE / "compose.yaml"
WHEELS = HERE / "wheels"
SECRETS = HERE / "secrets"
#: The topology's passwords, by compose secret: two ZooKeeper identities, the INSERT
#: check's role, PgBouncer's admin console.
PASSWORDS = ("zookeeper-daemon", "zookeeper-watch", "check", "pgbouncer-admin")
#: TLS to ZooKeeper, from the topology's own CA: one server certificate naming every server
#: of the ensemble, and a client certificate per identity (the servers require one).
CERTIFICATES = {
    "zookeeper-server": "DNS:zk1,DNS:zk2,DNS:zk3",
    "zookeeper-daemon": None,
    "zookeeper-watch": None,
}
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
#: zookeeper.acl's lists: (ZooKeeper user, its password's secret).
IDENTITIES = {
    "daemons": ("agrajag-daemon", "zookeeper-daemon"),
    "watchers": ("agrajag-watch", "zookeeper-watch"),
}
ALERTS = REPO / "conf.d" / "agrajag-alerts.yml"
PROJECT = "agrajag"
BASE_IMAGE = "agrajag-base:bookworm"
SUITE = "bookworm"
PROXIES = {"haproxy": 5000, "pgbouncer": 6432}
JOBS = ("agrajag-daemon", "agrajag-watch")


class Failed(Exception):
    """A step of the topology did not do what it must; the message says which and why."""


class NoEngine(Failed):
    """No Docker engine answers (and none may be started here)."""


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# --- the base image -------------------------------------------------------------------


def apt_mirror(sources: dict[str, str], suite: str = SUITE) -> str | None:
    """The first Debian mirror apt fetches `suite` from, given apt's source files by name
    (one-line `*.list` and deb822 `*.sources`).

    >>> apt_mirror({"a.list": "# x\\ndeb [arch=amd64] http://m.example/debian bookworm main"})
    'http://m.example/debian'
    >>> apt_mirror({"d.sources": "Types: deb\\nURIs: http://d.example/debian\\nSuites: bookworm"})
    'http://d.example/debian'
    """
    for name, text in sources.items():
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (key.strip().lower(), value.split())
                    for key, _, value in (
                        line.partition(":")
                        for line in stanza.splitlines()
                        if line and not line.startswith(("#", " "))
                    )
                )
                if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
                    return fields["uris"][0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    return None


def system_mirror() -> str:
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    sources = {
        str(f): f.read_text() for f in files if f.suffix in (".list", ".sources") and f.is_file()
    }
    mirror = apt_mirror(sources)
    if mirror is None:
        raise Failed(f"no apt source for Debian {SUITE} in /etc/apt; give --mirror URL")
    return mirror


def make_base_image(client: docker.DockerClient, mirror: str) -> None:
    """Debian 12 (minbase) from `mirror`, imported as BASE_IMAGE; needs root and debootstrap."""
    if shutil.which("debootstrap") is None:
        raise Failed("debootstrap is not installed (apt-get install debootstrap)")
    say(f"making {BASE_IMAGE}: debootstrap --variant=minbase {SUITE} from {mirror}")
    with tempfile.TemporaryDirectory(prefix="agrajag-base-") as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # no .debs in the base; its package lists stay (the stages need no apt-get update)
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        repository, tag = BASE_IMAGE.split(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)


# --- building -------------------------------------------------------------------------


def compose_images() -> dict[str, str]:
    """{image: Dockerfile target} as docker/compose.yaml builds them."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {s["image"]: s["build"]["target"] for s in services.values() if "build" in s}


def make_wheels() -> None:
    """agrajag and its dependencies as wheels for the images' offline `pip install`."""
    shutil.rmtree(WHEELS, ignore_errors=True)
    say(f"building wheels into {WHEELS.relative_to(REPO)}/")
    # fixed timestamps in the zip: an unchanged agrajag gives the same wheel, and the images'
    # build cache holds (it compares what COPY copies by content)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(WHEELS), str(REPO)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-3000:]}")


def make_secrets(directory: Path = SECRETS) -> None:
    """The topology's passwords (random; kept once made, so a volume's data keeps matching),
    the overlay giving every daemon and watcher the same `zookeeper.acl`, which names the two
    identities by digest id, and the certificates of TLS to ZooKeeper (`make_pki`).

    Compose without swarm mounts a secret as the host has it, so the files are readable in
    the containers; the directory is root's alone, and each entrypoint copies what it needs
    into the private file its config names."""
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
    for name in PASSWORDS:
        path = directory / f"{name}.password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o644)
    acl = {
        role: [digest_id(user, directory / f"{secret}.password")]
        for role, (user, secret) in IDENTITIES.items()
    }
    acl_file = directory / "zookeeper-acl.yaml"
    acl_file.write_text(yaml.safe_dump({"zookeeper": {"acl": acl}}))
    acl_file.chmod(0o644)
    if not (directory / "zookeeper-ca.pem").exists():
        make_pki(directory)


def digest_id(user: str, password_file: Path) -> str:
    """`agrajag digest-id` of `user` with the password in `password_file` (given through the
    environment: the file is readable by others, which agrajag refuses of a password file)."""
    agrajag = Path(sys.executable).parent / "agrajag"
    env = {**os.environ, "AGRAJAG_DIGEST_PASSWORD": password_file.read_text().removesuffix("\n")}
    argv = [str(agrajag), "digest-id", "--user", user, "--password-env", "AGRAJAG_DIGEST_PASSWORD"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout.strip()


def openssl(*args: str | Path) -> None:
    argv = ["openssl", *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")


def make_pki(directory: Path) -> None:
    """The CA (`zookeeper-ca.pem`; its key is mounted nowhere) and CERTIFICATES, each as
    `<name>.pem` and `<name>.key`; the server's also as `zookeeper-server-keystore.pem` (key
    and certificate in one file, as ZooKeeper's `ssl.keyStore.type=PEM` reads it)."""
    say(f"making the topology's CA and certificates in {directory}/")
    ca, ca_key = directory / "zookeeper-ca.pem", directory / "zookeeper-ca.key"
    subj = "/CN=agrajag-docker-ca"
    openssl("req", "-x509", *EC_KEY, "-days", "365", "-subj", subj, "-keyout", ca_key, "-out", ca)
    ca_key.chmod(0o600)
    for name, names in CERTIFICATES.items():
        cert, key, csr = (directory / f"{name}.{kind}" for kind in ("pem", "key", "csr"))
        ext = directory / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n" + (f"subjectAltName={names}\n" if names else "")
        )
        openssl("req", *EC_KEY, "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        openssl(
            "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "365", "-extfile", ext, "-out", cert,
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        key.chmod(0o644)  # mounted as it is: the entrypoints make the private copies
    keystore = directory / "zookeeper-server-keystore.pem"
    keystore.write_text(
        (directory / "zookeeper-server.key").read_text()
        + (directory / "zookeeper-server.pem").read_text()
    )
    keystore.chmod(0o644)


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def build(client: docker.DockerClient, mirror: str | None) -> list[str]:
    """Make whatever is missing and build the images; returns the images that are new."""
    images = compose_images()
    new = [name for name in [BASE_IMAGE, *images] if not image_exists(client, name)]
    if BASE_IMAGE in new:
        make_base_image(client, mirror or system_mirror())
    make_wheels()
    make_secrets()
    for image, target in images.items():
        started = time.monotonic()
        try:
            client.images.build(
                path=str(REPO),
                dockerfile="docker/Dockerfile",
                target=target,
                tag=image,
                rm=True,
                forcerm=True,
            )
        except BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)
            raise Failed(f"building {image} (target {target}): {exc}\n{log[-3000:]}") from None
        say(f"built {image} (target {target}) in {time.monotonic() - started:.0f} s")
    return new


def remove_images(client: docker.DockerClient, images: list[str]) -> None:
    for image in reversed(images):  # the base image last: the others are built on it
        with contextlib.suppress(ImageNotFound):
            client.images.remove(image, force=True)
            say(f"removed image {image}")


# --- the topology ---------------------------------------------------------------------


def compose(*args: str) -> None:
    if shutil.which("docker-compose") is None:
        raise Failed("docker-compose is not installed (apt-get install docker-compose)")
    argv = ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-3000:]}")


def up() -> None:
    say("docker-compose up")
    compose("up", "-d", "--no-build")


def down() -> None:
    say("docker-compose down (containers, networks, volumes)")
    compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


class Topology:
    """The running project's containers, by compose service name."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def container(self, service: str) -> Container:
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={PROJECT}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        if not found:
            raise Failed(f"no container for service {service}")
        return found[0]

    def run(self, service: str, *cmd: str) -> str:
        """Run `cmd` in the service's container; its stdout, Failed if it exits non-zero."""
        code, (out, err) = self.container(service).exec_run(list(cmd), demux=True)
        if code != 0:
            detail = (err or out or b"").decode(errors="replace").strip()[-2000:]
            raise Failed(f"{service}: {' '.join(cmd)} exited {code}: {detail}")
        return (out or b"").decode(errors="replace")

    def attempt(self, service: str, *cmd: str) -> str | None:
        """`run`, None when it fails (for polling)."""
        try:
            return self.run(service, *cmd)
        except Failed:
            return None

    def fetch(self, url: str) -> Any:
        """GET `url` from inside the network (it is internal) as JSON."""
        code = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())"
        return json.loads(self.run("client", "/opt/agrajag/bin/python", "-c", code, url))

    def dump_logs(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        ):
            tail = container.logs(tail=40).decode(errors="replace")
            print(f"--- {container.name} ({container.status})\n{tail}", file=sys.stderr)


def first_write(topology: Topology, proxy: str) -> str | None:
    """The node a client's write through `proxy` lands on (None: no write within 3 s)."""
    port = str(PROXIES[proxy])
    out = topology.attempt("client", "agrajag-writer", "--port", port, "--once", "--timeout", "3")
    events = [json.loads(line) for line in (out or "").splitlines() if line.startswith("{")]
    return next((str(e["node"]) for e in events if e["event"] == "wrote"), None)


def alert_groups() -> dict[str, int]:
    """{group: number of rules} of conf.d/agrajag-alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {g["name"]: len(g["rules"]) for g in groups}


def scraped(topology: Topology) -> dict[str, str]:
    """{instance: health} of Prometheus's agrajag targets."""
    targets = topology.fetch("http://prometheus:9090/api/v1/targets")["data"]["activeTargets"]
    return {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] in JOBS}


def applied_epochs(topology: Topology) -> list[str]:
    """agrajag_watch_applied_epoch of every watcher, as Prometheus has it."""
    return [r["value"][1] for r in query(topology, "agrajag_watch_applied_epoch")]


def all_up(health: dict[str, str]) -> bool:
    return len(health) == 5 and set(health.values()) == {"up"}


def check_rules(topology: Topology) -> None:
    groups = topology.fetch("http://prometheus:9090/api/v1/rules")["data"]["groups"]
    loaded = {g["name"]: len(g["rules"]) for g in groups}
    if loaded != alert_groups():
        raise Failed(f"Prometheus has rule groups {loaded}, conf.d ships {alert_groups()}")


def query(topology: Topology, promql: str) -> list[dict[str, Any]]:
    url = "http://prometheus:9090/api/v1/query?query=" + quote(promql, safe="")
    result: list[dict[str, Any]] = topology.fetch(url)["data"]["result"]
    return result


def wait_ready(topology: Topology) -> None:
    started = time.monotonic()
    for proxy in PROXIES:
        wait_for(
            lambda p=proxy: first_write(topology, p) == "node1" or None,  # type: ignore[misc]
            timeout=240,
            what=f"a client through {proxy} to write on node1",
        )
    wait_for(
        lambda: all_up(scraped(topology)) or None,
        timeout=60,
        what="Prometheus to scrape 3 daemons and 2 watchers",
    )
    check_rules(topology)
    say(f"ready in {time.monotonic() - started:.0f} s: clients write on node1 through both "
        "proxies; Prometheus scrapes 5 agrajag targets, rules loaded")  # fmt: skip


# --- the failover ---------------------------------------------------------------------


@dataclass
class Writer:
    """`agrajag-writer --until-moved` through one proxy, its JSON lines read on a thread."""

    topology: Topology
    proxy: str
    events: list[dict[str, Any]] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Writer:
        api = self.topology.client.api
        port = str(PROXIES[self.proxy])
        cmd = ["agrajag-writer", "--port", port, "--until-moved", "--timeout", "180"]
        exec_id = api.exec_create(self.topology.container("client").id, cmd)
        stream = api.exec_start(exec_id, stream=True)

        def read() -> None:
            buffer = b""
            for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"{"):
                        self.events.append(json.loads(line))

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()
        wait_for(lambda: self.wrote() or None, 30, f"the writer through {self.proxy}", 0.1)
        return self

    def wrote(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "wrote"]

    def moved(self, timeout: float) -> dict[str, Any]:
        """The first write on another node than the first one."""
        assert self.thread is not None
        self.thread.join(timeout)
        writes = self.wrote()
        moved = [e for e in writes if e["node"] != writes[0]["node"]]
        if not moved:
            raise Failed(f"the client through {self.proxy} never wrote elsewhere: {self.events}")
        return moved[0]


def iso_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Failover:
    """Seconds from `docker kill` of the primary's node."""

    new_primary: str
    promoted_s: float
    published_s: float
    haproxy_s: float
    pgbouncer_s: float


def failover(topology: Topology) -> Failover:
    writers = [Writer(topology, proxy).start() for proxy in PROXIES]
    say("killing node1 (docker kill: PostgreSQL, repmgrd and its daemon at once)")
    killed = time.time()
    topology.container("node1").kill()
    moved = {w.proxy: w.moved(timeout=200) for w in writers}
    # read with a daemon's identity (the registry is not world-readable), on a live node
    status = json.loads(
        topology.run("node2", "agrajag", "status", "--config", "/etc/agrajag/daemon.yaml", "--json")
    )
    master = status["main"]["master"]
    for proxy, write in moved.items():
        if write["node"] != master["node"]:
            raise Failed(f"through {proxy} a client wrote on {write['node']}, master: {master}")
    promoted = topology.run(
        master["node"],
        "psql", "-d", "repmgr", "-tAc",
        "SELECT extract(epoch FROM max(event_timestamp)) FROM repmgr.events"
        " WHERE event = 'standby_promote' AND successful",
    )  # fmt: skip
    result = Failover(
        new_primary=master["node"],
        promoted_s=float(promoted) - killed,
        published_s=iso_time(master["published_at"]) - killed,
        haproxy_s=moved["haproxy"]["at"] - killed,
        pgbouncer_s=moved["pgbouncer"]["at"] - killed,
    )
    say(
        f"{result.new_primary} promoted at +{result.promoted_s:.2f} s, published at "
        f"+{result.published_s:.2f} s; clients write again through HAProxy at "
        f"+{result.haproxy_s:.2f} s, through PgBouncer at +{result.pgbouncer_s:.2f} s"
    )
    epoch = str(master["epoch"])
    wait_for(
        lambda: applied_epochs(topology) == [epoch, epoch] or None,
        timeout=60,
        what=f"Prometheus to see both watchers apply epoch {epoch}",
    )
    health = scraped(topology)
    if [i for i, h in health.items() if h != "up"] != ["node1:9187"]:
        raise Failed(f"after the failover Prometheus scrapes {health}; only node1 may be down")
    check_rules(topology)
    say(f"Prometheus: both watchers applied epoch {epoch}; every target but node1 up")
    check_locked(topology)
    return result


def check_locked(topology: Topology) -> None:
    """Every znode carries the topology's ACL (`secure-registry --dry-run` would change
    none), and a client with no identity and no certificate gets nothing."""
    daemon_conf = "/etc/agrajag/daemon.yaml"
    out = topology.run("node2", "agrajag", "secure-registry", "--config", daemon_conf, "--dry-run")
    if not out.rstrip().endswith(": 0 would change"):
        raise Failed(f"znodes without the topology's ACL: {out}")
    anonymous = topology.attempt("client", "agrajag", "status", "--zookeeper", "zk1:2281")
    if anonymous is not None:
        raise Failed(f"a client with no identity nor certificate read the registry: {anonymous}")
    say(f"registry locked: {out.strip().splitlines()[-1]}; an anonymous client is refused")


# --- the engine -----------------------------------------------------------------------


@contextlib.contextmanager
def engine(start: bool) -> Iterator[docker.DockerClient]:
    """A client of a reachable engine; with `start`, as root, dockerd is started when none
    answers, and stopped afterwards."""
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as exc:
        if not (start and os.geteuid() == 0 and shutil.which("dockerd")):
            raise NoEngine(
                f"no Docker engine reachable (DOCKER_HOST or the local socket): {exc}"
            ) from None
    else:
        yield client
        return
    log = Path(tempfile.gettempdir()) / "agrajag-dockerd.log"
    say(f"starting dockerd (log: {log})")
    with log.open("wb") as out:
        proc = subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    try:
        yield wait_for(_client, 60, "dockerd to answer", 0.5)
    finally:
        say(f"stopping dockerd (pid {proc.pid})")
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException:
        return None
    return client


# --- commands -------------------------------------------------------------------------


def cmd_build(client: docker.DockerClient, args: argparse.Namespace) -> int:
    build(client, args.mirror)
    return 0


def cmd_down(client: docker.DockerClient, args: argparse.Namespace) -> int:
    down()
    return 0


def cmd_test(client: docker.DockerClient, args: argparse.Namespace) -> int:
    started = time.monotonic()
    new_images: list[str] = []
    runs: list[Failover] = []
    try:
        new_images = build(client, args.mirror)
        say(f"images ready after {time.monotonic() - started:.0f} s")
        for run in range(1, args.runs + 1):
            say(f"run {run} of {args.runs}")
            up()
            topology = Topology(client)
            try:
                wait_ready(topology)
                runs.append(failover(topology))
            except Failed:
                topology.dump_logs()
                raise
            finally:
                down()
    finally:
        leftovers = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        if leftovers:
            down()
        if not args.keep_images:
            remove_images(client, new_images)
    if args.json:
        record = {"runs": [asdict(r) for r in runs], "seconds": time.monotonic() - started}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    say(f"passed: {len(runs)} failover(s) in {time.monotonic() - started:.0f} s")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="docker/topology.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_ = sub.add_parser("build", help="base image if missing, wheels, images")
    test = sub.add_parser("test", help="build, then up, fail over, check, down")
    sub.add_parser("down", help="remove the topology (containers, networks, volumes)")
    for each in (build_, test):
        each.add_argument("--mirror", help="Debian mirror for the base image (default: apt's)")
    test.add_argument("--runs", type=int, default=1, help="failovers, each on a fresh topology")
    test.add_argument("--keep-images", action="store_true", help="keep the images it made")
    test.add_argument("--json", metavar="FILE", help="write the timings there")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM or SIGHUP (a CI timeout, a closed terminal) unwind like Ctrl-C: every `finally`
    # cleans up, dockerd included.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    command = {"build": cmd_build, "test": cmd_test, "down": cmd_down}[args.command]
    try:
        with engine(start=args.command == "test") as client:
            return command(client, args)
    except Failed as exc:
        print(f"docker/topology.py {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NoEngine) else 1
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"docker/topology.py {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
