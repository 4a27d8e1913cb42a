"""Signal timing: demand estimation, constrained Webster, a coordinated adaptive policy, HCM delay, recommendations.

Everything here is pure numpy (no I/O). Units: flows in veh/h (per lane unless said otherwise), times in
seconds, lengths in metres, speeds in km/h unless a name says ``_m_s``.

**Demand** (:class:`DemandEstimator`). Stop-line loops count the vehicles that were *served*; on an
oversaturated approach they read the capacity, not the demand, and the approach looks quiet. Arrivals are
measured upstream instead: per approach ``demand = max(Σ mid-link loop counts, Σ stop-line counts + growth of
the camera queue)``, split over the lanes by the stop-line lane shares (lane choice is made after the
mid-link loop), smoothed over periods with an exponential filter. Camera queues and mid-link occupancy also
flag spill-back (a queue reaching the middle of the link). The estimator is fed device-schema-v1 events one
at a time and its state is a JSON-able dict.

**Webster with real-controller constraints** (:func:`webster_plan`, :func:`constrain_greens`). Lost time per
green phase ``l = startup_lost + intergreen - extension`` (defaults 2 s + yellow/all-red - 2 s, i.e. the
intergreen), ``C0 = (1.5 L + 5) / (1 - Y)`` with ``Y`` the sum of the critical flow ratios ``y = q / s`` of the
green phases, effective greens in proportion to ``y``. Then, in this order of precedence: minimum green,
pedestrian minimum, yellow and all-red kept as in the network, cycle bounds, bounded change against the
running plan (transition shock), whole seconds. :func:`check_greens` lists violations and every public
planner asserts there are none.

**Adaptive coordinated policy** (:func:`recommend`). Signals that share one cycle keep their relative timing
(the harness installs a plan at the next start of phase 0, so absolute phase-0 times are preserved), so a
*common cycle* chosen against the link travel times gives green waves without any offset command. For every
candidate common cycle the greens come from constrained Webster (per intersection), and the network delay
is evaluated with a cyclic-flow-profile model (TRANSYT style): departures of each upstream lane (queue
discharge at saturation flow, then arrivals), split over the exits by turning shares balanced against the
exits' mid-link counts (Furness), shifted by the link travel time measured by the mid-link loops and by
the phase-0 times, and dispersed (Robertson), give the arrival profile at the downstream stop line; a
deterministic queue over the cycle gives the uniform delay and the stops (each stop costs
``STOP_PENALTY_S`` more), HCM's incremental term (with its upstream-filtering factor) the random/overflow
delay. The cycle taken is the longest within ``cycle_tolerance`` (8 %) of the best in ``[C_best, 1.25
C_best]`` (the delay curve is steep below the optimum, flat above it), the running one if it is among them.
Saturation flow carries the HCM heavy-vehicle factor from the camera class counts. Saturation and
spill-back: demand includes queue growth, lanes whose every exit is spilled back (queue at mid-link on the
receiving link) are gated (their flow is not worth green), and the overflow term drives the cycle up where
``X -> 1``. Bounded change: while it keeps the wanted cycle out of reach the policy moves towards it step
by step, unless :func:`transition_is_safe` shows that the first new cycle clears every queue the old plan
leaves (the shock the limit guards against); then it goes there directly. An isolated alternative (each
signal at its own Webster cycle) can be enabled (``PolicyConfig.isolated_alternative``).

**Pedestrian minimum.** A green phase during which pedestrians cross leg ``a`` (its approach has red) lasts
at least ``walk + width / speed`` (defaults 7 s + width / 1.2 m/s). It applies where the network declares a
crosswalk (approach or traffic-light record: ``crosswalk_width_m`` / ``crossings``, or
``SignalConstraints.crosswalk_widths_m``), or everywhere with ``pedestrians="always"`` (width = lanes of the
leg both ways x ``lane_width_m``). The SUMO scenario has no pedestrians and declares no crosswalks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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
        Where the pedestrian minimum applies (see the module docstring).
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


# ---------------------------------------------------------------------------------------------------------
# Demand estimation (streaming)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DemandSnapshot:
    """Smoothed demand and queue state at one decision time.

    Attributes
    ----------
    t_s : float
        Decision time, s.
    lane_demand_veh_h : dict[str, float]
        Arrival demand per approach lane, veh/h.
    lane_served_veh_h : dict[str, float]
        Stop-line (served) flow per lane, veh/h.
    approach_demand_veh_h : dict[str, float]
        Arrival demand per approach segment, veh/h (all lanes).
    queue_veh : dict[str, float]
        Mean camera queue per segment over the period, vehicles (all lanes).
    spillback : set[str]
        Segments whose queue reaches the mid-link loops (or overflows the camera zone at crawling speed).
    speed_kmh : dict[str, float]
        Mid-link spot speed per segment (count-weighted), km/h.
    segment_flow_veh_h : dict[str, float]
        Mid-link flow per segment (every segment whose lanes all have a mid-link loop), veh/h.
    heavy_share : dict[str, float]
        Share of heavy vehicles (camera classes in ``HEAVY_CLASSES``) per approach segment.
    occupancy : dict[str, float]
        Mean mid-link loop occupancy per segment (0-1).
    """

    t_s: float
    lane_demand_veh_h: dict[str, float]
    lane_served_veh_h: dict[str, float]
    approach_demand_veh_h: dict[str, float]
    queue_veh: dict[str, float]
    spillback: set[str]
    speed_kmh: dict[str, float]
    segment_flow_veh_h: dict[str, float] = field(default_factory=dict)
    heavy_share: dict[str, float] = field(default_factory=dict)
    occupancy: dict[str, float] = field(default_factory=dict)


class DemandEstimator:
    """Streaming per-lane demand from upstream mid-link loops and camera queues (device-schema-v1 events).

    Feed every event with :meth:`update`; call :meth:`snapshot` at each decision. Per period and approach
    ``D = max(Σ mid-link counts, Σ stop-line counts + Δ mean camera queue)`` per hour; lanes get ``D`` in
    proportion to their stop-line shares (mid-link shares, then equal shares, without counts). Rates are
    smoothed with ``x <- x + a (rate - x)``, ``a = 1 - exp(-span / smoothing_s)``.

    Parameters
    ----------
    net : SignalNetwork
        Lanes, segments and detector maps.
    smoothing_s : float
        Time constant of the exponential smoothing, s.
    spill_occupancy : float
        Mid-link loop occupancy (0-1) above which the queue is taken to reach the loop.
    """

    def __init__(self, net: SignalNetwork, smoothing_s: float = 150.0, spill_occupancy: float = 0.3) -> None:
        self.net = net
        self.smoothing_s = smoothing_s
        self.spill_occupancy = spill_occupancy
        self._acc: dict[str, dict[str, list[float]]] = {"mid": {}, "stop": {}, "cam": {}}
        self.state: dict[str, Any] = {
            "t_s": None,
            "approach_demand": {},
            "lane_share": {},
            "queue": {},
            "speed": {},
            "prev_queue": {},
        }

    def update(self, event: Mapping[str, Any]) -> None:
        """Account one loop or camera event (others are ignored)."""
        typ = event.get("type")
        if typ == "loop":
            lane = event.get("lane")
            if lane is None:
                return
            key = "mid" if event.get("role") == "mid_link" else "stop"
            acc = self._acc[key].setdefault(lane, [0.0, 0.0, 0.0, 0.0, 0.0])
            cnt = float(event.get("count") or 0)
            acc[0] += cnt
            acc[1] += float(event.get("interval_s") or 0)
            acc[2] += float(event.get("occupancy") or 0.0) * float(event.get("interval_s") or 0)
            spd = event.get("speed_kmh")
            if spd is not None and cnt > 0:
                acc[3] += float(spd) * cnt
                acc[4] += cnt
        elif typ == "camera":
            seg = event.get("segment_id")
            if seg is None:
                return
            acc = self._acc["cam"].setdefault(seg, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += float(event.get("queue_len_veh") or 0)
            acc[1] += float(event.get("queue_max_veh") or 0)
            acc[2] += 1.0
            acc[3] += float(event.get("interval_s") or 0)
            counts = event.get("counts") or {}
            for cls, c in counts.items():
                acc[4] += float(c or 0)
                if cls in HEAVY_CLASSES:
                    acc[5] += float(c or 0)

    def snapshot(self, t_s: float) -> DemandSnapshot:
        """Close the period ending at ``t_s``, update the smoothed state and return the estimates."""
        st = self.state
        span = float(t_s - st["t_s"]) if st["t_s"] is not None else float(t_s)
        a = 1.0 - math.exp(-max(span, 1.0) / self.smoothing_s)

        def smooth(table: dict[str, float], key: str, value: float) -> None:
            table[key] = value if key not in table else table[key] + a * (value - table[key])

        mid_rate: dict[str, float] = {}
        spill_mid: set[str] = set()
        for lane, (cnt, secs, occ, _, _) in self._acc["mid"].items():
            if secs <= 0:
                continue
            mid_rate[lane] = cnt / secs * 3600.0
            if occ / secs >= self.spill_occupancy:
                seg = self._lane_segment(lane)
                if seg is not None:
                    spill_mid.add(seg)
        stop_rate = {ln: c[0] / c[1] * 3600.0 for ln, c in self._acc["stop"].items() if c[1] > 0}
        speed_num: dict[str, list[float]] = {}
        for lane, (_, _, _, sp_sum, sp_n) in self._acc["mid"].items():
            seg = self._lane_segment(lane)
            if seg is not None and sp_n > 0:
                sn = speed_num.setdefault(seg, [0.0, 0.0])
                sn[0] += sp_sum
                sn[1] += sp_n
        for seg, (s_sum, s_n) in speed_num.items():
            smooth(st["speed"], seg, s_sum / s_n)
        flows = st.setdefault("flow", {})
        occs = st.setdefault("occ", {})
        for seg, lanes in self.net.segment_lanes.items():
            if lanes and all(ln in mid_rate for ln in lanes):
                smooth(flows, seg, sum(mid_rate[ln] for ln in lanes))
                accs = [self._acc["mid"][ln] for ln in lanes]
                smooth(occs, seg, sum(a[2] / a[1] for a in accs) / len(accs))
        queue_now: dict[str, float] = {}
        spill_cam: set[str] = set()
        heavy = st.setdefault("heavy", {})
        for seg, (qsum, qmax_sum, n, _, n_cls, n_heavy) in self._acc["cam"].items():
            if n_cls >= 5:
                smooth(heavy, seg, n_heavy / n_cls)
            if n <= 0:
                continue
            queue_now[seg] = qsum / n
            cam = self.net.cameras.get(seg)
            n_lanes = max(1, len(self.net.segment_lanes.get(seg, [])))
            cap = (cam["zone_m"] if cam else 100.0) * n_lanes / JAM_SPACING_M
            if qmax_sum / n >= 0.9 * cap:
                spill_cam.add(seg)

        lane_demand: dict[str, float] = {}
        lane_served: dict[str, float] = {}
        approach: dict[str, float] = {}
        for ix in self.net.intersections.values():
            for seg, lanes in ix.approaches.items():
                mids = [mid_rate[ln] for ln in lanes if ln in mid_rate]
                stops = [stop_rate[ln] for ln in lanes if ln in stop_rate]
                served = sum(stops) if len(stops) == len(lanes) and lanes else None
                dq = 0.0
                if seg in queue_now:
                    dq = (queue_now[seg] - st["prev_queue"].get(seg, queue_now[seg])) / max(span, 1.0) * 3600.0
                cands = []
                if mids and len(mids) == len(lanes):
                    cands.append(sum(mids))
                if served is not None:
                    cands.append(served + max(0.0, dq))
                if not cands:
                    continue
                demand = max(cands)
                smooth(st["approach_demand"], seg, demand)
                # lane shares from stop-line counts (after lane changes), else mid-link, else equal
                share_src = [stop_rate.get(ln) for ln in lanes]
                if any(x is None for x in share_src) or sum(x or 0.0 for x in share_src) <= 0:
                    share_src = [mid_rate.get(ln) for ln in lanes]
                if any(x is None for x in share_src) or sum(x or 0.0 for x in share_src) <= 0:
                    share_src = [1.0] * len(lanes)
                tot = sum(x or 0.0 for x in share_src)
                for ln, x in zip(lanes, share_src, strict=True):
                    smooth(st["lane_share"], ln, (x or 0.0) / tot)
                    if ln in stop_rate:
                        lane_served[ln] = stop_rate[ln]
        for ix in self.net.intersections.values():
            for seg, lanes in ix.approaches.items():
                if seg not in st["approach_demand"]:
                    continue
                approach[seg] = st["approach_demand"][seg]
                shares = [st["lane_share"].get(ln, 1.0 / len(lanes)) for ln in lanes]
                tot = sum(shares) or 1.0
                for ln, sh in zip(lanes, shares, strict=True):
                    lane_demand[ln] = approach[seg] * sh / tot
        for seg, q in queue_now.items():
            smooth(st["queue"], seg, q)
        st["prev_queue"] = dict(queue_now) or st["prev_queue"]
        st["t_s"] = float(t_s)
        self._acc = {"mid": {}, "stop": {}, "cam": {}}
        spill = {s for s in spill_mid if s in spill_cam or s not in self.net.cameras}
        st["spillback"] = sorted(spill)
        return DemandSnapshot(
            t_s=float(t_s),
            lane_demand_veh_h=lane_demand,
            lane_served_veh_h=lane_served,
            approach_demand_veh_h=approach,
            queue_veh=dict(st["queue"]),
            spillback=spill,
            speed_kmh=dict(st["speed"]),
            segment_flow_veh_h=dict(st.get("flow", {})),
            heavy_share=dict(st.get("heavy", {})),
            occupancy=dict(st.get("occ", {})),
        )

    def _lane_segment(self, lane: str) -> str | None:
        return self.net.lane_segment.get(lane)

    def to_state(self) -> dict[str, Any]:
        """JSON-able state (smoothed rates, shares, queues, speeds and the open period's accumulators)."""
        return {"smoothed": self.state, "open": self._acc, "smoothing_s": self.smoothing_s}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`to_state`."""
        self.state = dict(state["smoothed"])
        self._acc = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in state["open"].items()}
        self.smoothing_s = float(state.get("smoothing_s", self.smoothing_s))


# ---------------------------------------------------------------------------------------------------------
# Webster under constraints
# ---------------------------------------------------------------------------------------------------------

#: Above this total critical flow ratio Webster's formula is meaningless; the cycle goes to its maximum.
Y_MAX = 0.95


def critical_flow_ratios(ix: IntersectionModel, lane_q: Mapping[str, float]) -> list[float]:
    """Critical flow ratio ``y_k = max q/s`` over the lanes each green phase serves (dimensionless).

    A lane served by ``n`` green phases loads each of them with ``q / (n s)``.

    Parameters
    ----------
    ix : IntersectionModel
    lane_q : Mapping[str, float]
        Demand per lane, veh/h (missing lanes count 0).

    Returns
    -------
    list[float]
        One ratio per green phase.
    """
    y = [0.0] * ix.n_green
    for ln in ix.lanes:
        r = float(lane_q.get(ln.lane_id, 0.0)) / ln.sat_flow_veh_h / len(ln.serving)
        for k in ln.serving:
            y[k] = max(y[k], r)
    return y


def webster_cycle_s(lost_s: float, Y: float, cycle_min_s: float, cycle_max_s: float) -> float:
    """Webster's optimum cycle ``C0 = (1.5 L + 5) / (1 - Y)``, clipped to ``[cycle_min_s, cycle_max_s]`` (s).

    ``Y >= Y_MAX`` (0.95) returns ``cycle_max_s``.
    """
    if Y >= Y_MAX:
        return float(cycle_max_s)
    return float(min(max((1.5 * lost_s + 5.0) / (1.0 - Y), cycle_min_s), cycle_max_s))


def green_bounds(
    ix: IntersectionModel,
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
) -> tuple[list[float], list[float], bool]:
    """Per green phase ``[lo, hi]`` bounds in whole seconds, and whether bounded change could be kept.

    Hard bounds (minimum green, pedestrian minimum, cycle maximum) always hold; bounded change against
    ``prev_greens`` is dropped (third value False) only when it conflicts with them.
    """
    hard_lo = [float(math.ceil(x - 1e-9)) for x in ix.min_greens_s(constraints)]
    fixed = ix.fixed_time_s
    room = math.floor(constraints.cycle_max_s - fixed + 1e-9)
    if sum(hard_lo) > room:
        raise ValueError(
            f"{ix.tls_id}: minimum greens {hard_lo} + intergreens {fixed} s exceed the cycle maximum "
            f"{constraints.cycle_max_s} s"
        )
    big = float(room)
    if prev_greens is None:
        return hard_lo, [big] * ix.n_green, True
    lo, hi = [], []
    for k, g in enumerate(prev_greens):
        d = constraints.max_change_s(float(g))
        lo.append(max(hard_lo[k], float(math.ceil(g - d - 1e-9))))
        hi.append(min(big, max(hard_lo[k], float(math.floor(g + d + 1e-9)))))
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    if cmin > cmax + 1e-9:
        return hard_lo, [big] * ix.n_green, False
    return lo, hi, True


def cycle_range_s(
    ix: IntersectionModel, constraints: SignalConstraints, prev_greens: Sequence[float] | None = None
) -> tuple[int, int]:
    """Whole-second cycle lengths reachable in one step: ``(min, max)`` (s); requires integer intergreens."""
    lo, hi, _ = green_bounds(ix, constraints, prev_greens)
    fixed = ix.fixed_time_s
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    return math.ceil(cmin - 1e-9), math.floor(cmax + 1e-9)


def _waterfill(weights: Sequence[float], lo: Sequence[float], hi: Sequence[float], total: float) -> np.ndarray:
    """Values ``clip(lam * w, lo, hi)`` summing to ``total`` (exact: piecewise-linear in ``lam``).

    ``total`` must lie in ``[sum(lo), sum(hi)]``; zero weights are treated as tiny positive ones.
    """
    w = [max(float(x), 0.0) for x in weights]
    if sum(w) <= 0:
        w = [1.0] * len(w)
    w = [x + 1e-9 for x in w]
    lo_l, hi_l = [float(x) for x in lo], [float(x) for x in hi]

    def at(lam: float) -> float:
        return sum(min(max(lam * wk, a), b) for wk, a, b in zip(w, lo_l, hi_l, strict=True))

    points = sorted(
        {0.0} | {a / wk for wk, a in zip(w, lo_l, strict=True)} | {b / wk for wk, b in zip(w, hi_l, strict=True)}
    )
    prev_lam, prev_val = points[0], at(points[0])
    lam = points[-1]
    if prev_val >= total:
        lam = prev_lam
    else:
        for p in points[1:]:
            v = at(p)
            if v >= total:
                lam = prev_lam + (p - prev_lam) * (total - prev_val) / (v - prev_val) if v > prev_val else p
                break
            prev_lam, prev_val = p, v
    return np.array([min(max(lam * wk, a), b) for wk, a, b in zip(w, lo_l, hi_l, strict=True)])


def constrain_greens(
    ix: IntersectionModel,
    target_greens_s: Sequence[float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    cycle_s: float | None = None,
) -> list[int]:
    """Project target greens onto the constraints, in whole seconds.

    Parameters
    ----------
    ix : IntersectionModel
    target_greens_s : Sequence[float]
        Wanted greens per green phase, s (their shares are kept as far as the bounds allow).
    constraints : SignalConstraints
    prev_greens : Sequence[float], optional
        Greens of the running plan (bounded change).
    cycle_s : float, optional
        Wanted cycle, s; default ``sum(target) + intergreens``. Clipped to what the bounds allow.

    Returns
    -------
    list[int]
        Greens, s. ``check_greens`` on them is empty (asserted).
    """
    lo, hi, change_ok = green_bounds(ix, constraints, prev_greens)
    fixed = ix.fixed_time_s
    want = (cycle_s if cycle_s is not None else sum(target_greens_s) + fixed) - fixed
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    s_lo = math.ceil(cmin - fixed - 1e-9)
    s_hi = math.floor(cmax - fixed + 1e-9)
    total = int(min(max(round(want), s_lo), s_hi))
    g = _waterfill(target_greens_s, lo, hi, float(total))
    base = np.floor(g + 1e-9)
    rem = round(total - base.sum())
    order = np.argsort(-(g - base), kind="stable")
    out = base.copy()
    i = 0
    while rem > 0 and i < 10 * len(order):
        k = order[i % len(order)]
        if out[k] + 1 <= hi[k] + 1e-9:
            out[k] += 1
            rem -= 1
        i += 1
    while rem < 0:  # never needed in practice (floor), kept for safety
        k = int(np.argmax(out - np.asarray(lo)))
        out[k] -= 1
        rem += 1
    greens = [int(x) for x in out]
    problems = check_greens(ix, greens, constraints, prev_greens if change_ok else None)
    assert not problems, problems
    return greens


def check_greens(
    ix: IntersectionModel,
    greens: Sequence[float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
) -> list[str]:
    """List every constraint a plan violates (empty when it is valid).

    Checks: one green per green phase, whole seconds, minimum green, pedestrian minimum, cycle bounds
    (greens + the network's yellow/all-red), and bounded change against ``prev_greens`` when given.
    """
    out: list[str] = []
    if len(greens) != ix.n_green:
        return [f"{ix.tls_id}: {len(greens)} greens for {ix.n_green} green phases"]
    for k, g in enumerate(greens):
        if abs(g - round(g)) > 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s is not whole seconds")
        if g < constraints.min_green_s - 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s < minimum {constraints.min_green_s} s")
        if g < ix.ped_min_s[k] - 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s < pedestrian minimum {ix.ped_min_s[k]:.1f} s")
    cyc = sum(greens) + ix.fixed_time_s
    if cyc > constraints.cycle_max_s + 1e-9:
        out.append(f"{ix.tls_id}: cycle {cyc} s > maximum {constraints.cycle_max_s} s")
    if cyc < constraints.cycle_min_s - 1e-9:
        out.append(f"{ix.tls_id}: cycle {cyc} s < minimum {constraints.cycle_min_s} s")
    if prev_greens is not None:
        for k, (g, p) in enumerate(zip(greens, prev_greens, strict=True)):
            lim = constraints.max_change_s(float(p))
            floor_k = max(constraints.min_green_s, ix.ped_min_s[k])
            forced_up = g > p and g <= math.ceil(floor_k - 1e-9)
            if abs(g - p) > lim + 1e-9 and not forced_up:
                out.append(f"{ix.tls_id}: green {k} changes {p} -> {g} s (limit {lim:.1f} s)")
    return out


def transition_is_safe(
    ix: IntersectionModel,
    old_durations_s: Sequence[float],
    new_greens_s: Sequence[float],
    lane_q: Mapping[str, float],
    margin: float = 1.25,
) -> bool:
    """Whether switching plans cannot strand a queue (no transition shock).

    The new plan starts when the old one reaches phase 0. For each lane, the red before its first green of
    the new plan is the rest of the old cycle after its last old green plus the new plan's time before that
    green; the queue ``q r`` built in it, discharged at ``s - q``, must clear within the new effective green
    (times ``margin``).

    Parameters
    ----------
    ix : IntersectionModel
    old_durations_s : Sequence[float]
        Phase durations of the running plan, s.
    new_greens_s : Sequence[float]
        Greens of the new plan, s.
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    margin : float
        Safety factor on the clearance time.

    Returns
    -------
    bool
    """
    old = list(old_durations_s)
    new = ix.durations(new_greens_s)
    c_old = sum(old)
    old_start = np.concatenate([[0.0], np.cumsum(old)])
    new_start = np.concatenate([[0.0], np.cumsum(new)])
    for ln in ix.lanes:
        q = float(lane_q.get(ln.lane_id, 0.0)) / 3600.0
        s = ln.sat_flow_veh_h / 3600.0
        if q <= 0:
            continue
        if q >= s:
            return False
        last_end = max(old_start[ix.green_positions[k]] + old[ix.green_positions[k]] for k in ln.serving)
        k0 = min(ln.serving, key=lambda k: new_start[ix.green_positions[k]])
        pos = ix.green_positions[k0]
        red = (c_old - last_end) + new_start[pos] + STARTUP_LOST_S
        g_eff = new[pos] + EXTENSION_S - STARTUP_LOST_S
        if margin * q * red / (s - q) > g_eff:
            return False
    return True


def webster_plan(
    ix: IntersectionModel,
    lane_q: Mapping[str, float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    cycle_s: float | None = None,
    blend: float = 1.0,
) -> tuple[list[int], dict[str, Any]]:
    """Webster's cycle and splits for one intersection, under the constraints.

    Parameters
    ----------
    ix : IntersectionModel
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    constraints : SignalConstraints
    prev_greens : Sequence[float], optional
        Greens of the running plan (bounded change).
    cycle_s : float, optional
        Impose this cycle (e.g. a common cycle); default Webster's ``C0``.
    blend : float
        Share of Webster's split (``y``-proportional) in the effective green; the rest is shared equally.

    Returns
    -------
    greens : list[int]
        Displayed greens per green phase, s.
    info : dict
        ``y`` (per phase), ``Y``, ``L`` (lost time, s), ``C0`` (Webster cycle, s), ``cycle_s`` (final, s).
    """
    y = critical_flow_ratios(ix, lane_q)
    lost = ix.lost_time_s()
    L, Y = sum(lost), sum(y)
    cmin, cmax = cycle_range_s(ix, constraints, prev_greens)
    c0 = webster_cycle_s(L, Y, max(cmin, constraints.cycle_min_s), max(cmin, min(cmax, constraints.cycle_max_s)))
    C = float(cycle_s) if cycle_s is not None else c0
    eff = max(C - L, 0.0)
    shares = [yk / Y for yk in y] if Y > 0 else [1.0 / ix.n_green] * ix.n_green
    shares = [blend * sh + (1.0 - blend) / ix.n_green for sh in shares]
    target = [max(eff * sh + lost[k] - ix.intergreen_s[k], 0.0) for k, sh in enumerate(shares)]
    greens = constrain_greens(ix, target, constraints, prev_greens, cycle_s=C)
    c0_free = webster_cycle_s(
        L, Y, max(constraints.cycle_min_s, sum(ix.min_greens_s(constraints)) + ix.fixed_time_s), constraints.cycle_max_s
    )
    info = {"y": y, "Y": Y, "L": L, "C0": c0, "C0_unbounded": c0_free, "cycle_s": sum(greens) + ix.fixed_time_s}
    return greens, info


def max_pressure_greens(
    ix: IntersectionModel,
    lane_queue_veh: Mapping[str, float],
    segment_queue_veh: Mapping[str, float],
    segment_lanes: Mapping[str, Sequence[str]],
    cycle_s: float,
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    smoothing: float = 1.0,
    floor_frac: float = 0.0,
) -> tuple[list[int], list[float]]:
    """Cycle-based max-pressure splits (Le et al. 2015): greens in proportion to each phase's pressure.

    The pressure of green phase ``k`` is ``Σ_lanes served s_l max(0, Q_l - mean over exits Q_exit / lanes)``
    with queues in vehicles (upstream per lane, downstream per lane of the exit segment). Weights are floored
    at ``floor_frac`` x their mean (and a tiny positive value), and the split moves by ``smoothing`` (0-1)
    from the running split towards the pressure split (1 = no smoothing).

    Returns
    -------
    greens : list[int]
        Greens, s, under the constraints and the given cycle.
    pressure : list[float]
        The phase pressures (veh x veh/h).
    """
    p = [0.0] * ix.n_green
    for ln in ix.lanes:
        up = float(lane_queue_veh.get(ln.lane_id, 0.0))
        downs = [
            float(segment_queue_veh.get(e, 0.0)) / max(1, len(segment_lanes.get(e, ())) or 1) for e in ln.to_segments
        ]
        down = sum(downs) / len(downs) if downs else 0.0
        for k in ln.serving:
            p[k] += ln.sat_flow_veh_h * max(0.0, up - down) / len(ln.serving)
    eff = cycle_s - ix.fixed_time_s
    mean = sum(p) / len(p) if p else 0.0
    floor = max(floor_frac * mean, 1e-3 * (max(p) if max(p) > 0 else 1.0))
    w = [max(x, floor) for x in p]
    target = [eff * x / sum(w) for x in w]
    if prev_greens is not None and 0.0 <= smoothing < 1.0 and sum(prev_greens) > 0:
        old = [eff * g / sum(prev_greens) for g in prev_greens]
        target = [smoothing * a + (1.0 - smoothing) * b for a, b in zip(target, old, strict=True)]
    return constrain_greens(ix, target, constraints, prev_greens, cycle_s=cycle_s), p


# ---------------------------------------------------------------------------------------------------------
# HCM delay
# ---------------------------------------------------------------------------------------------------------


def hcm_delay(
    q_veh_h: Any, s_veh_h: Any, g_eff_s: Any, cycle_s: Any, T_h: float = HCM_T_H
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HCM-2010 control delay terms for random arrivals (vectorised).

    ``X = q C / (s g)``; ``d1 = 0.5 C (1 - g/C)^2 / (1 - min(1, X) g/C)`` (uniform, s/veh);
    ``d2 = 900 T [(X - 1) + sqrt((X - 1)^2 + 8 k I X / (c T))]`` (incremental, s/veh) with ``c = s g / C``,
    ``k = 0.5`` (pretimed), ``I = 1``.

    Returns
    -------
    d1, d2, X : numpy.ndarray
    """
    q = np.asarray(q_veh_h, dtype=float)
    s = np.asarray(s_veh_h, dtype=float)
    g = np.maximum(np.asarray(g_eff_s, dtype=float), 1e-6)
    C = np.asarray(cycle_s, dtype=float)
    lam = np.minimum(g / C, 1.0)
    c = s * lam
    X = q / np.maximum(c, 1e-9)
    d1 = 0.5 * C * (1.0 - lam) ** 2 / np.maximum(1.0 - np.minimum(1.0, X) * lam, 1e-9)
    d2 = _hcm_d2(X, c, T_h)
    return d1, d2, X


def _hcm_d2(X: np.ndarray, c: np.ndarray, T_h: float, filtering: Any = HCM_I) -> np.ndarray:
    """HCM incremental delay (s/veh); ``filtering`` is HCM's upstream filtering factor ``I`` (1 isolated,
    lower downstream of a signal: ``I = 1 - 0.91 X_up^2.68``)."""
    cc = np.maximum(c, 1e-9)
    return 900.0 * T_h * ((X - 1.0) + np.sqrt((X - 1.0) ** 2 + 8.0 * HCM_K * filtering * X / (cc * T_h)))


def interval_delay(
    q_veh_h: float,
    s_veh_h: float,
    green_intervals_s: Sequence[tuple[float, float]],
    cycle_s: float,
    T_h: float = HCM_T_H,
) -> tuple[float, float]:
    """Control delay and v/c of one movement whose displayed greens are arbitrary intervals of the cycle.

    Random arrivals. Uniform delay: the deterministic queue over the cycle (exactly HCM's ``d1`` for a
    single green; also right for a movement served twice per cycle), capped at ``X = 0.95``; plus HCM's
    incremental delay on the total effective green (``G + 2 s - 2 s`` per interval).

    Parameters
    ----------
    q_veh_h, s_veh_h : float
        Demand and saturation flow, veh/h.
    green_intervals_s : Sequence[tuple[float, float]]
        ``(start, end)`` of each displayed green within ``[0, cycle_s)``, s.
    cycle_s : float
        Cycle, s.
    T_h : float
        HCM analysis period, h.

    Returns
    -------
    delay_s : float
        Control delay, s/veh (0 without demand).
    x : float
        Degree of saturation ``q / c``.
    """
    C = round(cycle_s)
    mask = np.zeros(C, dtype=bool)
    for a, b in green_intervals_s:
        start = round(a + STARTUP_LOST_S)
        length = round(b - a + EXTENSION_S - STARTUP_LOST_S)
        if length > 0:
            mask[(start + np.arange(min(length, C))) % C] = True
    g = float(mask.sum())
    c = s_veh_h * g / C
    x = q_veh_h / c if c > 0 else math.inf
    if q_veh_h <= 0:
        return 0.0, 0.0 if c > 0 else math.inf
    if g <= 0:
        return math.inf, math.inf
    scale = min(1.0, X_UNIFORM_CAP / x)
    a_row = np.full((1, C), q_veh_h * scale / 3600.0)
    cap = (s_veh_h / 3600.0 * mask)[None, :]
    on = mask
    trans = np.nonzero(on & ~np.roll(on, -1))[0]
    start_bin = np.array([(int(trans[0]) + 1) % C if len(trans) and not on.all() else 0])
    qsum, _, _ = _simulate_queues(a_row, cap, start_bin)
    d1 = float(qsum[0] / a_row.sum())
    d2 = float(_hcm_d2(np.array([x]), np.array([c]), T_h)[0])
    return d1 + d2, float(x)


# ---------------------------------------------------------------------------------------------------------
# Signal clocks: where each signal's cycle stands (plans start at the next phase-0 start)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SignalClock:
    """The plan a signal runs and when its phase 0 starts (s), mirroring "install at the next phase-0 start".

    Attributes
    ----------
    durations_s : list[float]
        Phase durations of the running plan, s.
    anchor_s : float
        A time at which phase 0 of the running plan started, s.
    pending_s : list[float] or None
        A plan sent but not installed yet.
    pending_from_s : float
        When it was sent, s; it installs at the first phase-0 start at or after that time.
    """

    durations_s: list[float]
    anchor_s: float
    pending_s: list[float] | None = None
    pending_from_s: float = 0.0

    @property
    def cycle_s(self) -> float:
        """Cycle of the running plan, s."""
        return float(sum(self.durations_s))

    def next_phase0_s(self, t_s: float) -> float:
        """First phase-0 start of the running plan at or after ``t_s`` (s)."""
        C = self.cycle_s
        k = math.ceil((t_s - self.anchor_s) / C - 1e-9)
        return self.anchor_s + max(k, 0) * C if t_s >= self.anchor_s else self.anchor_s

    def advance(self, t_s: float) -> None:
        """Install the pending plan if its phase-0 start has come by ``t_s``."""
        if self.pending_s is None:
            return
        at = self.next_phase0_s(self.pending_from_s)
        if at <= t_s + 1e-9:
            self.durations_s = list(self.pending_s)
            self.anchor_s = at
            self.pending_s = None

    def send(self, t_s: float, durations_s: Sequence[float]) -> float:
        """Record a plan sent at ``t_s``; returns its installation time (s)."""
        self.advance(t_s)
        self.pending_s = [float(d) for d in durations_s]
        self.pending_from_s = float(t_s)
        return self.next_phase0_s(t_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalClock:
        """Inverse of :meth:`to_dict`."""
        return cls(list(d["durations_s"]), float(d["anchor_s"]), d.get("pending_s"), float(d["pending_from_s"]))

    @classmethod
    def for_intersection(cls, ix: IntersectionModel) -> SignalClock:
        """The network's fixed plan, phase 0 starting at the network offset."""
        return cls(list(ix.phase_durations_s), ix.offset_s)


#: Prior weight of a movement by turn before balancing against exit counts (through movements dominate).
TURN_PRIOR: dict[str, float] = {"s": 1.0, "r": 0.3, "l": 0.3, "R": 0.3, "L": 0.3, "t": 0.02, "": 1.0}


def turning_proportions(
    ix: IntersectionModel, lane_q: Mapping[str, float], exit_flow_veh_h: Mapping[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """Share of each lane's flow going to each exit, balanced against the measured exit flows.

    A prior (``TURN_PRIOR`` by turn; equal without turn data) is balanced by iterative proportional fitting
    (Furness) so that the lane totals are the lane demands and the exit totals match the exit segments'
    mid-link flows where they are measured.

    Parameters
    ----------
    ix : IntersectionModel
    lane_q : Mapping[str, float]
        Demand per approach lane, veh/h.
    exit_flow_veh_h : Mapping[str, float], optional
        Measured flow per exit segment, veh/h.

    Returns
    -------
    dict[str, dict[str, float]]
        lane id -> exit segment -> share (each lane's shares sum to 1).
    """
    lanes = [ln for ln in ix.lanes if ln.to_segments]
    exits = sorted({e for ln in lanes for e in ln.to_segments})
    if not lanes:
        return {}
    col = {e: k for k, e in enumerate(exits)}
    P = np.zeros((len(lanes), len(exits)))
    for i, ln in enumerate(lanes):
        dirs = ln.to_dirs or ("",) * len(ln.to_segments)
        for e, d in zip(ln.to_segments, dirs, strict=True):
            P[i, col[e]] = TURN_PRIOR.get(d, 0.3)
    P /= P.sum(axis=1, keepdims=True)
    q = np.array([float(lane_q.get(ln.lane_id, 0.0)) for ln in lanes])
    target = np.array([float((exit_flow_veh_h or {}).get(e, np.nan)) for e in exits])
    known = ~np.isnan(target)
    if known.any() and q.sum() > 0:
        F = P * q[:, None]
        for _ in range(30):
            cs = F.sum(axis=0)
            fac = np.ones(len(exits))
            ok = known & (cs > 0)
            fac[ok] = target[ok] / cs[ok]
            F = F * np.clip(fac, 0.1, 10.0)[None, :]
            rs = F.sum(axis=1)
            F = np.where(rs[:, None] > 0, F * (q / np.maximum(rs, 1e-12))[:, None], F)
        rs = F.sum(axis=1, keepdims=True)
        P = np.where(rs > 0, F / np.maximum(rs, 1e-12), P)
    return {ln.lane_id: {e: float(P[i, col[e]]) for e in ln.to_segments} for i, ln in enumerate(lanes)}


# ---------------------------------------------------------------------------------------------------------
# Network delay with cyclic flow profiles
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyConfig:
    """Tuning of :func:`recommend` and :func:`evaluate_plans` (general; nothing refers to one network).

    Parameters
    ----------
    coordinate : bool
        Consider common cycles (coordination through preserved phase-0 times).
    cycle_search_max_s : float
        Largest common cycle tried, s (the hard maximum stays ``SignalConstraints.cycle_max_s``).
    dispersion_alpha, dispersion_beta : float
        Robertson platoon dispersion factors.
    accel_penalty_s : float
        Extra travel time of a platoon leaving a stop line, s.
    gate_spillback : bool
        Reduce the planning flow of lanes whose every exit is spilled back.
    analysis_period_h : float
        HCM analysis period for the incremental delay, h.
    stop_penalty_s : float
        Time lost by one stop (deceleration + acceleration) beyond the stopped delay, s; stops are counted
        from the arrival profile and the queue (a vehicle arriving on red or behind a queue stops).
    isolated_alternative : bool
        Also score the isolated plan (each signal at its own Webster cycle) against the common cycles.
        Off by default: signals a few hundred metres apart are coordinated (standard practice), and isolated
        cycles let the phase-0 times drift apart for good.
    critical_cycle_floor : bool
        No common cycle below the critical intersection's Webster cycle (classic system-cycle rule; off by
        default: Webster assumes random arrivals and overestimates the cycle a coordinated grid needs).
    system_cycle_s : float or None
        Operator-imposed common cycle (s); still clipped to what the constraints allow.
    split_blend : float
        Share of Webster's ``y``-proportional split in the effective green (the rest shared equally).
    cycle_tolerance : float
        Among common cycles from the best one to 1.25 times it, those within this share of the best network
        delay are equivalent: the running one is kept if among them, else the longest is taken.
    transition : {"fastest", "argmin"}
        While bounded change keeps the wanted cycle out of reach: move to the reachable cycle closest to it,
        or to the reachable cycle with the lowest delay.
    transition_waiver : bool
        Skip the bounded-change limit when :func:`transition_is_safe` shows that the first cycle of the new
        plan clears every queue the old plan leaves (the limit exists to prevent exactly that shock).
    """

    coordinate: bool = True
    cycle_search_max_s: float = 150.0
    dispersion_alpha: float = DISPERSION_ALPHA
    dispersion_beta: float = DISPERSION_BETA
    accel_penalty_s: float = ACCEL_PENALTY_S
    gate_spillback: bool = True
    analysis_period_h: float = HCM_T_H
    stop_penalty_s: float = STOP_PENALTY_S
    isolated_alternative: bool = False
    critical_cycle_floor: bool = False
    system_cycle_s: float | None = None
    split_blend: float = 1.0
    cycle_tolerance: float = 0.08
    transition: str = "fastest"
    transition_waiver: bool = True


@dataclass
class PlanEvaluation:
    """Per-lane performance of a set of plans.

    Attributes
    ----------
    rows : list[tuple[str, LaneModel]]
        ``(tls_id, lane)`` in array order.
    q_veh_h, d_uniform_s, d_incr_s, x, p_green : numpy.ndarray
        Demand (veh/h), uniform delay incl. progression (s/veh), HCM incremental delay (s/veh), degree of
        saturation, share of arrivals on green.
    coordinated : bool
        Whether the profile (coordination) model was used (all plans on one cycle).
    """

    rows: list[tuple[str, LaneModel]]
    q_veh_h: np.ndarray
    d_uniform_s: np.ndarray
    d_incr_s: np.ndarray
    x: np.ndarray
    p_green: np.ndarray
    coordinated: bool

    @property
    def total_delay_veh_h_per_h(self) -> float:
        """Total control delay, veh·h per hour of demand."""
        return float(np.sum(self.q_veh_h * (self.d_uniform_s + self.d_incr_s)) / 3600.0)

    def by_approach(self, tls_id: str) -> dict[str, dict[str, float]]:
        """Per approach of one signal: flow-weighted delay (s/veh), critical v/c, demand (veh/h)."""
        out: dict[str, dict[str, float]] = {}
        acc: dict[str, list[float]] = {}
        for i, (t, ln) in enumerate(self.rows):
            if t != tls_id:
                continue
            a = acc.setdefault(ln.segment_id, [0.0, 0.0, 0.0])
            q = float(self.q_veh_h[i])
            a[0] += q * float(self.d_uniform_s[i] + self.d_incr_s[i])
            a[1] += q
            a[2] = max(a[2], float(self.x[i]))
        for seg, (dq, q, x) in acc.items():
            out[seg] = {"delay_s": round(dq / q, 1) if q > 0 else 0.0, "vc": round(x, 3), "demand_veh_h": round(q)}
        return out


def _phase_masks(ix: IntersectionModel, durations: Sequence[float], C: int) -> np.ndarray:
    """Effective-green masks (n_green, C) in the signal's own frame (bin 0 = phase-0 start)."""
    m = np.zeros((ix.n_green, C), dtype=bool)
    starts = np.concatenate([[0.0], np.cumsum(durations)])
    for k, pos in enumerate(ix.green_positions):
        a = round(starts[pos] + STARTUP_LOST_S)
        length = round(durations[pos] + EXTENSION_S - STARTUP_LOST_S)
        if length > 0:
            m[k, (a + np.arange(min(length, C))) % C] = True
    return m


def _simulate_queues(a: np.ndarray, cap: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic queues over two cycles from each row's ``start`` bin.

    Returns
    -------
    qsum : numpy.ndarray
        Queue integral over the second cycle, veh·s.
    departures : numpy.ndarray
        Departures per bin in the second cycle (row frame restored), veh.
    stopped : numpy.ndarray
        Arrivals of the second cycle that stop (red, or a queue ahead), veh.
    """
    n, C = a.shape
    idx = (start[:, None] + np.arange(C)[None, :]) % C
    rows = np.arange(n)[:, None]
    ar, cr = a[rows, idx], cap[rows, idx]
    Q = np.zeros(n)
    qsum = np.zeros(n)
    stopped = np.zeros(n)
    dep = np.zeros((n, C))
    for cyc in range(2):
        for b in range(C):
            tot = Q + ar[:, b]
            d = np.minimum(tot, cr[:, b])
            Qn = tot - d
            if cyc == 1:
                qsum += 0.5 * (Q + Qn)
                stopped += np.where((Q > 1e-6) | (cr[:, b] <= 0), ar[:, b], 0.0)
                dep[:, b] = d
            Q = Qn
    out = np.zeros((n, C))
    out[rows, idx] = dep
    return qsum, out, stopped


def _travel_time_s(seg: SegmentModel, speed_kmh: Mapping[str, float] | None) -> float:
    v = seg.speed_limit_kmh
    if speed_kmh and seg.segment_id in speed_kmh:
        v = min(max(float(speed_kmh[seg.segment_id]), 0.5 * seg.speed_limit_kmh), seg.speed_limit_kmh)
    return (seg.length_m + seg.approach_gap_m) / (v / 3.6)


def evaluate_plans(
    net: SignalNetwork,
    durations: Mapping[str, Sequence[float]],
    anchors_s: Mapping[str, float],
    lane_q: Mapping[str, float],
    speed_kmh: Mapping[str, float] | None = None,
    config: PolicyConfig | None = None,
    turns: Mapping[str, Mapping[str, float]] | None = None,
) -> PlanEvaluation:
    """Per-lane delay and v/c of a set of plans.

    With one common whole-second cycle the arrivals at each stop line are the upstream signal's departure
    profile (deterministic queue: discharge at saturation flow, then arrivals), shifted by the link travel
    time (mid-link speed, else the limit) and by the phase-0 times ``anchors_s``, dispersed (Robertson) and
    mixed with random arrivals for the share of the demand the upstream lanes do not explain. The uniform
    delay is the deterministic queue of that profile (capped at ``X = 0.95``); otherwise (different cycles)
    arrivals are random and ``d1`` is HCM's. The HCM incremental delay is added in both cases.

    Parameters
    ----------
    net : SignalNetwork
    durations : Mapping[str, Sequence[float]]
        Phase durations per signal (all phases), s.
    anchors_s : Mapping[str, float]
        A phase-0 start time per signal, s (absolute; only differences matter).
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    speed_kmh : Mapping[str, float], optional
        Measured cruise (mid-link) speed per segment, km/h.
    config : PolicyConfig, optional
    turns : Mapping[str, Mapping[str, float]], optional
        Lane -> exit -> share (:func:`turning_proportions`); default equal shares.

    Returns
    -------
    PlanEvaluation
    """
    cfg = config or PolicyConfig()
    tls_ids = [t for t in net.intersections if t in durations]
    rows = [(t, ln) for t in tls_ids for ln in net.intersections[t].lanes]
    n = len(rows)
    q = np.array([float(lane_q.get(ln.lane_id, 0.0)) for _, ln in rows])
    s = np.array([ln.sat_flow_veh_h for _, ln in rows])
    cycles = {t: float(sum(durations[t])) for t in tls_ids}
    cset = {round(c) for c in cycles.values()}
    coordinated = len(cset) == 1 and all(abs(c - round(c)) < 1e-6 for c in cycles.values()) and n > 0
    if not coordinated:
        g = np.zeros(n)
        Cv = np.zeros(n)
        for i, (t, ln) in enumerate(rows):
            ix = net.intersections[t]
            dur = durations[t]
            g[i] = sum(max(0.0, dur[ix.green_positions[k]] + EXTENSION_S - STARTUP_LOST_S) for k in ln.serving)
            Cv[i] = cycles[t]
        d1, d2, X = hcm_delay(q, s, g, Cv, cfg.analysis_period_h)
        lam_i = g / np.maximum(Cv, 1e-9)
        y_i = np.minimum(q / s, 0.95)
        stop_rate = np.minimum(1.0, (1.0 - lam_i) / np.maximum(1.0 - y_i, 0.05))
        return PlanEvaluation(rows, q, d1 + cfg.stop_penalty_s * stop_rate, d2, X, lam_i, False)

    C = int(next(iter(cset)))
    masks = {t: _phase_masks(net.intersections[t], durations[t], C) for t in tls_ids}
    M = np.zeros((n, C), dtype=bool)
    for i, (t, ln) in enumerate(rows):
        M[i] = masks[t][list(ln.serving)].any(axis=0)
    g_eff = M.sum(axis=1).astype(float)
    cap = (s / 3600.0)[:, None] * M
    lam = g_eff / C
    X = q / np.maximum(s * lam, 1e-9)
    # start each row's simulation where its effective green ends (start of red)
    ends = np.zeros(n, dtype=int)
    for i in range(n):
        on = M[i]
        if on.any() and not on.all():
            trans = np.nonzero(on & ~np.roll(on, -1))[0]
            ends[i] = (int(trans[0]) + 1) % C
    scale = np.minimum(1.0, X_UNIFORM_CAP / np.maximum(X, 1e-9))
    a1 = np.repeat((q * scale / 3600.0)[:, None], C, axis=1)
    _, dep, _ = _simulate_queues(a1, cap, ends)

    # arrival profiles per approach segment from upstream departures
    row_of_tls: dict[str, list[int]] = {}
    for i, (t, _) in enumerate(rows):
        row_of_tls.setdefault(t, []).append(i)
    seg_rows: dict[str, list[int]] = {}
    for i, (_, ln) in enumerate(rows):
        seg_rows.setdefault(ln.segment_id, []).append(i)
    a2 = a1.copy()
    filt = np.ones(n)  # HCM upstream filtering factor I per row
    for seg, idxs in seg_rows.items():
        sm = net.segments.get(seg)
        j = rows[idxs[0]][0]
        if sm is None or sm.upstream_tls is None or sm.upstream_tls not in durations:
            continue
        u = sm.upstream_tls
        prof = np.zeros(C)
        xw = xq = 0.0
        for i2 in row_of_tls.get(u, []):
            ln2 = rows[i2][1]
            if seg in ln2.to_segments:
                share = turns[ln2.lane_id].get(seg, 0.0) if turns and ln2.lane_id in turns else None
                w = share if share is not None else 1.0 / len(ln2.to_segments)
                prof += dep[i2] * w
                xw += w * q[i2] * min(float(X[i2]), 1.0)
                xq += w * q[i2]
        up_veh_h = prof.sum() * 3600.0 / C
        d_seg = float(q[idxs].sum())
        if up_veh_h <= 0 or d_seg <= 0:
            continue
        tau = _travel_time_s(sm, speed_kmh)
        F = 1.0 / (1.0 + cfg.dispersion_alpha * cfg.dispersion_beta * tau)
        shift = anchors_s[u] - anchors_s[j] + cfg.dispersion_beta * tau + cfg.accel_penalty_s
        nk = np.arange(3 * C)
        ker = np.zeros(C)
        np.add.at(ker, (round(shift) + nk) % C, F * (1.0 - F) ** nk)
        ker /= ker.sum()
        arr = np.fft.irfft(np.fft.rfft(prof) * np.fft.rfft(ker), C)
        arr = np.maximum(arr, 0.0)
        frac = min(1.0, up_veh_h / d_seg)
        shape = frac * arr / arr.sum() + (1.0 - frac) / C
        x_up = xw / xq if xq > 0 else 0.0
        for i in idxs:
            a2[i] = q[i] * scale[i] * C / 3600.0 * shape
            filt[i] = 1.0 - frac * 0.91 * x_up**2.68
    qsum, _, stopped = _simulate_queues(a2, cap, ends)
    arrivals = a2.sum(axis=1)
    d_unif = np.where(arrivals > 0, qsum / np.maximum(arrivals, 1e-12), 0.0)
    d_unif += cfg.stop_penalty_s * np.where(arrivals > 0, stopped / np.maximum(arrivals, 1e-12), 0.0)
    p_green = np.where(arrivals > 0, (a2 * M).sum(axis=1) / np.maximum(arrivals, 1e-12), lam)
    d2 = _hcm_d2(X, s * lam, cfg.analysis_period_h, filt)
    return PlanEvaluation(rows, q, d_unif, d2, X, p_green, True)


# ---------------------------------------------------------------------------------------------------------
# Recommendations
# ---------------------------------------------------------------------------------------------------------


def recommendation_id(tls_id: str, period_start_s: float) -> str:
    """Stable id: first 16 hex digits of SHA-1 over ``"<tls_id>|<period start, whole seconds>"``."""
    return hashlib.sha1(f"{tls_id}|{round(period_start_s)}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Recommendation:
    """A timing recommendation for one signal and one plan period.

    Attributes
    ----------
    recommendation_id : str
        Hash of ``tls_id`` and ``period_start_s`` (:func:`recommendation_id`).
    tls_id : str
    period_start_s : float
        Start of the period the plan is for (the decision time), s.
    install_at_s : float
        When the plan takes effect (next phase-0 start), s.
    cycle_s : float
        Cycle, s (greens + the network's yellow/all-red).
    green_s : tuple[int, ...]
        Green per green phase, network phase order, s.
    offset_s : float or None
        Phase-0 start modulo the cycle implied by ``install_at_s`` (s); the harness takes no offsets, so
        coordination comes from common cycles that preserve phase-0 times.
    expected : dict[str, dict[str, float]]
        Per approach: ``delay_before_s``, ``delay_after_s`` (HCM control delay, s/veh), ``vc_before``,
        ``vc_after`` (critical lane v/c) and ``demand_veh_h``.
    reason : str
    confidence : float
        0-1: share of lanes with measured demand, halved when the plan leaves a lane oversaturated.
    """

    recommendation_id: str
    tls_id: str
    period_start_s: float
    install_at_s: float
    cycle_s: float
    green_s: tuple[int, ...]
    offset_s: float | None
    expected: dict[str, dict[str, float]]
    reason: str
    confidence: float

    def plan_spec(self) -> dict[str, list[int]]:
        """The closed-loop plan entry ``{"green_s": [...]}``."""
        return {"green_s": list(self.green_s)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        d["green_s"] = list(self.green_s)
        return d


def _fill_missing_demand(net: SignalNetwork, lane_q: dict[str, float]) -> tuple[dict[str, float], float]:
    """Lanes without data get half their capacity under the network plan; returns (demand, coverage)."""
    out = dict(lane_q)
    n = have = 0
    for ix in net.intersections.values():
        C = sum(ix.phase_durations_s)
        for ln in ix.lanes:
            n += 1
            if ln.lane_id in lane_q:
                have += 1
                continue
            g = sum(ix.phase_durations_s[ix.green_positions[k]] for k in ln.serving)
            out[ln.lane_id] = 0.5 * ln.sat_flow_veh_h * g / C
    return out, (have / n if n else 0.0)


def _candidate_cycles(lo: int, hi: int) -> list[int]:
    c = list(range(lo, min(hi, 60) + 1))
    c += list(range(max(lo, 62), min(hi, 100) + 1, 2))
    c += list(range(max(lo, 105), hi + 1, 5))
    return sorted(set(c)) or [lo]


def recommend(
    net: SignalNetwork,
    snapshot: DemandSnapshot,
    clocks: Mapping[str, SignalClock],
    t_s: float,
    constraints: SignalConstraints | None = None,
    config: PolicyConfig | None = None,
) -> tuple[dict[str, Recommendation], dict[str, Any]]:
    """Recommend the next plan of every signal (adaptive, coordinated, constrained).

    Candidates: every reachable common cycle (greens by constrained Webster at that cycle) and the isolated
    plan (each signal at its own Webster cycle). Each is scored by :func:`evaluate_plans` with the phase-0
    times the plans will start at; the lowest network delay wins, with a tolerance towards the running and
    the longer cycles (``config.cycle_tolerance``). Lanes whose every exit is spilled back are gated.

    Parameters
    ----------
    net : SignalNetwork
    snapshot : DemandSnapshot
        From :meth:`DemandEstimator.snapshot`.
    clocks : Mapping[str, SignalClock]
        Where each signal's cycle stands (advanced to ``t_s`` here; not modified otherwise).
    t_s : float
        Decision time, s.
    constraints : SignalConstraints, optional
    config : PolicyConfig, optional

    Returns
    -------
    recommendations : dict[str, Recommendation]
    diagnostics : dict
        ``mode`` ("common"/"isolated"), ``cycle_s``, network delay before/after (veh·h/h), gated lanes.
    """
    cons = constraints or SignalConstraints()
    cfg = config or PolicyConfig()
    if snapshot.heavy_share:
        net = net.with_heavy_vehicles(snapshot.heavy_share)
    tls_ids = [t for t in net.intersections if t in clocks]
    for t in tls_ids:
        clocks[t].advance(t_s)
    lane_q, coverage = _fill_missing_demand(net, snapshot.lane_demand_veh_h)
    plan_q = dict(lane_q)
    gated: list[str] = []
    if cfg.gate_spillback and snapshot.spillback:
        for t in tls_ids:
            for ln in net.intersections[t].lanes:
                if ln.to_segments and all(e in snapshot.spillback for e in ln.to_segments):
                    plan_q[ln.lane_id] = plan_q.get(ln.lane_id, 0.0) * SPILLBACK_GATE
                    gated.append(ln.lane_id)
    prev = {t: [clocks[t].durations_s[p] for p in net.intersections[t].green_positions] for t in tls_ids}
    install = {t: clocks[t].next_phase0_s(t_s) for t in tls_ids}
    speeds = snapshot.speed_kmh

    def durations_of(greens: Mapping[str, Sequence[int]]) -> dict[str, list[float]]:
        return {t: net.intersections[t].durations(greens[t]) for t in tls_ids}

    turns: dict[str, dict[str, float]] = {}
    for t in tls_ids:
        turns.update(turning_proportions(net.intersections[t], lane_q, snapshot.segment_flow_veh_h))

    def score(greens: Mapping[str, Sequence[int]]) -> float:
        ev = evaluate_plans(net, durations_of(greens), install, lane_q, speeds, cfg, turns)
        return ev.total_delay_veh_h_per_h

    candidates: list[tuple[float, str, int | None, dict[str, list[int]]]] = []
    iso_plans = {t: webster_plan(net.intersections[t], plan_q, cons, prev[t]) for t in tls_ids}
    iso = {t: p[0] for t, p in iso_plans.items()}
    ranges = [cycle_range_s(net.intersections[t], cons, prev[t]) for t in tls_ids]
    hard = [cycle_range_s(net.intersections[t], cons, None) for t in tls_ids]
    # a common cycle is at least the critical intersection's Webster cycle (classic system-cycle rule)
    c_crit = max((p[1]["C0_unbounded"] for p in iso_plans.values()), default=0.0)
    lo = max((r[0] for r in ranges), default=0)
    hi = min((r[1] for r in ranges), default=-1)
    lo_h = max((r[0] for r in hard), default=0)
    hi_h = min((r[1] for r in hard), default=-1)
    if cfg.critical_cycle_floor and cfg.system_cycle_s is None:
        floor_c = math.ceil(min(c_crit, cfg.cycle_search_max_s) - 1e-9)
        lo, lo_h = max(lo, min(hi, floor_c)), max(lo_h, min(hi_h, floor_c))
    running_common: int | None = None
    cyc_now = {round(clocks[t].cycle_s) for t in tls_ids}
    if len(cyc_now) == 1:
        running_common = int(next(iter(cyc_now)))

    def common(lo_c: int, hi_c: int, bounded: bool) -> list[tuple[float, str, int | None, dict[str, list[int]]]]:
        top = max(lo_c, min(hi_c, int(cfg.cycle_search_max_s)))
        grid = _candidate_cycles(lo_c, top)
        if running_common is not None and lo_c <= running_common <= hi_c:
            grid = sorted(set(grid) | {running_common})
        if cfg.system_cycle_s is not None:
            grid = [min(max(round(cfg.system_cycle_s), min(lo_c, hi_c)), hi_c)]
        out: list[tuple[float, str, int | None, dict[str, list[int]]]] = []
        for C in grid:
            gr = {
                t: webster_plan(
                    net.intersections[t], plan_q, cons, prev[t] if bounded else None, cycle_s=C, blend=cfg.split_blend
                )[0]
                for t in tls_ids
            }
            out.append((score(gr), "common", C, gr))
        return out

    def pick(
        cands: list[tuple[float, str, int | None, dict[str, list[int]]]],
    ) -> tuple[float, str, int | None, dict[str, list[int]]]:
        # Robustness: delay rises steeply below the best cycle and slowly above it (Webster), so among the
        # common cycles in [C_best, 1.25 C_best] within `cycle_tolerance` of the best score keep the running
        # one if it is there (no needless change), else take the longest.
        b = min(cands, key=lambda c: c[0])
        c_best = b[2] or 0
        near = [
            c
            for c in cands
            if c[2] is not None and c_best <= c[2] <= 1.25 * c_best and c[0] <= b[0] * (1.0 + cfg.cycle_tolerance)
        ]
        keep = [c for c in near if c[2] == running_common]
        return keep[0] if keep else max(near, key=lambda c: c[2] or 0)

    transition_target: int | None = None
    waived = False
    if cfg.coordinate and tls_ids and lo <= hi:
        candidates = common(lo, hi, True)
        best = pick(candidates)
        if (lo > lo_h or hi < hi_h) and cfg.system_cycle_s is None and lo_h <= hi_h:
            # bounded change binds: aim at the cycle the policy would run without it
            free = pick(common(lo_h, hi_h, False))
            target = free[2]
            if target is not None and not lo <= target <= hi:
                transition_target = target
                safe = cfg.transition_waiver and all(
                    transition_is_safe(net.intersections[t], clocks[t].durations_s, free[3][t], lane_q) for t in tls_ids
                )
                if safe:
                    best, waived = free, True
                    candidates.append(free)
                elif cfg.transition == "fastest":
                    best = min(candidates, key=lambda c: (abs((c[2] or 0) - target), c[0]))
                else:
                    best = min(candidates, key=lambda c: c[0])
    if cfg.isolated_alternative or not candidates:
        iso_c = (score(iso), "isolated", None, iso)
        if not candidates or iso_c[0] < min(c[0] for c in candidates):
            best = iso_c
        candidates.append(iso_c)
    total_after, mode, cyc, greens = best
    before = evaluate_plans(
        net,
        {t: clocks[t].durations_s for t in tls_ids},
        {t: clocks[t].anchor_s for t in tls_ids},
        lane_q,
        speeds,
        cfg,
        turns,
    )
    after = evaluate_plans(net, durations_of(greens), install, lane_q, speeds, cfg, turns)
    recs: dict[str, Recommendation] = {}
    for t in tls_ids:
        ix = net.intersections[t]
        # hard constraints always; bounded change unless the transition was shown queue-safe
        bound_ok = green_bounds(ix, cons, prev[t])[2]
        problems = check_greens(ix, greens[t], cons, prev[t] if bound_ok and not waived else None)
        assert not problems, problems
        b, a = before.by_approach(t), after.by_approach(t)
        expected = {
            seg: {
                "delay_before_s": b.get(seg, {}).get("delay_s", 0.0),
                "delay_after_s": a[seg]["delay_s"],
                "vc_before": b.get(seg, {}).get("vc", 0.0),
                "vc_after": a[seg]["vc"],
                "demand_veh_h": a[seg]["demand_veh_h"],
            }
            for seg in a
        }
        cycle = float(sum(greens[t]) + ix.fixed_time_s)
        y = critical_flow_ratios(ix, plan_q)
        over = any(v["vc_after"] > 1.0 for v in expected.values())
        why = (
            f"common cycle {cyc} s keeps phase-0 times aligned for progression"
            if mode == "common"
            else f"isolated Webster cycle {cycle:.0f} s"
        )
        reason = (
            f"{why}; critical y={[round(v, 3) for v in y]}; network delay "
            f"{before.total_delay_veh_h_per_h:.1f} -> {after.total_delay_veh_h_per_h:.1f} veh·h/h"
        )
        g_here = [ln.lane_id for ln in ix.lanes if ln.lane_id in gated]
        if g_here:
            reason += f"; spill-back gating on {g_here}"
        if over:
            reason += "; still oversaturated (v/c > 1)"
        recs[t] = Recommendation(
            recommendation_id=recommendation_id(t, t_s),
            tls_id=t,
            period_start_s=float(t_s),
            install_at_s=float(install[t]),
            cycle_s=cycle,
            green_s=tuple(int(g) for g in greens[t]),
            offset_s=float(install[t] % cycle),
            expected=expected,
            reason=reason,
            confidence=round(coverage * (0.5 if over else 1.0), 3),
        )
    diag = {
        "mode": mode,
        "cycle_s": cyc,
        "delay_before_veh_h_per_h": round(before.total_delay_veh_h_per_h, 2),
        "delay_after_veh_h_per_h": round(total_after, 2),
        "gated_lanes": gated,
        "coverage": round(coverage, 3),
        "critical_webster_cycle_s": round(c_crit, 1),
        "transition_target_s": transition_target,
        "bounded_change_waived": waived,
        "candidates": {f"{m}:{c}": round(v, 2) for v, m, c, _ in candidates},
    }
    return recs, diag
