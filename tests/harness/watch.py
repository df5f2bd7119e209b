"""`agrajag watch` run for real from conf.d's example, and a kazoo client playing the daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from agrajag.record import MasterRecord, WatcherAck
from tests.harness.procs import Proc

CONF_D = Path(__file__).resolve().parents[2] / "conf.d"
AGRAJAG = str(Path(sys.executable).parent / "agrajag")
ROOT = "/agrajag"

#: What the tests render: one line per cluster, "none" when there is no master to route to.
TEMPLATE = (
    "{% for name, m in clusters.items() %}"
    "{{ name }}={% if m %}{{ m.host }}:{{ m.port }} epoch={{ m.epoch }}{% else %}none{% endif %}\n"
    "{% endfor %}"
)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONF_D / name).read_text())
    return data


def master(epoch: int, node: int = 1, *, port: int = 5432, cluster: str = "main") -> MasterRecord:
    return MasterRecord(
        cluster=cluster,
        epoch=epoch,
        node_id=node,
        node=f"node{node}",
        host=f"10.0.0.{node}",
        port=port,
        timeline=1,
        published_by="test",
        published_at="2026-11-22T00:00:00.000Z",
    )


class WatchProc:
    """One `agrajag watch` process in `home`, with conf.d/watch.example.yaml's settings
    except where a test has to differ: ZooKeeper, agent, paths, timings, sinks."""

    def __init__(self, home: Path, zk_hosts: str, *, agent: str = "app1", **overrides: Any) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.agent = agent
        self.dest = home / "db.env"
        self.state_file = home / "watch-state.json"
        self.log = home / "watch.log"
        template = home / "db.env.j2"
        template.write_text(TEMPLATE)
        conf = example("watch.example.yaml")
        conf.update(agent=agent, state_file=str(self.state_file), reconcile_interval_s=1)
        conf["zookeeper"].update(hosts=zk_hosts, session_timeout_s=4, call_timeout_s=1)
        conf["metrics"] = {}
        conf["retry_backoff"] = {"initial_s": 0.2, "max_s": 1}
        conf["sinks"][0].update(src=str(template), dest=str(self.dest))
        conf.update(overrides)
        self.config = home / "watch.yaml"
        self.config.write_text(yaml.safe_dump(conf))
        self.proc = Proc(
            f"agrajag-watch-{agent}",
            [AGRAJAG, "--log-level", "DEBUG", "watch", "--config", str(self.config)],
            log=self.log,
            cwd=home,
        )

    def start(self) -> WatchProc:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def rendered(self) -> str | None:
        return self.dest.read_text() if self.dest.exists() else None


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
