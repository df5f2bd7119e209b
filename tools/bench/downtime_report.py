"""bench_client_downtime's samples and what is made of them: stages, percentiles, target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.bench.bench_failover import summary

CONNECT_TIMEOUTS_S = (1, 10)
PROXIES = ("haproxy", "pgbouncer")
TARGET_OVER_PROMOTION_S = 0.3


@dataclass(frozen=True)
class Attempt:
    """One write attempt of a client, in seconds after the crash; port None: it failed."""

    start: float
    end: float
    port: int | None
    error: str = ""


@dataclass
class Sample:
    index: int
    cluster: str
    new_primary: str = ""
    loadavg_1m: float = 0.0
    promotion_s: float | None = None  # crash -> first write committed by another node
    promote_event_s: float | None = None  # crash -> repmgr's standby_promote row
    znode_s: float | None = None  # crash -> DataWatch names the new primary
    routed_s: dict[str, float | None] = field(default_factory=dict)  # proxy -> crash -> routed
    downtime_s: dict[str, float | None] = field(default_factory=dict)  # client -> downtime
    first_new_write_s: dict[str, float | None] = field(default_factory=dict)  # crash -> it
    errors_seen: dict[str, dict[str, int]] = field(default_factory=dict)  # client -> kinds
    longest_attempt_s: dict[str, float] = field(default_factory=dict)  # client, after crash
    #: acknowledged writes the new primary does not have (asynchronous replication)
    lost_writes: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)  # for the timeline
    #: the round that published the new primary, from its daemon's DEBUG line: node,
    #: trigger, and ms: its phases in ms (woke, repmgr, check, registry, publish, total)
    publishing_round: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def stages(s: Sample) -> dict[str, float | None]:
    """The stages of one failover, each from the end of the previous one (seconds)."""
    if s.promotion_s is None or s.znode_s is None:
        return {}
    stages: dict[str, float | None] = {
        "crash_to_promotion": s.promotion_s,
        "promotion_to_znode": s.znode_s - s.promotion_s,
        "promote_event_to_znode": (
            s.znode_s - s.promote_event_s if s.promote_event_s is not None else None
        ),
    }
    stages.update(_publishing_round(s, stages["promote_event_to_znode"]))
    for proxy in PROXIES:
        routed = s.routed_s.get(proxy)
        stages[f"znode_to_{proxy}"] = routed - s.znode_s if routed is not None else None
    for key, downtime in s.downtime_s.items():
        stages[f"downtime_{key}"] = downtime
        routed, wrote = s.routed_s.get(key.split("/")[0]), s.first_new_write_s.get(key)
        stages[f"routed_to_write_{key}"] = (
            wrote - routed if wrote is not None and routed is not None else None
        )
        stages[f"downtime_over_promotion_{key}"] = (
            downtime - s.promotion_s if downtime is not None else None
        )
    return stages


def _publishing_round(s: Sample, event_to_znode: float | None) -> dict[str, float | None]:
    """Where agrajag's share went: the event -> the publishing round's start (repmgr's hook,
    or how long before the event a polling round began: negative), and the round's repmgr
    read and ZooKeeper calls (the master, the guard, the epoch floor, the write)."""
    ms = s.publishing_round.get("ms")
    if not ms:
        return {}
    total = ms["total"] / 1e3
    return {
        "promote_event_to_publishing_round": (
            event_to_znode - total if event_to_znode is not None else None
        ),
        "publishing_round_repmgr": ms["repmgr"] / 1e3,
        "publishing_round_zookeeper": (ms["registry"] + ms["publish"]) / 1e3,
    }


def report(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.promotion_s is not None and s.znode_s is not None]
    per_sample = [stages(s) for s in ok]
    names = list(per_sample[0]) if per_sample else []
    result: dict[str, Any] = {
        name: summary([v for st in per_sample if (v := st.get(name)) is not None]) for name in names
    }
    result["lost_acknowledged_writes"] = {
        key: sum(s.lost_writes.get(key, 0) for s in ok) for key in (ok[0].lost_writes if ok else {})
    }
    result["target"] = {
        key: {
            "p99_over_promotion_ms": result[f"downtime_over_promotion_{key}"].get("p99_ms"),
            "limit_ms": TARGET_OVER_PROMOTION_S * 1e3,
            "met": bool(
                result[f"downtime_over_promotion_{key}"].get("n") == len(samples)
                and result[f"downtime_over_promotion_{key}"]["p99_ms"]
                <= TARGET_OVER_PROMOTION_S * 1e3
            ),
        }
        for key in (f"{p}/{t}s" for p in PROXIES for t in CONNECT_TIMEOUTS_S)
        if f"downtime_over_promotion_{key}" in result
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'stage':<44} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, s in result.items():
        if name in ("target", "lost_acknowledged_writes"):
            continue
        if not s.get("n"):
            print(f"{name:<44} {0:>3} {'-':>8} {'-':>8} {'-':>8}")
            continue
        print(f"{name:<44} {s['n']:>3} {s['p50_ms']:>8.0f} {s['p99_ms']:>8.0f} {s['max_ms']:>8.0f}")
    print(f"acknowledged writes missing on the new primary: {result['lost_acknowledged_writes']}")
    for key, t in result["target"].items():
        verdict = "met" if t["met"] else "MISSED"
        print(f"target downtime <= promotion + {t['limit_ms']:.0f} ms at p99, {key}: {verdict}")


def pick_timeline(samples: list[Sample]) -> Sample | None:
    """The failover whose HAProxy 1 s client downtime is the median: a typical one."""
    ok = [s for s in samples if not s.error and s.downtime_s.get("haproxy/1s") is not None]
    if not ok:
        return None
    ok.sort(key=lambda s: s.downtime_s["haproxy/1s"] or 0.0)
    return ok[len(ok) // 2]
