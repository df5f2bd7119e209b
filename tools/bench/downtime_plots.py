"""The pictures of bench_client_downtime: one failover's timeline, and the distributions.

Needs matplotlib (the `bench` extra: pip install -e '.[bench]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file-only backend

EVENTS = (  # timeline key, label, colour
    ("promote_event_s", "repmgr standby_promote", "tab:purple"),
    ("promotion_s", "new primary writable", "tab:blue"),
    ("znode_s", "master znode", "tab:orange"),
)
ROUTED_COLOURS = {"haproxy": "tab:green", "pgbouncer": "tab:brown"}
STAGES = (  # stage key in a sample's stages_s, label
    ("crash_to_promotion", "crash -> promotion"),
    ("promote_event_to_znode", "standby_promote -> znode"),
    ("promotion_to_znode", "promotion -> znode"),
    ("znode_to_haproxy", "znode -> HAProxy routes"),
    ("znode_to_pgbouncer", "znode -> PgBouncer routes"),
    ("downtime_haproxy/1s", "downtime, HAProxy, timeout 1 s"),
    ("downtime_haproxy/10s", "downtime, HAProxy, timeout 10 s"),
    ("downtime_pgbouncer/1s", "downtime, PgBouncer, timeout 1 s"),
    ("downtime_pgbouncer/10s", "downtime, PgBouncer, timeout 10 s"),
    ("downtime_over_promotion_haproxy/1s", "downtime - promotion, HAProxy, 1 s"),
    ("downtime_over_promotion_haproxy/10s", "downtime - promotion, HAProxy, 10 s"),
    ("downtime_over_promotion_pgbouncer/1s", "downtime - promotion, PgBouncer, 1 s"),
    ("downtime_over_promotion_pgbouncer/10s", "downtime - promotion, PgBouncer, 10 s"),
)
TARGET_MS = 300  # downtime - promotion, at p99


def draw(data: dict[str, Any], out: Path, name: str) -> list[Path]:
    paths = [_distribution(data, out / f"{name}-distribution.png")]
    if data.get("timeline"):
        paths.append(_timeline(data["timeline"], out / f"{name}-timeline.png"))
    return paths


def _timeline(s: dict[str, Any], path: Path) -> Path:
    """Every write attempt of every client around the crash (t = 0), with the milestones:
    the whole failover on top, and below a close-up of the switch (from just before the
    promotion to the last client via HAProxy writing again)."""
    keys = list(s["attempts"])
    fig, (whole, close) = plt.subplots(2, 1, figsize=(11, 2.4 + 1.2 * len(keys)))
    _attempts(whole, s, keys, labels=True)
    _attempts(close, s, keys, labels=False)
    resumed = [s["first_new_write_s"][k] for k in keys if k.startswith("haproxy")]
    start = (s["promotion_s"] or 0.0) - 0.3
    close.set_xlim(start, max([*resumed, (s["znode_s"] or start) + 0.3]) + 0.2)
    whole.set_title(f"One primary-node crash ({s['cluster']}): clients writing every 10 ms")
    close.set_title("close-up of the switch", fontsize=9)
    close.set_xlabel(
        "seconds after the crash; a bar is one write attempt from its start to its answer"
        " (green: acknowledged, red: failed)"
    )
    whole.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _attempts(ax: Any, s: dict[str, Any], keys: list[str], labels: bool) -> None:
    for row, key in enumerate(keys):
        attempts = s["attempts"][key]
        ok = [(a["start"], a["end"] - a["start"]) for a in attempts if a["port"] is not None]
        bad = [(a["start"], a["end"] - a["start"]) for a in attempts if a["port"] is None]
        ax.broken_barh(ok, (row - 0.3, 0.6), color="tab:green", alpha=0.6)
        ax.broken_barh(bad, (row - 0.3, 0.6), color="tab:red", alpha=0.8)
        down = s["downtime_s"].get(key)
        if labels and down is not None:
            ax.text(-0.3, row + 0.36, f"downtime {down * 1e3:.0f} ms", fontsize=8)
    ax.axvline(0, color="black", lw=1.5, label="crash (PostgreSQL, repmgrd, daemon killed)")
    for key, label, colour in EVENTS:
        if s.get(key) is not None:
            ax.axvline(s[key], color=colour, lw=1.2, ls="--", label=f"{label} {s[key]:.2f} s")
    for proxy, at in s["routed_s"].items():
        if at is not None:
            ax.axvline(
                at, color=ROUTED_COLOURS[proxy], lw=1.2, ls=":", label=f"{proxy} routes {at:.2f} s"
            )
    ax.set_yticks(range(len(keys)), [f"via {k}" for k in keys])
    ax.set_ylim(-0.6, len(keys) - 0.1)


def _distribution(data: dict[str, Any], path: Path) -> Path:
    """Each stage over all failovers: a box and every sample."""
    rows = [
        (
            label,
            [st[key] * 1e3 for s in data["samples"] if (st := s["stages_s"]).get(key) is not None],
        )
        for key, label in STAGES
    ]
    rows = [(label, values) for label, values in rows if values]
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.55 * len(rows)))
    ax.boxplot([v for _, v in rows], vert=False, widths=0.5, showfliers=False)
    for i, (_, values) in enumerate(rows, start=1):
        ax.scatter(values, [i] * len(values), s=12, color="tab:blue", alpha=0.6, zorder=3)
    ax.set_yticks(range(1, len(rows) + 1), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.axvline(TARGET_MS, color="tab:red", lw=1, ls="--", label="target for downtime - promotion")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    n = len(data["samples"])
    ax.set_title(f"{n} primary-node crashes: each stage, and client write downtime")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
