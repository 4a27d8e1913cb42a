"""Timer ``city-indicators`` (leader only): one ``city-summary`` per window from the whole-city output view.

The output view (``streams/console_view.py``) reads every partition of ``segment-state`` on every worker, so the
leader alone can compute city indicators without a repartition. A window is summarised once all segments of the
graph have reported, or when two newer windows exist, or when it has not changed for ``QUIET_S`` seconds. The
summary id is ``{city}@{window end}``: a new leader after a rebalance may publish a recent window again, with the
same id.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from models.indicators import city_indicators
from streams.metrics import CityMetrics
from streams.records import CitySummary

if TYPE_CHECKING:
    from streams.app import Pipeline

QUIET_S = 10.0


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    topic = app.topic(settings.topics.name("city_summary"), key_type=str, value_type=CitySummary)
    city_metrics = CityMetrics.create(pipe.registry)
    tti, cong = city_metrics.travel_time_index, city_metrics.congested_lane_km_ratio
    published: set[str] = set()
    n_total = len(pipe.segments)

    async def publish(ts: str, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ind = city_indicators(states.values(), pipe.segments)
        rec = CitySummary(
            summary_id=f"{settings.city}@{ts}",
            city=settings.city,
            ts=ts,
            window_s=settings.window.size_s,
            travel_time_index=ind["travel_time_index"],
            congested_lane_km_share=ind["congested_lane_km_share"],
            mean_speed_kmh=ind["mean_speed_kmh"],
            segments_reporting=ind["segments_reporting"],
            segments_total=n_total,
            lane_km_reporting=ind["lane_km_reporting"],
            worst=ind["worst"],
        )
        await topic.send(key=settings.city, value=rec)
        published.add(ts)
        pipe.console_view.summarised.add(ts)
        return ind

    @app.timer(2.0, on_leader=True, name="city-indicators")
    async def city_indicators_timer() -> None:
        view = pipe.console_view
        if view is None:
            return
        while view.evicted:  # windows the view had to drop before they were summarised
            ts, states = view.evicted.popleft()
            if ts not in published:
                await publish(ts, states)
        windows = sorted(view.windows)
        now = time.monotonic()
        for i, ts in enumerate(windows):
            if ts in published:
                continue
            states = view.windows.get(ts)
            if states is None:  # evicted while we awaited: it is in view.evicted and is summarised next tick
                continue
            complete = len(states) >= n_total
            superseded = len(windows) - i > 2
            quiet = now - view.window_touched.get(ts, now) > QUIET_S
            if not (complete or superseded or quiet):
                continue
            ind = await publish(ts, states)
            if ind["travel_time_index"] is not None:
                tti.set(ind["travel_time_index"])
            if ind["congested_lane_km_share"] is not None:
                cong.set(ind["congested_lane_km_share"])
        if len(published) > 5000:
            keep = set(windows)
            published.intersection_update(keep)
            view.summarised.intersection_update(keep)
