"""Applying the routed records to every sink, each on its own: one failing sink keeps its
previous config (the sink guarantees that) and is retried with backoff while the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agrajag.metrics import WatcherMetrics
from agrajag.record import MasterRecord
from agrajag.sinks import Sink, SinkError
from agrajag.watch.rules import Backoff

log = logging.getLogger(__name__)

View = Mapping[str, MasterRecord]
_RESULT_CHARS = 200  # a failure's message goes into the watcher's znode: keep it short


@dataclass(slots=True)
class _Progress:
    """Where one sink stands: what it has applied, and its failures since."""

    applied: View | None = None  # None: nothing applied by this process yet
    failed: View | None = None
    failures: int = 0
    retry_at: float = 0.0
    result: str = "pending"


class SinkRunner:
    """Brings every sink to the same view; `now` comes from the caller's clock."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        backoff: Backoff,
        metrics: WatcherMetrics,
        on_applied: Callable[[str, View], None] = lambda name, view: None,
    ) -> None:
        """`on_applied(sink name, view)` runs after each sink's successful apply, before the
        next sink's, so that what a sink has is saved even if the next one hangs."""
        self._sinks = list(sinks)
        self._backoff = backoff
        self._metrics = metrics
        self._on_applied = on_applied
        self._progress = {sink.name: _Progress() for sink in sinks}

    def apply(self, view: View, now: float) -> None:
        """Apply `view` to each sink that does not have it yet, unless it is waiting out a
        failure of that very view (a new view is tried at once: it may be a failover)."""
        for sink in self._sinks:
            progress = self._progress[sink.name]
            if progress.applied == view:
                continue
            if progress.failed == view and now < progress.retry_at:
                continue
            self._apply_one(sink, progress, view, now)

    def _apply_one(self, sink: Sink, progress: _Progress, view: View, now: float) -> None:
        try:
            result = sink.apply(view)
        except (SinkError, OSError) as exc:  # OSError: a file step the sink did not wrap
            progress.failures = progress.failures + 1 if progress.failed == view else 1
            progress.failed = view
            delay = self._backoff.delay(progress.failures)
            progress.retry_at = now + delay
            progress.result = f"failed: {exc}"[:_RESULT_CHARS]
            self._metrics.applies.labels(sink.name, "failed").inc()
            log.error(
                "sink %s failed (%d in a row), keeps its previous config, retry in %.1fs: %s",
                sink.name,
                progress.failures,
                delay,
                exc,
            )
            return
        progress.applied, progress.failed, progress.failures = view, None, 0
        progress.result = result.action
        self._metrics.applies.labels(sink.name, "changed" if result.changed else "unchanged").inc()
        if result.changed:
            self._metrics.last_apply.labels(sink.name).set_to_current_time()
            log.info("sink %s: %s", sink.name, result.action)
        self._on_applied(sink.name, view)

    def converged(self, view: View) -> bool:
        """True when every sink has applied `view`."""
        return all(progress.applied == view for progress in self._progress.values())

    def next_retry(self) -> float | None:
        """When the earliest failing sink is due again; None when none is failing."""
        due = [p.retry_at for p in self._progress.values() if p.failed is not None]
        return min(due, default=None)

    def results(self) -> dict[str, str]:
        """Each sink's latest outcome, for the watcher's acknowledgement."""
        return {name: progress.result for name, progress in self._progress.items()}
