"""City indicators and live route travel times on hand-computed cases."""

from __future__ import annotations

import networkx as nx
import pytest

import roadnet
from models.indicators import city_indicators, current_travel_times_s, route_travel_time

SEGS = {
    "a": {"length_m": 1000.0, "lanes": 2, "speed_limit_kmh": 50.0},
    "b": {"length_m": 500.0, "lanes": 1, "speed_limit_kmh": 50.0},
}


def test_city_indicators_by_hand() -> None:
    states = [
        {"segment_id": "a", "speed_kmh": 25.0, "flow_veh_h": 600.0, "congested": True},
        {"segment_id": "b", "speed_kmh": 50.0, "flow_veh_h": 300.0, "congested": False},
    ]
    ind = city_indicators(states, SEGS)
    # TTI = (600·1/25 + 300·0.5/50) / (600·1/50 + 300·0.5/50) = (24 + 3) / (12 + 3) = 1.8
    assert ind["travel_time_index"] == pytest.approx(1.8)
    # congested lane-km: 1 km x 2 lanes of 2 + 0.5 = 2.5 lane-km → 0.8
    assert ind["congested_lane_km_share"] == pytest.approx(0.8)
    assert ind["worst"][0] == {"segment_id": "a", "ratio": 2.0, "speed_kmh": 25.0}
    # length-weighted mean speed: (25·1 + 50·0.5) / 1.5 = 33.33
    assert ind["mean_speed_kmh"] == pytest.approx(33.33)


def test_empty_window() -> None:
    ind = city_indicators([], SEGS)
    assert ind["travel_time_index"] is None and ind["segments_reporting"] == 0


def test_route_avoids_a_jam() -> None:
    g = roadnet.grid_city(2, 2)
    free = current_travel_times_s(g, {})
    direct = route_travel_time(g, "A0", "B1", free)
    assert len(direct["segments"]) == 2
    # jam the first segment of the free-flow route: the route must switch to the other side of the block
    first = direct["segments"][0]
    jammed = current_travel_times_s(g, {first: {"speed_kmh": 2.0}})
    assert jammed[first] == pytest.approx(300.0 / (2.0 / 3.6))
    detour = route_travel_time(g, "A0", "B1", jammed)
    assert first not in detour["segments"]
    assert detour["travel_time_s"] == pytest.approx(direct["travel_time_s"])  # symmetric block, same free time
    with pytest.raises(nx.NodeNotFound):
        route_travel_time(g, "A0", "Z9", free)
