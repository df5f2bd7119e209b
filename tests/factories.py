"""Values the tests build again and again: master records, repmgr views, probe rounds.

Not a test module: tests import these instead of importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agrajag.daemon.probe_values import NodeCheck, Outcome, ProbeRound
from agrajag.daemon.repmgr import parse_cluster_show
from agrajag.daemon.view import ClusterView
from agrajag.record import NodeRecord
from agrajag.zookeeper_settings import Role
from tools.harness.identities import secure_example, write_secret
from tools.harness.records import master_record as master_record
from tools.harness.shipped import example

REPMGR_HEADER = (
    " ID | Name | Role | Status | Upstream | Location | Priority | Timeline | Connection string\n"
    "----+------+------+--------+----------+----------+----------+----------+------------------\n"
)


def node_record(node: str) -> NodeRecord:
    """A daemon's liveness record."""
    return NodeRecord(node=node, node_id=None, pid=1, version="test", started_at="now")


def repmgr_row(i: int, role: str, status: str, tli: int | None, upstream: str = "") -> str:
    """One row of `repmgr cluster show` for node<i> at 10.0.0.<i>:5432."""
    conninfo = f"host=10.0.0.{i} port=5432 dbname=repmgr"
    tl = "" if tli is None else str(tli)
    return f" {i}  | node{i} | {role} | {status} | {upstream} | default | 100 | {tl} | {conninfo}"


def repmgr_view(*rows: str) -> ClusterView:
    return parse_cluster_show(REPMGR_HEADER + "\n".join(rows) + "\n")


HEALTHY = repmgr_view(
    repmgr_row(1, "primary", "* running", 1),
    repmgr_row(2, "standby", "  running", 1, "node1"),
    repmgr_row(3, "standby", "  running", 1, "node1"),
)
FAILED_OVER = repmgr_view(
    repmgr_row(1, "primary", "- failed", None, "?"),
    repmgr_row(2, "primary", "* running", 2),
    repmgr_row(3, "standby", "  running", 2, "node2"),
)


def probe(**outcomes: Outcome) -> ProbeRound:
    """A probe round: probe(node1=Outcome.WRITABLE, node2=Outcome.READ_ONLY)."""
    return ProbeRound(tuple(NodeCheck(n, o, 0.01, "") for n, o in outcomes.items()))


def shipped_config(name: str, home: Path, role: Role) -> dict[str, Any]:
    """conf.d's example `name` with its secret and TLS files made in `home` (the example's
    own paths under /etc do not exist here): the identity is the harness's, the TLS files
    placeholders with the example's modes."""
    conf = example(name)
    zookeeper = conf["zookeeper"]
    tls = {key: home / Path(path).name for key, path in zookeeper["tls"].items()}
    secure_example(zookeeper, home, role, tls={k: str(p) for k, p in tls.items()})
    for path in tls.values():
        write_secret(path, "placeholder")
    return conf
