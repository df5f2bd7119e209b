"""What a client writing through HAProxy or PgBouncer sees when the primary node crashes.

Usage: python -m tools.bench.bench_client_downtime [--failovers N] [--haproxy-template T]
       [--out DIR]

Each failover gets a fresh 3-node repmgr cluster with repmgrd (promoting with `pg_ctl -w`,
as conf.d recommends), `agrajag daemon` beside every node woken by repmgr's events, and an
app side: real HAProxy and PgBouncer (transaction pooling), each driven by its own
`agrajag watch` with the shipped template. One ZooKeeper serves the whole run. Four clients
write one row every 10 ms: through HAProxy and through PgBouncer, each with a libpq
`connect_timeout` of 1 s and of 10 s (libpq and psycopg raise 1 to their 2 s floor); a
client that gets an error closes its connection and reconnects 10 ms later.

Then the primary node crashes: its PostgreSQL (the postmaster and all its processes),
repmgrd and agrajag daemon are SIGKILLed together. Measured with time.monotonic() as the
one clock, from that instant:

- promotion: the first INSERT committed by another node (direct writers, every 5 ms);
- znode: when ZooKeeper wrote the master record naming another node (its mtime);
- HAProxy / PgBouncer routing: their runtime state (`show servers state`, `SHOW DATABASES`,
  polled every 5 ms) first names the new primary's port;
- client write downtime: from the last write the old primary acknowledged to the first one
  the new primary acknowledged (`INSERT ... RETURNING inet_server_port()`), per client;
- agrajag's share, from the DEBUG line of the daemon round that published: repmgr's
  `standby_promote` row -> the round's start (the hook; negative when a polling round began
  before it), the round's `repmgr cluster show`, and its ZooKeeper calls.

The target is downtime <= promotion + 300 ms at p99 for every client. Writes JSON and two
pictures (one failover's timeline, the distributions) into --out (default bench-results/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from kazoo.client import KazooClient

from agrajag.sinks.haproxy import HAProxySink, Settings
from tools.bench.bench_failover import (
    Writer,
    repmgr_events,
)
from tools.bench.downtime_report import (
    CONNECT_TIMEOUTS_S,
    PROXIES,
    Attempt,
    Sample,
    pick_timeline,
    print_table,
    report,
    stages,
)
from tools.bench.failovers import SetupFailed, dispose, prepare, publish_round, run_failovers
from tools.harness.agrajag import EVENT_COMMAND, DaemonProc, crash_node
from tools.harness.clients import CLIENT_INTERVAL_S, Client
from tools.harness.postgres import PgCluster
from tools.harness.procs import service_dir, wait_until
from tools.harness.proxies import BouncerConsole, HAProxy, PgBouncer
from tools.harness.shipped import CONF_D
from tools.harness.watch import ROOT, MasterWatch, WatchProc
from tools.harness.zookeeper import ZkEnsemble

PROBE_INTERVAL_S = 0.005
AFTER_CRASH_S = 45.0  # PgBouncer's server_login_retry alone can hold clients 15 s


class RoutingProbe(threading.Thread):
    """Polls a proxy's runtime state; remembers when it first routes to another port."""

    def __init__(self, name: str, read_port: Callable[[], int | None], old_port: int) -> None:
        super().__init__(name=f"probe-{name}", daemon=True)
        self.read_port = read_port
        self.old_port = old_port
        self.routed_at: float | None = None
        self.port: int | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and self.routed_at is None:
            with contextlib.suppress(Exception):  # a proxy busy reloading answers late
                port = self.read_port()
                if port is not None and port != self.old_port:
                    self.routed_at, self.port = time.monotonic(), port
            self.stopping.wait(PROBE_INTERVAL_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def _sections(name: str, haproxy: HAProxy, bouncer: PgBouncer, template: Path) -> list[Any]:
    """The watch.yaml sink sections of both proxies, following cluster `name`."""
    hsec: dict[str, Any] = {"type": "haproxy", **haproxy.sink_section(template)}
    hsec["clusters"] = [name]
    hsec["params"]["ports"] = {name: haproxy.port}
    psec: dict[str, Any] = {"type": "pgbouncer", **bouncer.sink_section("reconnect")}
    psec["clusters"] = [name]
    psec["params"] = {"databases": {name: ["repmgr"]}}
    return [hsec, psec]


def one_failover(
    zk: ZkEnsemble,
    zclient: KazooClient,
    index: int,
    attempt: int,
    template: Path,
    keep: bool = False,
) -> Sample:
    name = f"downtime-{index:03d}" + (f"-retry{attempt}" if attempt else "")
    sample = Sample(index, name)
    cluster = PgCluster(3, event_command=EVENT_COMMAND, pg_ctl_promote=True)
    haproxy, bouncer = HAProxy(), PgBouncer()
    daemons: list[DaemonProc] = []
    threads: list[Client | RoutingProbe | Writer] = []
    watchers: list[WatchProc] = []
    admin = BouncerConsole(bouncer)
    crashed: float | None = None
    try:
        old = prepare(cluster)
        daemons = [DaemonProc(n, zk.hosts, cluster=name).start() for n in cluster.nodes]
        hsec, psec = _sections(name, haproxy, bouncer, template)
        haproxy.config.write_text(HAProxySink(Settings.from_mapping(hsec, "bench")).render({}))
        haproxy.start()
        bouncer.write_config("")
        bouncer.start()
        home = service_dir("bench-watch")
        for sec in (hsec, psec):
            agent = f"{name}-{sec['type']}"
            watchers.append(
                WatchProc(home / agent, zk.hosts, agent=agent, clusters=[name], sinks=[sec])
            )
        for watcher in watchers:
            watcher.start()

        def settled() -> bool:
            base = f"{ROOT}/{name}"
            if not zclient.exists(f"{base}/master"):
                return False
            live = sorted(zclient.get_children(f"{base}/nodes"))
            return (
                json.loads(zclient.get(f"{base}/master")[0])["node"] == old.name
                and live == [n.name for n in cluster.nodes]
                and haproxy.routed_port() == old.port
                and admin.port() == old.port
            )

        wait_until(settled, timeout=40, what=f"{name}: node1 published and routed by both")
        clients = [
            Client(proxy, port, timeout)
            for proxy, port in (("haproxy", haproxy.port), ("pgbouncer", bouncer.port))
            for timeout in CONNECT_TIMEOUTS_S
        ]
        writers = [Writer(n) for n in cluster.nodes[1:]]
        probes = [
            RoutingProbe("haproxy", haproxy.routed_port, old.port),
            RoutingProbe("pgbouncer", admin.port, old.port),
        ]
        threads = [*clients, *writers, *probes]
        for t in threads:
            t.start()
        wait_until(
            lambda: (
                all(c.wrote_to(old.port) for c in clients)
                and all(w.ready.is_set() for w in writers)
            ),
            timeout=20,
            what="every client writing through its proxy",
        )
        watch = MasterWatch(zclient, f"{ROOT}/{name}/master", old.name)
        time.sleep(random.uniform(0.0, 1.0))  # a random phase against repmgrd's monitoring

        sample.loadavg_1m = os.getloadavg()[0]
        offset = time.time() - time.monotonic()
        crashed = crash_node(old, daemons[0])
        for w in writers:
            w.arm(crashed)
        new_ports = {n.port for n in cluster.nodes[1:]}
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: all(any(c.wrote_to(p, crashed) for p in new_ports) for c in clients),
                timeout=AFTER_CRASH_S,
                what="every client writing to the new primary",
                interval=0.1,
            )
        time.sleep(0.3)  # a little of the aftermath for the timeline
        for t in threads:
            t.stop()
        _measure(sample, cluster, clients, writers, probes, watch, crashed, offset)
        sample.publishing_round = _publishing_round(
            daemons[1:], sample.new_primary, crashed + offset
        )
    except Exception as exc:  # one broken failover must not end the whole run
        sample.error = f"{type(exc).__name__}: {exc}"
        if crashed is None:
            sample.error = f"setup: {sample.error}"
    finally:
        for t in threads:
            t.stop()
        admin.close()
        for watcher in watchers:
            watcher.stop()
        for d in daemons:
            d.stop()
        haproxy.stop()
        bouncer.stop()
        dispose(cluster, keep, sample.error)
    if crashed is None:
        raise SetupFailed(sample.error)
    return sample


