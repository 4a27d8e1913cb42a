"""What every importer derives the same way: default detectors, default signal plans, capacities, geometry.

The demo city (:mod:`roadnet.demo`) and every importer (SUMO, CityFlow, CBEngine, OSM) share these rules, so a
network from any source gets the same instrumentation:

* **Detectors** (:func:`segment_detectors`): a mid-link loop per lane ``loop_mid_<lane_id>`` at half the
  segment length (30 s interval); on signalised approaches also a stop-line loop per lane
  ``loop_stop_<lane_id>`` 5 m before the stop line (30 s) and a camera ``cam_<segment_id>`` covering the last
  100 m (or the whole segment when shorter; 60 s).
* **Default signal plan** (:func:`default_signal_plan`), for sources that mark a junction as signalised but
  carry no timing: the approaches are split by bearing into two axes ("N–S" and "E–W", measured relative to the
  junction's dominant road orientation so a rotated grid still separates its two roads) and served by a fixed
  two-phase plan: axis-1 green, yellow 3 s, axis-2 green, yellow 3 s; the greens share ``cycle_s - 6`` (cycle
  90 s by default). An axis without approaches (e.g. a signalised mid-block crossing) gets a ``red`` phase
  (the pedestrian stage) instead of a green one.
* **Capacity** (:func:`capacity_veh_h`): ``lanes × 1800 veh/h/lane × green ratio`` on signal-controlled
  approaches (green ratio = the approach's green time / cycle of the fixed plan, rounded to 3 decimals;
  capacity rounded to the vehicle, at least 1), ``lanes × 1800`` elsewhere. See :data:`CAPACITY_BASIS`.

Lane order follows SUMO and the demo city: lane index 0 is the rightmost (kerb-side) lane.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from roadnet.graph import index_segments, validate_graph

SAT_FLOW_VEH_H_PER_LANE = 1800.0
YELLOW_S = 3.0
DEFAULT_CYCLE_S = 90.0
LOOP_INTERVAL_S = 30.0
CAMERA_INTERVAL_S = 60.0
CAMERA_ZONE_M = 100.0
STOP_LINE_SETBACK_M = 5.0
APPROACH_HEADING_M = 30.0
"""How far back from the stop line an approach's heading is measured, metres."""
FRINGE_KIND = "dead_end"
"""Node ``kind`` of network-boundary nodes when the source does not name one."""
CAPACITY_BASIS = (
    "capacity_veh_h = lanes x 1800 veh/h/lane x green ratio of the fixed plan for signal-controlled approaches "
    "(signalised_end=true; ratio rounded to 3 decimals, capacity to the vehicle, at least 1); lanes x 1800 otherwise"
)

Point = Sequence[float]


# --------------------------------------------------------------------------------------------------- geometry


def polyline_length(points: Iterable[Point]) -> float:
    """Length of a planar polyline.

    Parameters
    ----------
    points : iterable of (x, y)
        Vertices, metres.

    Returns
    -------
    float
        Sum of the straight pieces, metres.
    """
    total = 0.0
    prev: Point | None = None
    for p in points:
        if prev is not None:
            total += math.hypot(p[0] - prev[0], p[1] - prev[1])
        prev = p
    return total


