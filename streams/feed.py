"""Is data arriving? Wall-clock time since the last arrival, for the whole feed and per segment.

Stream time cannot tell: it stops when the feed stops. The window agent records the wall time of every
arrival (:meth:`FeedActivity.arrived`); ``/health`` turns degraded once nothing arrived for
``window.feed_stale_s`` (default ``idle_close_s``: three 30-s loop intervals), the gauge
``citybrain_feed_last_arrival_age_seconds`` exports the age, and ``citybrain_stale_segments`` counts segments
that reported since the worker started and have been quiet that long (a segment whose devices all went silent).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FeedStatus:
    """The feed as ``/health`` reports it."""

    last_arrival_age_s: float  # since the last arrival (since the worker started, before any)
    stale_after_s: float
    stale: bool
    stale_segments: int  # segments heard from since the start and quiet for stale_after_s
    reason: str | None  # why the feed is stale, for an operator


@dataclass
class FeedActivity:
    """Wall times (Unix s) of the last arrivals this worker saw."""

    started_wall_s: float
    last_arrival_wall_s: float | None = None
    segment_arrival_wall_s: dict[str, float] = field(default_factory=dict)

    def arrived(self, segment_id: str, now_wall_s: float) -> None:
        """A reading of ``segment_id`` arrived now."""
        self.last_arrival_wall_s = now_wall_s
        self.segment_arrival_wall_s[segment_id] = now_wall_s

    def age_s(self, now_wall_s: float) -> float:
        """Seconds since the last arrival (since the start while nothing arrived)."""
        last = self.last_arrival_wall_s if self.last_arrival_wall_s is not None else self.started_wall_s
        return max(0.0, now_wall_s - last)

    def stale_segments(self, now_wall_s: float, stale_after_s: float) -> int:
        return sum(1 for t in self.segment_arrival_wall_s.values() if now_wall_s - t >= stale_after_s)

    def status(self, now_wall_s: float, stale_after_s: float) -> FeedStatus:
        age = self.age_s(now_wall_s)
        stale = age >= stale_after_s
        reason = None
        if stale and self.last_arrival_wall_s is None:
            reason = f"no device events arrived in the {age:.0f} s since the worker started (limit {stale_after_s:g} s)"
        elif stale:
            reason = f"no device events arrived for {age:.0f} s (limit {stale_after_s:g} s)"
        return FeedStatus(
            last_arrival_age_s=round(age, 1),
            stale_after_s=stale_after_s,
            stale=stale,
            stale_segments=self.stale_segments(now_wall_s, stale_after_s),
            reason=reason,
        )
