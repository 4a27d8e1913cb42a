"""City-wide indicators from the segment states of one window, and live route travel times.

- **Travel-time index** (TTI, dimensionless, ≥ 1 in practice): Σ flow·actual travel time / Σ flow·free-flow
  travel time over segments with a speed estimate — the flow-weighted delay index cities are ranked by
  (1.0 = free flow, 1.5 = trips take 50 % longer).
- **Congested lane-km share** (0–1): lane-km of congested segments / lane-km of segments with a state.
- **Worst segments**: highest actual / free-flow travel-time ratio.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx


def city_indicators(
    states: Iterable[Mapping[str, Any]],
    segments: Mapping[str, Mapping[str, Any]],
    *,
    worst_n: int = 5,
) -> dict[str, Any]:
    """Indicators of one window.

    Parameters
    ----------
    states
        ``segment-state`` records of one window (``segment_id``, ``speed_kmh``, ``flow_veh_h``, ``congested``);
        records with ``n_readings == 0`` (segments filled from priors) are left out.
    segments
        Segment id → ``length_m`` (m), ``lanes``, ``speed_limit_kmh`` (km/h).
    worst_n
        How many worst segments to list.

    Returns
    -------
    dict
        ``travel_time_index``, ``congested_lane_km_share``, ``segments_reporting``, ``lane_km_reporting``,
        ``mean_speed_kmh`` (length-weighted), ``worst`` (list of ``{segment_id, ratio, speed_kmh}``).
    """
    num = den = 0.0
    lane_km = cong_lane_km = 0.0
    len_sum = speed_len = 0.0
    ratios: list[tuple[float, str, float]] = []
    n = 0
    for st in states:
        seg = segments.get(str(st["segment_id"]))
        if seg is None or st.get("n_readings") == 0:  # a prior-only fill is not a measurement
            continue
        n += 1
        length_km = float(seg["length_m"]) / 1000.0
        lkm = length_km * int(seg["lanes"])
        lane_km += lkm
        if st.get("congested"):
            cong_lane_km += lkm
        v = st.get("speed_kmh")
        v0 = float(seg["speed_limit_kmh"])
        if v is None or v <= 0:
            continue
        tt, tt0 = length_km / float(v), length_km / v0
        q = max(float(st.get("flow_veh_h") or 0.0), 1.0)  # an empty road still counts, lightly
        num += q * tt
        den += q * tt0
        len_sum += length_km
        speed_len += float(v) * length_km
        ratios.append((tt / tt0, str(st["segment_id"]), float(v)))
    ratios.sort(reverse=True)
    return {
        "travel_time_index": round(num / den, 4) if den else None,
        "congested_lane_km_share": round(cong_lane_km / lane_km, 4) if lane_km else None,
        "segments_reporting": n,
        "lane_km_reporting": round(lane_km, 3),
        "mean_speed_kmh": round(speed_len / len_sum, 2) if len_sum else None,
        "worst": [{"segment_id": s, "ratio": round(r, 3), "speed_kmh": round(v, 1)} for r, s, v in ratios[:worst_n]],
    }


def current_travel_times_s(graph: nx.MultiDiGraph, states: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Segment id → travel time (s) from the latest states; free-flow where a segment has no speed."""
    out: dict[str, float] = {}
    for _, _, k, d in graph.edges(keys=True, data=True):
        st = states.get(k)
        v = st.get("speed_kmh") if st else None
        out[k] = float(d["length_m"]) / (float(v) / 3.6) if v and v > 0.5 else float(d["free_flow_travel_time_s"])
    return out


def route_travel_time(
    graph: nx.MultiDiGraph, origin: str, destination: str, travel_times_s: Mapping[str, float]
) -> dict[str, Any]:
    """Fastest route on current travel times.

    Returns
    -------
    dict
        ``segments`` (ids in order), ``travel_time_s`` (s, expected), ``free_flow_travel_time_s`` (s),
        ``length_m`` (m).

    Raises
    ------
    networkx.NodeNotFound, networkx.NetworkXNoPath
    """
    for node in (origin, destination):
        if node not in graph:
            raise nx.NodeNotFound(f"unknown intersection {node!r}")

    def weight(u: str, v: str, edges: Mapping[str, Mapping[str, Any]]) -> float:
        return min(travel_times_s.get(k, float(d["free_flow_travel_time_s"])) for k, d in edges.items())

    nodes = nx.dijkstra_path(graph, origin, destination, weight=weight)
    segs: list[str] = []
    tt = tt0 = length = 0.0
    for u, v in itertools.pairwise(nodes):
        k, d = min(graph[u][v].items(), key=lambda kv: travel_times_s.get(kv[0], kv[1]["free_flow_travel_time_s"]))
        segs.append(k)
        tt += travel_times_s.get(k, float(d["free_flow_travel_time_s"]))
        tt0 += float(d["free_flow_travel_time_s"])
        length += float(d["length_m"])
    return {
        "origin": origin,
        "destination": destination,
        "segments": segs,
        "travel_time_s": round(tt, 1),
        "free_flow_travel_time_s": round(tt0, 1),
        "length_m": round(length, 1),
    }