def _point_at(points: Sequence[Point], dist_m: float) -> list[float]:
    """The point ``dist_m`` metres along a polyline (clamped to its ends)."""
    if dist_m <= 0:
        return [float(points[0][0]), float(points[0][1])]
    run = 0.0
    for a, b in itertools.pairwise(points):
        seg = math.hypot(b[0] - a[0], b[1] - a[1])
        if seg > 0 and run + seg >= dist_m:
            t = (dist_m - run) / seg
            return [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
        run += seg
    return [float(points[-1][0]), float(points[-1][1])]


def cut_polyline(points: Sequence[Point], start_m: float, end_m: float) -> list[list[float]]:
    """Trim a polyline: drop ``start_m`` metres at its start and ``end_m`` metres at its end.

    Parameters
    ----------
    points : sequence of (x, y)
        At least two vertices, metres.
    start_m, end_m : float
        Metres to remove at each end (e.g. the half-widths of the junctions it joins).

    Returns
    -------
    list of [x, y]
        The trimmed polyline (>= 2 points); the untrimmed one (as lists) when the cuts would leave nothing.
    """
    pts = [[float(p[0]), float(p[1])] for p in points]
    total = polyline_length(pts)
    if start_m <= 0 and end_m <= 0:
        return pts
    if total - start_m - end_m <= 0:
        return pts
    out = [_point_at(pts, start_m)]
    run = 0.0
    for a, b in itertools.pairwise(pts):
        run += math.hypot(b[0] - a[0], b[1] - a[1])
        if start_m < run < total - end_m:
            out.append(b)
    out.append(_point_at(pts, total - end_m))
    return out


def bearing_deg(dx: float, dy: float) -> float:
    """Compass bearing of a planar vector (x east, y north): 0 = north, 90 = east, in [0, 360)."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def approach_heading_deg(geometry_xy_m: Sequence[Point], back_m: float = APPROACH_HEADING_M) -> float | None:
    """Direction of travel at the downstream end of a segment.

    Parameters
    ----------
    geometry_xy_m : sequence of (x, y)
        The segment's polyline, metres, in the direction of travel.
    back_m : float
        The heading is measured from the point this many metres before the end to the end.

    Returns
    -------
    float or None
        Compass bearing, degrees (0 = north, clockwise); None for a zero-length polyline.
    """
    pts = list(geometry_xy_m)
    total = polyline_length(pts)
    if total <= 0:
        return None
    start = _point_at(pts, max(0.0, total - back_m))
    end = pts[-1]
    dx, dy = end[0] - start[0], end[1] - start[1]
    if dx == 0 and dy == 0:
        return None
    return bearing_deg(dx, dy)


def split_axes(headings: Mapping[str, float | None]) -> tuple[list[str], list[str]]:
    """Split approaches into two road axes ("N–S" and "E–W") by their headings.

    The junction's grid orientation ψ is the circular mean of ``4 × heading`` (so opposite and perpendicular
    approaches agree); an approach belongs to the first axis when its heading is within 45° of ψ or ψ + 180°,
    else to the second. With north-aligned roads ψ = 0 and the axes are exactly north–south and east–west.

    Parameters
    ----------
    headings : mapping of segment_id -> bearing in degrees (None when unknown)
        Approach headings (direction of travel). Unknown headings go to the first axis.

    Returns
    -------
    tuple of (list[str], list[str])
        Segment ids on the first ("N–S") and second ("E–W") axis, each in the mapping's order.
    """
    known = [h for h in headings.values() if h is not None]
    s = sum(math.sin(math.radians(4 * h)) for h in known)
    c = sum(math.cos(math.radians(4 * h)) for h in known)
    psi = math.degrees(math.atan2(s, c)) / 4 if math.hypot(s, c) > 1e-9 else 0.0
    ns: list[str] = []
    ew: list[str] = []
    for sid, h in headings.items():
        if h is None:
            ns.append(sid)
            continue
        off = (h - psi) % 180.0  # 0..180: 0 or 180 = along the axis ψ
        (ns if min(off, 180.0 - off) < 45.0 else ew).append(sid)
    return ns, ew


# --------------------------------------------------------------------------------------------------- lanes


def lane_turns(lanes: int, index: int) -> list[str]:
    """Turns allowed from one lane into a 4-way junction (right-hand traffic, lane 0 rightmost).

    Parameters
    ----------
    lanes : int
        Lanes on the approach.
    index : int
        The lane (0 = rightmost).

    Returns
    -------
    list[str]
        SUMO direction letters: ``"l"`` left, ``"r"`` right, ``"s"`` straight.
    """
    if lanes == 1:
        return ["l", "r", "s"]
    if index == 0:
        return ["r", "s"]
    if index == lanes - 1:
        return ["l", "s"]
    return ["s"]


def lane_record(
    lane_id: str, index: int, length_m: float, speed_limit_kmh: float, turns: Iterable[str]
) -> dict[str, Any]:
    """One ``lane_detail`` entry (metres, km/h; turns as sorted unique SUMO direction letters)."""
    return {
        "lane_id": lane_id,
        "index": index,
        "length_m": float(length_m),
        "speed_limit_kmh": float(speed_limit_kmh),
        "turns": sorted(set(turns)),
    }


# --------------------------------------------------------------------------------------------------- detectors


def segment_detectors(
    segment_id: str,
    length_m: float,
    lane_ids: Sequence[str],
    tls_id: str | None,
    signalised: bool,
    ndigits: int | None = None,
) -> list[dict[str, Any]]:
    """The default detector layout of one segment.

    Parameters
    ----------
    segment_id : str
        The segment.
    length_m : float
        Its length, metres.
    lane_ids : sequence of str
        Its lanes, in index order (0 = rightmost).
    tls_id : str or None
        The traffic light at its downstream end (recorded on every detector, also mid-link loops).
    signalised : bool
        Whether that light controls the segment: adds the stop-line loops and the camera.
    ndigits : int, optional
        Round positions and distances to this many decimals (importers use 2, i.e. centimetres); None keeps the
        exact arithmetic (the demo city).

    Returns
    -------
    list of dict
        Detector records (contract format), in order: per lane the mid-link loop then the stop-line loop, then
        the camera. Positions ``pos_m`` / ``dist_to_stop_line_m`` in metres, ``interval_s`` in seconds.
    """

    def rnd(x: float) -> float:
        return x if ndigits is None else round(x, ndigits)

    recs: list[dict[str, Any]] = []
    for i, lid in enumerate(lane_ids):
        loops = [("mid_link", f"loop_mid_{lid}", round(length_m / 2, 2))]
        if signalised:
            loops.append(("stop_line", f"loop_stop_{lid}", rnd(max(0.0, length_m - STOP_LINE_SETBACK_M))))
        for role, did, pos in loops:
            recs.append(
                {
                    "detector_id": did,
                    "kind": "loop",
                    "segment_id": segment_id,
                    "interval_s": LOOP_INTERVAL_S,
                    "pos_m": pos,
                    "dist_to_stop_line_m": rnd(length_m - pos),
                    "tls_id": tls_id,
                    "lane": lid,
                    "lane_index": i,
                    "role": role,
                }
            )
    if signalised:
        zone = min(CAMERA_ZONE_M, length_m)
        recs.append(
            {
                "detector_id": f"cam_{segment_id}",
                "kind": "camera",
                "segment_id": segment_id,
                "interval_s": CAMERA_INTERVAL_S,
                "pos_m": rnd(length_m - zone),
                "dist_to_stop_line_m": zone,
                "tls_id": tls_id,
                "lanes": list(lane_ids),
                "zone_length_m": zone,
            }
        )
    return recs


# --------------------------------------------------------------------------------------------------- signals


def capacity_veh_h(lanes: int, green_ratio: float | None) -> float:
    """Segment capacity.

    Parameters
    ----------
    lanes : int
        Lane count.
    green_ratio : float or None
        Fixed-plan green ratio (0..1) of a signal-controlled approach; None when no light controls it.

    Returns
    -------
    float
        ``lanes × 1800 × green_ratio`` rounded to the vehicle (at least 1) when signalised, else
        ``lanes × 1800``; veh/h.
    """
    if green_ratio is None:
        return lanes * SAT_FLOW_VEH_H_PER_LANE
    return max(1.0, float(round(lanes * SAT_FLOW_VEH_H_PER_LANE * green_ratio)))


def tls_record(
    G: nx.MultiDiGraph,
    node: str,
    tls_id: str,
    phases: list[dict[str, Any]],
    approaches: Sequence[str],
    *,
    cycle_s: float | None = None,
    offset_s: float = 0.0,
    approach_extra: Mapping[str, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a contract traffic-light record; each approach's green phases and ratio come from ``phases``.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        The graph holding the approach segments (for their lane ids).
    node : str
        The controlled node.
    tls_id : str
        The light's id.
    phases : list of dict
        ``{"index", "duration_s", "kind", "green_approaches", ...}`` in cycle order (seconds).
    approaches : sequence of str
        The controlled segments (all ending at ``node``), in record order.
    cycle_s : float, optional
        Cycle length, seconds; default the sum of the phase durations.
    offset_s : float
        Plan offset, seconds.
    approach_extra : mapping, optional
        segment_id -> extra keys for its approach entry (e.g. SUMO ``links``).
    extra : mapping, optional
        Extra keys for the record (e.g. ``program_id``, ``type``).

    Returns
    -------
    dict
        The record; ``fixed_green_ratio`` = green seconds of the approach / cycle, rounded to 3 decimals.
    """
    cycle = float(cycle_s) if cycle_s is not None else float(sum(p["duration_s"] for p in phases))
    index = G.graph.get("segment_index") or {k: (u, v) for u, v, k in G.edges(keys=True)}
    recs = []
    for sid in approaches:
        u, v = index[sid]
        greens = [p["index"] for p in phases if p["kind"] == "green" and sid in p["green_approaches"]]
        green_s = sum(p["duration_s"] for p in phases if p["index"] in greens)
        rec: dict[str, Any] = {
            "segment_id": sid,
            "lanes": [ln["lane_id"] for ln in G.edges[u, v, sid]["lane_detail"]],
            "green_phases": greens,
            "fixed_green_ratio": round(green_s / cycle, 3) if cycle > 0 else 0.0,
        }
        if approach_extra and sid in approach_extra:
            rec.update(approach_extra[sid])
        recs.append(rec)
    out: dict[str, Any] = {
        "tls_id": tls_id,
        "node": node,
        "cycle_s": cycle,
        "offset_s": float(offset_s),
        "phases": phases,
        "approaches": recs,
    }
    if extra:
        out.update(extra)
    return out


