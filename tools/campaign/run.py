"""Run a fault campaign: the whole system on simulated hosts, clients writing through HAProxy
and PgBouncer, a seeded schedule of faults (each healed, then a quiet spell), and the checker
over the recorded history.

    python -m tools.campaign.run --seed 3 --steps 6 [--out DIR]

Prints the seed and the schedule first (the same seed runs the same schedule again), then
every violation and the client writes' report; exits 1 on any violation. Needs root.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.campaign import checker
from tools.campaign.clients import SCHEMA, TABLE, Writer
from tools.campaign.history import Fault, History, Record
from tools.campaign.nemesis import Nemesis, Step, schedule
from tools.campaign.recorder import Recorder
from tools.harness import procs
from tools.harness.netns import Topology
from tools.harness.postgres import PgNode
from tools.harness.procs import wait_until
from tools.harness.reader import RegistryReader
from tools.harness.system import System

#: The daemons' ZooKeeper session timeout (tools.harness.agrajag's default).
SESSION_TIMEOUT_S = 4.0


@dataclass
class Outcome:
    history: History
    violations: list[checker.Violation]
    writes: checker.WriteReport

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        h, w = self.history, self.writes
        lines = [
            f"seed {h.seed}: {len(h.faults)} faults in {h.end - h.start:.0f}s, "
            f"{len(h.records)} records (epochs {h.records[0].epoch}..{h.records[-1].epoch})"
            if h.records
            else f"seed {h.seed}: no record published",
            f"writes: {w.attempted} attempted, {w.acknowledged} acknowledged "
            f"({w.acknowledged_superseded} by a primary already superseded); lost: "
            f"{w.lost_to_failover} to a failover (asynchronous replication), "
            f"{w.lost_to_split_brain} to a split brain, {w.lost_otherwise} otherwise",
            f"violations: {len(self.violations)}",
            *(f"  {v.rule} at +{v.at - h.start:.1f}s: {v.detail}" for v in self.violations),
        ]
        return "\n".join(lines)


class Campaign:
    """One run; build and use it from the topology's observer thread."""

    def __init__(self, system: System, seed: int, steps: int, quiet_s: float) -> None:
        self.system = system
        self.plan = schedule(seed, steps)
        self.quiet_s = quiet_s
        self.expected_exits: set[str] = set()
        self.nemesis = Nemesis(system, self.expected_exits, SESSION_TIMEOUT_S)
        self.history = History(
            seed=seed,
            schedule=[str(s) for s in self.plan],
            start=time.time(),
            apps=list(system.apps),
        )
        self.log: Callable[[str], None] = print

    def run(self) -> History:
        system = self.system
        system.cluster.nodes[0].sql(SCHEMA)
        recorder = Recorder(system, self.expected_exits).start()
        stop = threading.Event()
        nodes = {n.host.address: n.name for n in system.cluster.nodes}
        writers = [
            Writer(system.topology, app, proxy, port, nodes, stop)
            for app in system.apps.values()
            for proxy, port in (("haproxy", app.haproxy.port), ("pgbouncer", app.pgbouncer.port))
        ]
        for writer in writers:
            writer.start()
        try:
            time.sleep(self.quiet_s)
            for i, step in enumerate(self.plan, start=1):
                self.log(f"step {i}/{len(self.plan)}: {step}")
                self._step(step, recorder)
                time.sleep(self.quiet_s)
        finally:
            stop.set()
            for writer in writers:
                writer.join(timeout=30)
            recorder.stop()
            self._restore_zookeeper()
            self._collect(recorder, writers)
        return self.history

    def _step(self, step: Step, recorder: Recorder) -> None:
        start = time.time()
        heals = [self.nemesis.apply(step.kind, step.pick, step.hold_s)]
        if step.overlay:
            heals.append(self.nemesis.apply(step.overlay, step.pick + 1, step.hold_s))
        time.sleep(step.hold_s)
        for heal in reversed(heals):
            heal()
        self._repair(recorder)
        self.history.faults.append(Fault(start, time.time(), step.kind, str(step)))

    def _restore_zookeeper(self) -> None:
        """Every link healed, every ZooKeeper server running."""
        self.system.topology.heal()
        for server in self.system.zk.servers:
            if server.proc and not server.proc.alive():
                server.start()
        for server in self.system.zk.servers:
            server.wait_serving(60)

    def _repair(self, recorder: Recorder) -> None:
        """Back to a healthy system whatever a fault left: links healed, everything resumed
        and running, one primary with every other node streaming from it."""
        system = self.system
        self._restore_zookeeper()
        for node in system.cluster.nodes:
            node.resume()
        for proc in recorder.agrajag_procs():
            proc.resume()
        for proc in recorder.sample_exits():  # recorded; a campaign goes on with it restarted
            self.log(f"  {proc.name} had exited ({proc.popen and proc.popen.returncode}): restart")
            proc.start()
        primary = wait_until(
            self._sole_primary,
            timeout=90,
            what="exactly one writable primary",
            interval=1,
        )
        for node in system.cluster.nodes:
            if node is not primary and not _streams_from(primary, node):
                self.log(f"  {node.name} does not stream from {primary.name}: rejoin")
                system.rejoin(node)
            if node.repmgrd is None or not node.repmgrd.alive():
                node.start_repmgrd()

    def _sole_primary(self) -> PgNode | None:
        """The one writable node; with two, keep the one the registry keeps (the published master,
        or the other when it was withdrawn) and rejoin the others."""
        writable = self.system.cluster.writable()
        if len(writable) < 2:
            return writable[0] if writable else None
        reader = RegistryReader(self.system.zk.hosts)
        try:
            keep = reader.keep_among([n.name for n in writable]) or writable[0].name
        finally:
            reader.close()
        for node in writable:
            if node.name != keep:
                self.log(f"  {node.name} is writable besides {keep}: rejoin")
                self.system.rejoin(node)
        return None

    def _collect(self, recorder: Recorder, writers: list[Writer]) -> None:
        h = self.history
        reader = RegistryReader(self.system.zk.hosts)
        try:
            h.records = [
                Record(
                    s.at,
                    int(s.data["epoch"]),
                    str(s.data["node"]),
                    str(s.data["host"]),
                    int(s.data["port"]),
                    s.data.get("timeline"),
                    s.data.get("withdrawn"),
                )
                for s in reader.history()
            ]
            master = reader.master()
        finally:
            reader.close()
        h.seen, h.pg, h.acks = recorder.seen, recorder.pg, recorder.acks
        h.configs, h.exits = recorder.configs, recorder.exits
        h.writes = sorted((w for writer in writers for w in writer.writes), key=lambda w: w.at)
        if master:
            rows = self.system.cluster.node(str(master["node"])).sql(
                f"SELECT client, seq FROM {TABLE}"
            )
            h.present = [(str(c), int(str(s))) for c, s in rows]
        h.end = time.time()


