"""Web views on the worker's web port: ``/health``, ``/metrics`` and a small read API of live segment states.

- ``GET /health`` → ``{"status": "ok"|"degraded"|"starting", "reasons": [...], "assigned_partitions": n,
  "rebalancing": bool, "recovering": bool, "feed": {...}}``; HTTP 503 while starting, rebalancing or recovering
  tables. ``degraded`` (HTTP 200: the worker works, its input does not) when no device event arrived for
  ``window.feed_stale_s`` wall seconds (``streams.feed``): a dead bridge or a silent city.
- ``GET /metrics`` → Prometheus text exposition of this worker's registry.
- ``GET /api/segments`` → the latest ``segment-state`` of every segment this worker owns.
- ``GET /api/segments/{segment_id}`` → one segment's latest state (404 if none yet on this worker).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from streams.app import Pipeline


def health(pipe: Pipeline) -> tuple[int, dict[str, Any]]:
    """Worker health: (HTTP status, body)."""
    app = pipe.app
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # consumer not started yet
        assigned = 0
    recovering = bool(getattr(app, "in_recovery", False))
    ok = assigned > 0 and not app.rebalancing and not recovering
    feed = pipe.feed.status(time.time(), pipe.settings.window.stale_after_s)
    reasons = [feed.reason] if feed.reason else []
    body = {
        "status": ("degraded" if reasons else "ok") if ok else "starting",
        "reasons": reasons,
        "app_id": pipe.settings.app_id,
        "assigned_partitions": assigned,
        "rebalancing": bool(app.rebalancing),
        "recovering": recovering,
        "segments_known": len(pipe.segments),
        "segments_with_state": len(pipe.latest_states),
        "feed": asdict(feed),
    }
    return (200 if ok else 503), body


def register(pipe: Pipeline) -> None:
    app = pipe.app
    stale_after_s = pipe.settings.window.stale_after_s
    # evaluated at each scrape, so the age keeps growing while nothing arrives
    pipe.worker_metrics.feed_last_arrival_age.set_function(lambda: pipe.feed.age_s(time.time()))
    pipe.worker_metrics.stale_segments.set_function(lambda: pipe.feed.stale_segments(time.time(), stale_after_s))

    @app.page("/health")
    async def health_view(self: Any, request: Any) -> Any:
        status, body = health(pipe)
        return self.json(body, status=status)

    @app.page("/metrics")
    async def metrics_view(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(pipe.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/segments")
    async def segments_view(self: Any, request: Any) -> Any:
        return self.json({"segments": list(pipe.latest_states.values())})

    @app.page("/api/segments/{segment_id}")
    async def segment_view(self: Any, request: Any, segment_id: str) -> Any:
        state = pipe.latest_states.get(segment_id)
        if state is None:
            known = segment_id in pipe.segments
            msg = "no state yet on this worker" if known else "unknown segment"
            return self.json({"error": msg, "segment_id": segment_id}, status=404)
        return self.json(state)