def _measure(
    sample: Sample,
    cluster: PgCluster,
    clients: list[Client],
    writers: list[Writer],
    probes: list[RoutingProbe],
    watch: MasterWatch,
    crashed: float,
    offset: float,
) -> None:
    old = cluster.nodes[0]
    first = [(w.first_ok, w.node) for w in writers if w.first_ok]
    if not first:
        sample.error = "no standby became writable"
        return
    writable_at, new = min(first, key=lambda pair: pair[0] or 0.0)
    assert writable_at is not None
    sample.new_primary = new.name
    sample.promotion_s = writable_at - crashed
    if watch.written_at is not None:
        sample.znode_s = watch.written_at - crashed
    sample.routed_s = {
        proxy: (p.routed_at - crashed if p.routed_at is not None else None)
        for proxy, p in zip(PROXIES, probes, strict=True)
    }
    with contextlib.suppress(psycopg.Error):
        promotes = [
            t - offset - crashed for t, _, e in repmgr_events(new) if e == "standby_promote"
        ]
        sample.promote_event_s = min((p for p in promotes if p > -1), default=None)
    for c in clients:
        attempts = [Attempt(s - crashed, e - crashed, p, err) for s, e, p, err in c.attempts]
        before = [a.end for a in attempts if a.port == old.port]
        after = [a.end for a in attempts if a.port == new.port and a.end > 0]
        sample.downtime_s[c.key] = (min(after) - max(before)) if before and after else None
        sample.first_new_write_s[c.key] = min(after, default=None)
        kinds: dict[str, int] = {}
        for a in attempts:
            if a.port is None and a.end > 0:
                kinds[a.error] = kinds.get(a.error, 0) + 1
        sample.errors_seen[c.key] = kinds
        sample.longest_attempt_s[c.key] = max(
            (a.end - a.start for a in attempts if a.end > 0), default=0.0
        )
        sample.attempts[c.key] = [a for a in attempts if -0.5 < a.end < (min(after, default=0) + 1)]
    rows = new.sql("SELECT node, count(*) FROM agrajag_bench_writes GROUP BY node")
    found = {str(node): int(str(count)) for node, count in rows}
    sample.lost_writes = {c.key: c.acknowledged() - found.get(c.key, 0) for c in clients}
    missing = [k for k, v in sample.downtime_s.items() if v is None]
    if missing:
        sample.error = f"no write on the new primary within {AFTER_CRASH_S:g} s: {missing}"