def default_signal_plan(
    G: nx.MultiDiGraph,
    node: str,
    tls_id: str,
    *,
    cycle_s: float = DEFAULT_CYCLE_S,
    yellow_s: float = YELLOW_S,
    approaches: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Derive the default fixed two-phase plan of a signalised node (see the module docstring).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        The graph; the approaches' ``geometry_xy_m`` give their headings.
    node : str
        The signalised node.
    tls_id : str
        Id of the light.
    cycle_s : float
        Cycle, seconds (> 2 × ``yellow_s``).
    yellow_s : float
        Each yellow interval, seconds.
    approaches : sequence of str, optional
        Controlled segments; default every segment ending at ``node``, sorted by id.

    Returns
    -------
    dict
        The traffic-light record: phases ``[axis-1 green, yellow, axis-2 green, yellow]``, each green
        ``(cycle_s - 2 × yellow_s) / 2`` seconds, offset 0.
    """
    if cycle_s <= 2 * yellow_s:
        raise ValueError(f"default_signal_plan: need cycle_s > 2 * yellow_s, got {cycle_s=}, {yellow_s=}")
    in_edges = sorted(G.in_edges(node, keys=True), key=lambda e: e[2])
    if approaches is not None:
        wanted = set(approaches)
        in_edges = [e for e in in_edges if e[2] in wanted]
    headings = {sid: approach_heading_deg(G.edges[u, v, sid]["geometry_xy_m"]) for u, v, sid in in_edges}
    ns, ew = split_axes(headings)
    green_s = (cycle_s - 2 * yellow_s) / 2
    phases: list[dict[str, Any]] = [
        {"index": 0, "duration_s": green_s, "kind": "green" if ns else "red", "green_approaches": ns},
        {"index": 1, "duration_s": yellow_s, "kind": "yellow", "green_approaches": []},
        {"index": 2, "duration_s": green_s, "kind": "green" if ew else "red", "green_approaches": ew},
        {"index": 3, "duration_s": yellow_s, "kind": "yellow", "green_approaches": []},
    ]
    return tls_record(G, node, tls_id, phases, [sid for _, _, sid in in_edges], cycle_s=cycle_s)


# --------------------------------------------------------------------------------------------------- finishing


def is_fringe(G: nx.MultiDiGraph, node: str) -> bool:
    """Whether a node is on the network boundary: it connects to at most one other node."""
    others = (set(G.predecessors(node)) | set(G.successors(node))) - {node}
    return len(others) <= 1


def finish_graph(G: nx.MultiDiGraph, *, detectors: bool = True, ndigits: int | None = 2) -> nx.MultiDiGraph:
    """Complete an imported graph and check it against the contract.

    Every edge must already carry ``segment_id``, ``length_m``, ``lanes``, ``speed_limit_kmh``,
    ``lane_detail`` and ``geometry_xy_m``, and ``G.graph["traffic_lights"]`` every light. This derives, per
    edge, ``signalised_end`` (it is an approach of a light), ``capacity_veh_h`` (:func:`capacity_veh_h`),
    ``free_flow_travel_time_s`` and ``detector_ids``; adds the default detectors (:func:`segment_detectors`)
    when ``detectors`` is true; builds ``segment_index``; and validates.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        The graph, modified in place.
    detectors : bool
        Add the default detector layout (replacing any detectors already in ``G.graph["detectors"]``).
    ndigits : int or None
        Rounding of detector positions, decimals (metres).

    Returns
    -------
    networkx.MultiDiGraph
        ``G`` itself.

    Raises
    ------
    roadnet.graph.RoadnetError
        If the graph breaks the contract.
    """
    index_segments(G)
    approach_of: dict[str, tuple[str, float]] = {}
    for tid, rec in G.graph["traffic_lights"].items():
        for a in rec["approaches"]:
            approach_of[a["segment_id"]] = (tid, a["fixed_green_ratio"])
    if detectors:
        G.graph["detectors"] = {}
    dets: dict[str, dict[str, Any]] = G.graph["detectors"]
    for _, _, sid, d in G.edges(keys=True, data=True):
        tls = approach_of.get(sid)
        d["signalised_end"] = tls is not None
        d["capacity_veh_h"] = capacity_veh_h(d["lanes"], tls[1] if tls else None)
        d["free_flow_travel_time_s"] = d["length_m"] / (d["speed_limit_kmh"] / 3.6)
        d["detector_ids"] = []
        if detectors:
            lane_ids = [ln["lane_id"] for ln in d["lane_detail"]]
            for rec in segment_detectors(
                sid, d["length_m"], lane_ids, tls[0] if tls else None, tls is not None, ndigits
            ):
                dets[rec["detector_id"]] = rec
                d["detector_ids"].append(rec["detector_id"])
    if not detectors:  # keep the source's detectors; validate_graph reports any on unknown segments
        for did, rec in dets.items():
            u, v = G.graph["segment_index"].get(rec.get("segment_id"), (None, None))
            if G.has_edge(u, v, rec.get("segment_id")):
                G.edges[u, v, rec["segment_id"]]["detector_ids"].append(did)
    validate_graph(G)
    return G
