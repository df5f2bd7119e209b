"""Master records to write into a registry or hand to a sink: one builder for the tests, the
harness and the benchmarks."""

from __future__ import annotations

from agrajag.record import MasterRecord


def master_record(
    node: int = 1,
    epoch: int = 5,
    *,
    cluster: str = "main",
    host: str | None = None,
    port: int = 5432,
    timeline: int | None = 1,
    published_by: str = "node3",
    withdrawn: str | None = None,
) -> MasterRecord:
    """A valid record naming `node<node>` at 10.0.0.<node> unless `host` says otherwise."""
    return MasterRecord(
        cluster=cluster,
        epoch=epoch,
        node_id=node,
        node=f"node{node}",
        host=host or f"10.0.0.{node}",
        port=port,
        timeline=timeline,
        published_by=published_by,
        published_at="2026-11-22T00:00:00.000Z",
        withdrawn=withdrawn,
    )