def run(seed: int, steps: int, *, quiet_s: float = 12.0, out: Path | None = None) -> Outcome:
    """One whole campaign, from creating the hosts to deleting them."""
    plan = schedule(seed, steps)
    print(f"campaign seed {seed}, {steps} steps:", *(f"  {s}" for s in plan), sep="\n", flush=True)
    topology = Topology(System.host_names()).create()
    history: History | None = None
    first_dir = len(procs.DIRS)
    try:
        with topology.entered():
            system = System(topology)
            try:
                system.start()
                system.wait_routed(system.cluster.nodes[0])
                campaign = Campaign(system, seed, steps, quiet_s)
                try:
                    history = campaign.run()
                finally:
                    if out is not None:
                        out.mkdir(parents=True, exist_ok=True)
                        campaign.history.save(out / f"history-seed{seed}.json")
            finally:
                system.stop()
    finally:
        topology.destroy()
        dirs = procs.DIRS[first_dir:]
        if history is None:
            print("logs kept in:", *dirs, flush=True)
    outcome = Outcome(history, checker.check(history), checker.write_report(history))
    print(outcome.summary(), flush=True)
    if outcome.passed and not os.environ.get("AGRAJAG_KEEP_DIRS"):
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
    else:
        print("logs kept in:", *dirs, flush=True)
    return outcome


def _streams_from(primary: PgNode, node: PgNode, timeout: float = 30) -> bool:
    query = (
        "SELECT 1 FROM pg_stat_replication"
        f" WHERE application_name = '{node.name}' AND state = 'streaming'"
    )
    try:
        wait_until(lambda: primary.sql(query), timeout=timeout, what="streaming", interval=1)
    except TimeoutError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quiet", type=float, default=12.0, help="seconds between faults")
    parser.add_argument("--out", type=Path, default=Path("bench-results/campaign"))
    args = parser.parse_args(argv)
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # the recorder's reconnects
    outcome = run(args.seed, args.steps, quiet_s=args.quiet, out=args.out)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
