"""Signal network model: physical constants and defaults, controller constraints, the road network.

:class:`SignalNetwork` holds the signalised intersections (:class:`IntersectionModel`: phase sequence,
intergreens, lanes and the green phases that serve them, pedestrian minimums), the segments
(:class:`SegmentModel`) and the detector maps of a road graph; :meth:`SignalNetwork.from_graph` builds it from
a contract road graph (``roadnet.load_trafficnet`` / ``grid_city``). :class:`SignalConstraints` are the limits
every plan respects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Base saturation flow, veh/h per lane (HCM ideal 1900 x typical urban adjustments).
SAT_FLOW_VEH_H_LANE = 1800.0
#: Saturation-flow factor of a lane that has a permissive (yielding) movement in the phase.
PERMISSIVE_FACTOR = 0.9
#: HCM start-up lost time and extension of effective green into the yellow, s.
STARTUP_LOST_S = 2.0
EXTENSION_S = 2.0
#: Camera vehicle classes counted as heavy vehicles, and their passenger-car equivalent (HCM E_T = 2).
HEAVY_CLASSES = frozenset({"truck", "bus", "heavy", "coach", "trailer"})
HEAVY_PCE = 2.0
#: Space a stopped vehicle takes in a queue, m.
JAM_SPACING_M = 7.5
#: HCM incremental-delay parameters: analysis period (h), pretimed k, upstream filtering I.
HCM_T_H = 0.25
HCM_K = 0.5
HCM_I = 1.0
#: Robertson platoon dispersion: alpha (TRANSYT's urban default is 0.35, for mixed real traffic), and beta
#: chosen so that the mean platoon travel time ``beta (1 + alpha) tau`` equals the cruise time ``tau``.
DISPERSION_ALPHA = 0.1
DISPERSION_BETA = 1.0 / (1.0 + DISPERSION_ALPHA)
#: Extra time of a platoon leaving a queue (acceleration to cruise speed), s.
ACCEL_PENALTY_S = 2.0
#: Degree of saturation above which the uniform-delay term is capped (the overflow term takes over).
X_UNIFORM_CAP = 0.95
#: Time lost per stop by deceleration + acceleration beyond the stopped delay, s: ``v/2a + v/2b`` at
#: 50 km/h with typical a = 2 m/s², b = 3 m/s².
STOP_PENALTY_S = 5.8
#: Flow gating factor on a lane whose every exit is spilled back.
SPILLBACK_GATE = 0.5


# ---------------------------------------------------------------------------------------------------------
# Constraints
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalConstraints:
    """Limits every plan respects (a real controller's safety and comfort constraints).

    Parameters
    ----------
    min_green_s : float
        Minimum displayed green of every green phase, s.
    cycle_min_s, cycle_max_s : float
        Cycle bounds, s. ``cycle_min_s = 0`` means "whatever the minimum greens and intergreens need".
    pedestrians : {"declared", "always", "never"}
        Where the pedestrian minimum applies (see the package docstring, :mod:`models.signals`).
    ped_walk_s : float
        Walk interval, s.
    ped_speed_m_s : float
        Pedestrian clearance walking speed, m/s.
    lane_width_m : float
        Lane width used to derive a crossing width from lane counts (``pedestrians="always"``), m.
    crosswalk_widths_m : Mapping[str, float] or None
        Declared crosswalks: approach segment id -> crossing width of that leg, m.
    max_green_change_s, max_green_change_frac : float
        Bounded change: a green may move by at most ``max(max_green_change_s, max_green_change_frac * g)``
        per plan step against the running plan (s, fraction). Never binds the minimums above.
    """

    min_green_s: float = 5.0
    cycle_min_s: float = 0.0
    cycle_max_s: float = 180.0
    pedestrians: str = "declared"
    ped_walk_s: float = 7.0
    ped_speed_m_s: float = 1.2
    lane_width_m: float = 3.2
    crosswalk_widths_m: Mapping[str, float] | None = None
    max_green_change_s: float = 10.0
    max_green_change_frac: float = 0.5

    def __post_init__(self) -> None:
        if self.pedestrians not in ("declared", "always", "never"):
            raise ValueError(f"pedestrians must be declared|always|never, got {self.pedestrians!r}")
        if self.min_green_s <= 0 or self.cycle_max_s <= 0 or self.ped_speed_m_s <= 0:
            raise ValueError("min_green_s, cycle_max_s and ped_speed_m_s must be > 0")
        if self.max_green_change_s < 0 or self.max_green_change_frac < 0:
            raise ValueError("bounded change limits must be >= 0")

    def ped_min_green_s(self, crossing_width_m: float) -> float:
        """Pedestrian minimum green for one crossing: ``walk + width / speed`` (s)."""
        return self.ped_walk_s + crossing_width_m / self.ped_speed_m_s

    def max_change_s(self, green_s: float) -> float:
        """Largest allowed change of a green of ``green_s`` seconds in one plan step, s."""
        return max(self.max_green_change_s, self.max_green_change_frac * green_s)


# ---------------------------------------------------------------------------------------------------------
# Network model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LaneModel:
    """One signalised approach lane.

    Attributes
    ----------
    lane_id, segment_id : str
        The lane and its approach segment.
    serving : tuple[int, ...]
        Green-phase numbers (0-based among the green phases) that give this lane a green.
    sat_flow_veh_h : float
        Saturation flow, veh/h.
    to_segments : tuple[str, ...]
        Exit segments its movements lead to.
    to_dirs : tuple[str, ...]
        Turn of each exit (``s``, ``l``, ``r``, ...; ``""`` when unknown).
    """

    lane_id: str
    segment_id: str
    serving: tuple[int, ...]
    sat_flow_veh_h: float
    to_segments: tuple[str, ...]
    to_dirs: tuple[str, ...] = ()


@dataclass
class IntersectionModel:
    """A signalised intersection: its phase sequence, lanes and constraints derived from the network.

    Attributes
    ----------
    tls_id : str
    node : str
    phase_durations_s : list[float]
        Durations of every phase of the network plan, s (green and non-green, in order).
    green_positions : list[int]
        Positions of the green phases in the phase list (the order of ``green_s`` lists).
    intergreen_s : list[float]
        Per green phase, the yellow + all-red time that follows it until the next green, s.
    lanes : list[LaneModel]
    approaches : dict[str, list[str]]
        Approach segment -> its lane ids.
    ped_min_s : list[float]
        Pedestrian minimum per green phase, s (0 where none applies).
    offset_s : float
        Network offset of the plan, s.
    """

    tls_id: str
    node: str
    phase_durations_s: list[float]
    green_positions: list[int]
    intergreen_s: list[float]
    lanes: list[LaneModel]
    approaches: dict[str, list[str]]
    ped_min_s: list[float]
    offset_s: float = 0.0

    @property
    def n_green(self) -> int:
        """Number of green phases."""
        return len(self.green_positions)

    @property
    def fixed_time_s(self) -> float:
        """Yellow + all-red time per cycle (kept as in the network), s."""
        greens = set(self.green_positions)
        return float(sum(d for i, d in enumerate(self.phase_durations_s) if i not in greens))

    @property
    def network_greens_s(self) -> list[float]:
        """Greens of the network (fixed) plan, s."""
        return [self.phase_durations_s[i] for i in self.green_positions]

    def lost_time_s(self) -> list[float]:
        """HCM lost time per green phase ``startup + intergreen - extension`` (>= 0), s."""
        return [max(0.0, STARTUP_LOST_S + ig - EXTENSION_S) for ig in self.intergreen_s]

    def durations(self, greens: Sequence[float]) -> list[float]:
        """All phase durations with ``greens`` substituted for the green phases, s."""
        out = list(self.phase_durations_s)
        for k, pos in enumerate(self.green_positions):
            out[pos] = float(greens[k])
        return out

    def min_greens_s(self, constraints: SignalConstraints) -> list[float]:
        """Per green phase, the larger of the minimum green and the pedestrian minimum, s."""
        return [max(constraints.min_green_s, p) for p in self.ped_min_s]


@dataclass
class SegmentModel:
    """A road segment as the signal model needs it (lengths in m, speed in km/h)."""

    segment_id: str
    from_node: str
    to_node: str
    length_m: float
    speed_limit_kmh: float
    lanes: int
    approach_gap_m: float  # junction crossing before the segment (from the upstream stop line), m
    upstream_tls: str | None
    downstream_tls: str | None


@dataclass
class SignalNetwork:
    """Intersections, segments and detector maps of a road graph."""

    intersections: dict[str, IntersectionModel]
    segments: dict[str, SegmentModel]
    mid_loops: dict[str, str]  # lane id -> mid-link loop id
    stop_loops: dict[str, str]  # lane id -> stop-line loop id
    cameras: dict[str, dict[str, Any]]  # segment id -> {"id", "zone_m", "lanes"}
    segment_lanes: dict[str, list[str]] = field(default_factory=dict)
    lane_segment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lane_segment:
            self.lane_segment = {ln: seg for seg, lanes in self.segment_lanes.items() for ln in lanes}

    def with_heavy_vehicles(self, heavy_share: Mapping[str, float]) -> SignalNetwork:
        """A copy whose lane saturation flows carry the HCM heavy-vehicle factor ``1 / (1 + P_HV (E_T - 1))``.

        Parameters
        ----------
        heavy_share : Mapping[str, float]
            Heavy-vehicle share per approach segment (0-1); segments without data keep their flow.
        """
        ixs = {}
        for t, ix in self.intersections.items():
            lanes = []
            for ln in ix.lanes:
                p = float(heavy_share.get(ln.segment_id, 0.0))
                f = 1.0 / (1.0 + min(max(p, 0.0), 1.0) * (HEAVY_PCE - 1.0))
                lanes.append(
                    LaneModel(ln.lane_id, ln.segment_id, ln.serving, ln.sat_flow_veh_h * f, ln.to_segments, ln.to_dirs)
                )
            ixs[t] = IntersectionModel(
                ix.tls_id,
                ix.node,
                ix.phase_durations_s,
                ix.green_positions,
                ix.intergreen_s,
                lanes,
                ix.approaches,
                ix.ped_min_s,
                ix.offset_s,
            )
        return SignalNetwork(
            ixs, self.segments, self.mid_loops, self.stop_loops, self.cameras, self.segment_lanes, self.lane_segment
        )

    @classmethod
    def from_graph(cls, G: Any, constraints: SignalConstraints | None = None) -> SignalNetwork:
        """Build the model from a contract road graph (``roadnet.load_trafficnet`` / ``grid_city``).

        Parameters
        ----------
        G : networkx.MultiDiGraph
            Contract road graph. Uses phase ``state`` strings and approach ``links`` when present (lane-level
            service and exits), else the approach ``green_phases`` for all its lanes.
        constraints : SignalConstraints, optional
            For the pedestrian minimums.

        Returns
        -------
        SignalNetwork
        """
        cons = constraints or SignalConstraints()
        segs: dict[str, SegmentModel] = {}
        seg_lanes: dict[str, list[str]] = {}
        for u, v, sid, d in G.edges(keys=True, data=True):
            gap = 0.0
            nu, nv = G.nodes[u], G.nodes[v]
            if "x_m" in nu and "x_m" in nv:
                gap = max(0.0, min(30.0, math.hypot(nu["x_m"] - nv["x_m"], nu["y_m"] - nv["y_m"]) - d["length_m"]))
            segs[sid] = SegmentModel(
                segment_id=sid,
                from_node=u,
                to_node=v,
                length_m=float(d["length_m"]),
                speed_limit_kmh=float(d["speed_limit_kmh"]),
                lanes=int(d["lanes"]),
                approach_gap_m=gap,
                upstream_tls=nu.get("tls_id"),
                downstream_tls=nv.get("tls_id"),
            )
            seg_lanes[sid] = [ln["lane_id"] for ln in d.get("lane_detail", [])]
        mid: dict[str, str] = {}
        stop: dict[str, str] = {}
        cams: dict[str, dict[str, Any]] = {}
        for did, det in G.graph.get("detectors", {}).items():
            if det["kind"] == "loop":
                (mid if det.get("role") == "mid_link" else stop)[det["lane"]] = did
            elif det["kind"] == "camera":
                zone = float(det.get("zone_length_m") or det.get("dist_to_stop_line_m") or 100.0)
                cams[det["segment_id"]] = {"id": did, "zone_m": zone, "lanes": list(det.get("lanes", []))}
        ixs: dict[str, IntersectionModel] = {}
        for tid, rec in G.graph.get("traffic_lights", {}).items():
            ix = _intersection_from_record(G, tid, rec, segs, seg_lanes, cons)
            if ix is not None:
                ixs[tid] = ix
        return cls(ixs, segs, mid, stop, cams, seg_lanes)


def _intersection_from_record(
    G: Any,
    tid: str,
    rec: Mapping[str, Any],
    segs: Mapping[str, SegmentModel],
    seg_lanes: Mapping[str, list[str]],
    cons: SignalConstraints,
) -> IntersectionModel | None:
    phases = list(rec["phases"])
    green_pos = [i for i, p in enumerate(phases) if p["kind"] == "green"]
    if not green_pos:
        return None
    n = len(phases)
    intergreen = []
    for pos in green_pos:
        ig, j = 0.0, (pos + 1) % n
        while phases[j]["kind"] != "green":
            ig += float(phases[j]["duration_s"])
            j = (j + 1) % n
        intergreen.append(ig)
    index_to_k = {int(phases[pos].get("index", pos)): k for k, pos in enumerate(green_pos)}
    node = rec.get("node", tid)
    lanes: list[LaneModel] = []
    approaches: dict[str, list[str]] = {}
    has_states = all("state" in phases[p] for p in green_pos)
    for a in rec["approaches"]:
        sid = a.get("segment_id") or a.get("edge")
        lane_ids = list(a.get("lanes") or seg_lanes.get(sid, []))
        approaches[sid] = lane_ids
        app_serving = tuple(sorted(index_to_k[g] for g in a.get("green_phases", []) if g in index_to_k))
        links = a.get("links") or []
        if not links:
            exits = tuple(k for _, _, k in G.out_edges(node, keys=True) if segs[k].to_node != segs[sid].from_node)
        for lid in lane_ids:
            llinks = [lk for lk in links if lk.get("from_lane") == lid]
            if llinks and has_states:
                serving: list[int] = []
                permissive = False
                for k, pos in enumerate(green_pos):
                    st = phases[pos]["state"]
                    chars = [st[lk["link_index"]] for lk in llinks if lk["link_index"] < len(st)]
                    if any(c in "Gg" for c in chars):
                        serving.append(k)
                        permissive = permissive or any(c == "g" for c in chars)
                serve = tuple(serving)
            else:
                serve = app_serving
                permissive = False
            if llinks:
                dirs_of = {lk["to_edge"]: str(lk.get("dir", "")) for lk in llinks}
                to = tuple(dirs_of)
                dirs = tuple(dirs_of[e] for e in to)
            else:
                to, dirs = exits, ("",) * len(exits)
            if not serve:
                continue
            sat = SAT_FLOW_VEH_H_LANE * (PERMISSIVE_FACTOR if permissive else 1.0)
            lanes.append(LaneModel(lid, sid, serve, sat, to, dirs))
    # pedestrian minimums: peds cross leg a while a's approach has no green
    ped = [0.0] * len(green_pos)
    if cons.pedestrians != "never":
        declared = dict(cons.crosswalk_widths_m or {})
        for c in rec.get("crossings", []) or []:
            if "segment_id" in c and "width_m" in c:
                declared[c["segment_id"]] = float(c["width_m"])
        for a in rec["approaches"]:
            sid = a.get("segment_id") or a.get("edge")
            if "crosswalk_width_m" in a:
                declared[sid] = float(a["crosswalk_width_m"])
        for a in rec["approaches"]:
            sid = a.get("segment_id") or a.get("edge")
            width = declared.get(sid)
            if width is None and cons.pedestrians == "always":
                s = segs[sid]
                back = [k for k, m in segs.items() if m.from_node == s.to_node and m.to_node == s.from_node]
                width = (s.lanes + sum(segs[b].lanes for b in back)) * cons.lane_width_m
            if width is None:
                continue
            served = {lm.serving for lm in lanes if lm.segment_id == sid}
            served_k = {k for t in served for k in t}
            for k in range(len(green_pos)):
                if k not in served_k:
                    ped[k] = max(ped[k], cons.ped_min_green_s(width))
    return IntersectionModel(
        tls_id=tid,
        node=node,
        phase_durations_s=[float(p["duration_s"]) for p in phases],
        green_positions=green_pos,
        intergreen_s=intergreen,
        lanes=lanes,
        approaches=approaches,
        ped_min_s=ped,
        offset_s=float(rec.get("offset_s", 0.0) or 0.0),
    )