def _publishing_round(daemons: list[DaemonProc], node: str, since: float) -> dict[str, Any]:
    """The round that published `node` after `since`: which daemon, what woke it, its phases."""
    for daemon in daemons:
        with contextlib.suppress(LookupError):
            _, trigger, phases = publish_round(daemon.output(), node, since)
            return {"node": daemon.node.name, "trigger": trigger, "ms": phases}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bench_client_downtime")
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument(
        "--haproxy-template", type=lambda p: Path(p).resolve(), default=CONF_D / "haproxy.cfg.j2"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--name", default="client_downtime", help="file names in --out")
    parser.add_argument(
        "--keep", action="store_true", help="keep every cluster's directory (daemon logs)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    loads = [os.getloadavg()]

    def one(zk: ZkEnsemble, client: KazooClient, index: int, attempt: int) -> Sample:
        sample = one_failover(zk, client, index, attempt, args.haproxy_template, args.keep)
        loads.append(os.getloadavg())
        return sample

    plan = [(f"#{i:<2}", i) for i in range(args.failovers)]
    samples, setup_failures = run_failovers(plan, one, _line, keep=args.keep)
    result = report(samples)
    print_table(result)
    write_results(args, samples, result, setup_failures, loads, started)


def _line(s: Sample) -> str:
    if s.promotion_s is None or s.znode_s is None:
        return f"ERROR {s.error}"
    down = " ".join(
        f"{k} {v * 1e3:.0f}" if v is not None else f"{k} -" for k, v in s.downtime_s.items()
    )
    routed = " ".join(
        f"{k} {v * 1e3:.0f}" if v is not None else f"{k} -" for k, v in s.routed_s.items()
    )
    r = s.publishing_round
    published = f"; {r['node']} {r['trigger']} repmgr {r['ms']['repmgr']:.0f}" if r else ""
    return (
        f"promotion {s.promotion_s * 1e3:.0f} znode {s.znode_s * 1e3:.0f}"
        f" routed: {routed}; downtime ms: {down}; lost {sum(s.lost_writes.values())}"
        f" (load {s.loadavg_1m:.1f})" + (f" ERROR {s.error}" if s.error else "") + published
    )


def write_results(
    args: argparse.Namespace,
    samples: list[Sample],
    result: dict[str, Any],
    setup_failures: list[str],
    loads: list[tuple[float, float, float]],
    started: float,
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    timeline = pick_timeline(samples)
    data = {
        "benchmark": "client_downtime",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "measured": __doc__.split("Then the primary node crashes:", 1)[1].strip()
        if __doc__
        else "",
        "summary": result,
        "samples": [
            {**{k: v for k, v in asdict(s).items() if k != "attempts"}, "stages_s": stages(s)}
            for s in samples
        ],
        "timeline": asdict(timeline) if timeline else None,
        "settings": {
            "failovers": args.failovers,
            "haproxy_template": {
                "name": args.haproxy_template.name,
                "retries_and_server": [
                    line.strip()
                    for line in args.haproxy_template.read_text().splitlines()
                    if line.strip().startswith(("retries", "timeout connect", "server "))
                ],
            },
            "client_interval_s": CLIENT_INTERVAL_S,
            "client_connect_timeouts_s": list(CONNECT_TIMEOUTS_S),
            "note": "libpq and psycopg raise a connect_timeout of 1 to 2 s",
            "repmgrd": "failover=automatic, monitor_interval_secs=1, reconnect_attempts=2,"
            " reconnect_interval=1, service_promote_command=pg_ctl -w promote",
            "daemon": "woken by repmgr's event_notification_command (agrajag-notify)",
            "pgbouncer": "pool_mode=transaction, sink cut: reconnect, server_connect_timeout=2",
        },
        "machine": {
            "cores": os.cpu_count(),
            "nice": os.nice(0),
            "note": "shared with other work running at the same time",
            "loadavg_1m_at_each_crash": [s.loadavg_1m for s in samples],
            "loadavg_during_run": [list(x) for x in loads],
            "python": platform.python_version(),
        },
        "setup_failures_rebuilt": setup_failures,
        "runtime_s": round(time.monotonic() - started, 1),
    }
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {json_path} ({data['runtime_s']} s)")
    try:
        from tools.bench import downtime_plots
    except ImportError as exc:  # matplotlib is in the `bench` extra
        print(f"no pictures: {exc} (pip install -e '.[bench]')")
        return
    for path in downtime_plots.draw(data, args.out, args.name):
        print(f"-> {path}")


if __name__ == "__main__":
    main()
