"""Compile a road graph (``docs/roadnet-contract.md``) into the flat arrays of the cell-transmission model.

Everything the model and the devices need is laid out once, in numpy arrays indexed by segment, lane, cell
or movement, so that a simulation step is a fixed sequence of vectorised operations:

- **Segments** in ``G.edges`` order. Each is one *lane group*: its lanes share the cells.
- **Cells.** Segment ``s`` of length ``L`` and free speed ``v_f`` is cut into
  ``max(1, floor(L / (v_f · dt)))`` equal cells, so a free-flowing vehicle crosses at most one cell per step
  (the CFL condition; a segment shorter than ``v_f · dt`` is a single cell that a vehicle crosses in one
  step). Cells of a segment are contiguous, upstream first.
- **Movements.** Every segment ends in one or more movements: to a downstream segment, or to the *sink*
  (the vehicle leaves the network). A segment whose end node is a fringe node, or has no outgoing segment,
  has the sink as its only movement. Elsewhere the turning ratio ``beta`` of each movement comes from, in
  order of preference, the approach ``links`` of the traffic-light record (SUMO networks: lane → target
  segment), the lanes' ``turns`` (``r``/``s``/``l``/``t`` matched to the geometry of the outgoing segments),
  or, without either, is proportional to the downstream segments' capacity. Within a lane that serves several
  targets its share is split in proportion to the targets' capacity. U-turns are only used when a lane asks for
  them (``t``) or no other way out exists. ``lam`` is the share of the approach's lanes that serve the
  movement (its share of the stop-line capacity).
- **Movement lanes.** ``pair_mov``/``pair_lane``/``pair_w``: how each movement's flow spreads over the
  approach lanes (weights sum to 1 per movement), used for stop-line loops and lane queues.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DT_S = 1.0
"""Model time step, seconds."""
K_JAM_VEH_KM_LANE = 150.0
"""Jam density, vehicles per km per lane (6.7 m per standing vehicle)."""
WAVE_SPEED_KMH = 18.0
"""Backward (congestion) wave speed of the triangular fundamental diagram, km/h."""
SAT_FLOW_VEH_H_LANE = 1800.0
"""Saturation flow of a lane, vehicles per hour of green (and the default capacity of unsignalised lanes)."""
STRAIGHT_DEG = 35.0
"""A turn within this many degrees of the approach heading is straight on."""
UTURN_DEG = 150.0
"""A turn beyond this many degrees is a U-turn."""
HEADING_M = 30.0
"""Headings are measured over the last / first this many metres of a segment."""


def bsum(index: IntArray, weights: FloatArray, n: int) -> FloatArray:
    """Sum ``weights`` by ``index`` into ``n`` bins (a typed ``numpy.bincount``).

    Parameters
    ----------
    index : numpy.ndarray of int
        Bin of each weight, in ``[0, n)``.
    weights : numpy.ndarray
        Values to sum.
    n : int
        Number of bins.

    Returns
    -------
    numpy.ndarray
        Per-bin sums, float64.
    """
    out: FloatArray = np.bincount(index, weights=weights, minlength=n).astype(np.float64, copy=False)
    return out


def _heading(points: list[list[float]], at_end: bool) -> float | None:
    """Compass bearing (0 = north, clockwise), degrees, of a polyline's last (or first) ``HEADING_M``."""
    pts = points if at_end else points[::-1]
    if len(pts) < 2:
        return None
    end = pts[-1]
    acc = 0.0
    start = pts[-2]
    for k in range(len(pts) - 2, -1, -1):
        start = pts[k]
        acc = math.hypot(end[0] - start[0], end[1] - start[1])
        if acc >= HEADING_M:
            break
    dx, dy = end[0] - start[0], end[1] - start[1]
    if dx == 0 and dy == 0:
        return None
    bearing = math.degrees(math.atan2(dx, dy)) % 360.0
    return bearing if at_end else (bearing + 180.0) % 360.0


def turn_direction(heading_in: float | None, heading_out: float | None) -> str:
    """Classify a turn from two compass headings.

    Parameters
    ----------
    heading_in : float or None
        Heading at the end of the approach, degrees (0 = north, clockwise).
    heading_out : float or None
        Heading at the start of the outgoing segment, degrees.

    Returns
    -------
    str
        ``"s"`` straight, ``"r"`` right, ``"l"`` left, ``"t"`` U-turn; ``"s"`` when a heading is unknown.
    """
    if heading_in is None or heading_out is None:
        return "s"
    d = (heading_out - heading_in + 540.0) % 360.0 - 180.0  # (-180, 180], positive = clockwise = right
    if abs(d) <= STRAIGHT_DEG:
        return "s"
    if abs(d) >= UTURN_DEG:
        return "t"
    return "r" if d > 0 else "l"


def _override_shares(
    sid: str, override: Mapping[str, float], index: Mapping[str, int], dirs: Mapping[int, str]
) -> dict[int, float]:
    """Validated turning-ratio override of approach ``sid``: target position (-1 = exit) -> share."""
    out: dict[int, float] = {}
    for target, share in override.items():
        j = -1 if target == "exit" else index.get(str(target))
        if j is None or (j >= 0 and j not in dirs):
            raise ValueError(f"turning_ratios[{sid!r}]: {target!r} does not continue {sid!r}")
        if not math.isfinite(float(share)) or float(share) < 0:
            raise ValueError(f"turning_ratios[{sid!r}][{target!r}] must be >= 0, got {share!r}")
        out[j] = float(share)
    total = sum(out.values())
    if total <= 0:
        raise ValueError(f"turning_ratios[{sid!r}] needs a positive share")
    return {j: v / total for j, v in out.items() if v > 0}


@dataclass
class Network:
    """The flat arrays of a compiled road graph (see the module docstring).

    Attributes
    ----------
    segment_ids : list of str
        Segment order; ``index`` maps an id to its position.
    seg_from, seg_to : list of str
        Upstream and downstream node of each segment.
    length_m, vf_ms : numpy.ndarray
        Length (m) and free speed (m/s, the speed limit) per segment.
    lanes : numpy.ndarray of int
        Lanes per segment.
    sat_veh_s_lane : numpy.ndarray
        Saturation flow per lane, vehicles per second: ``capacity_veh_h / lanes / fixed green ratio`` on
        signalised approaches (1800 veh/h for the importers' default capacities), ``capacity_veh_h / lanes``
        elsewhere.
    capacity_veh_h : numpy.ndarray
        The graph's capacity per segment, vehicles per hour.
    is_entry : numpy.ndarray of bool
        Segments leaving a fringe node (or a node without incoming segments): where external demand enters.
    is_sink : numpy.ndarray of bool
        Segments whose only movement is the sink.
    lane_ids, lane_index, lane_seg, lane_pos : list, dict, numpy.ndarray, numpy.ndarray
        Lane order, id → position, segment of each lane and its index within the segment.
    n_cells, first_cell, last_cell : numpy.ndarray of int
        Cells per segment and the positions of its first and last cells.
    cell_seg : numpy.ndarray of int
        Segment of each cell.
    cell_len_m, cell_start_m : numpy.ndarray
        Cell length and the distance of its upstream end from the segment start, metres.
    mov_seg, mov_to : numpy.ndarray of int
        Approach segment and target segment (``-1`` = sink) of each movement.
    mov_beta, mov_lam : numpy.ndarray
        Turning ratio and share of approach lanes of each movement, dimensionless.
    mov_dir : list of str
        ``r``/``s``/``l``/``t`` or ``x`` (sink) per movement.
    pair_mov, pair_lane : numpy.ndarray of int
        Movement and (global) lane of each movement-lane pair.
    pair_w : numpy.ndarray
        Share of the movement's flow that uses that lane.
    turn_source : dict of str to str
        Per segment, where its turning ratios came from: ``links``, ``turns``, ``capacity``, ``sink`` or
        ``scenario``.
    """

    segment_ids: list[str]
    index: dict[str, int]
    seg_from: list[str]
    seg_to: list[str]
    length_m: FloatArray
    vf_ms: FloatArray
    lanes: IntArray
    sat_veh_s_lane: FloatArray
    capacity_veh_h: FloatArray
    is_entry: BoolArray
    is_sink: BoolArray
    lane_ids: list[str]
    lane_index: dict[str, int]
    lane_seg: IntArray
    lane_pos: IntArray
    n_cells: IntArray
    first_cell: IntArray
    last_cell: IntArray
    cell_seg: IntArray
    cell_len_m: FloatArray
    cell_start_m: FloatArray
    mov_seg: IntArray
    mov_to: IntArray
    mov_beta: FloatArray
    mov_lam: FloatArray
    mov_dir: list[str]
    pair_mov: IntArray
    pair_lane: IntArray
    pair_w: FloatArray
    turn_source: dict[str, str]

    @property
    def n_segments(self) -> int:
        """Number of segments."""
        return len(self.segment_ids)

    def cell_at(self, seg: int, pos_m: float) -> int:
        """The cell of segment ``seg`` that contains the point ``pos_m`` metres from its start.

        Parameters
        ----------
        seg : int
            Segment position.
        pos_m : float
            Distance from the segment start, metres (clipped to the segment).

        Returns
        -------
        int
            Cell position.
        """
        k = int(np.clip(pos_m / self.cell_len_m[self.first_cell[seg]], 0, self.n_cells[seg] - 1))
        return int(self.first_cell[seg]) + k


def _green_ratio(tls_by_seg: Mapping[str, dict[str, Any]], sid: str) -> float | None:
    app = tls_by_seg.get(sid)
    if app is None:
        return None
    ratio = app.get("fixed_green_ratio")
    return float(ratio) if ratio else None


def compile_network(
    G: nx.MultiDiGraph,
    *,
    exit_share: float = 0.0,
    turning_ratios: Mapping[str, Mapping[str, float]] | None = None,
    dt_s: float = DT_S,
) -> Network:
    """Lay a road graph out as arrays (see the module docstring).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph following ``docs/roadnet-contract.md``.
    exit_share : float
        Share of the vehicles reaching an interior (non-fringe) node that leave the network there (parking,
        side streets), dimensionless in ``[0, 1)``; taken out of every interior segment's turning ratios.
    turning_ratios : mapping, optional
        ``{approach segment: {target segment or "exit": share}}``: replaces the derived ratios of those
        approaches (shares are normalised; a target outside the derived movements uses every lane; without
        ``"exit"`` nobody leaves there).
    dt_s : float
        Time step the cells are sized for, seconds.

    Returns
    -------
    Network
        The compiled network.

    Raises
    ------
    ValueError
        If ``exit_share`` is outside ``[0, 1)``, the graph has no segments, or a turning-ratio override names
        an unknown segment, a segment that does not continue the approach, or has no positive share.
    """
    if not 0.0 <= exit_share < 1.0:
        raise ValueError(f"exit_share must be in [0, 1), got {exit_share}")
    edges = list(G.edges(keys=True, data=True))
    if not edges:
        raise ValueError("the road graph has no segments")
    segment_ids = [str(d["segment_id"]) for _, _, _, d in edges]
    index = {sid: i for i, sid in enumerate(segment_ids)}
    n = len(edges)
    seg_from = [str(u) for u, _, _, _ in edges]
    seg_to = [str(v) for _, v, _, _ in edges]
    length_m = np.array([float(d["length_m"]) for *_, d in edges])
    vf_ms = np.array([float(d["speed_limit_kmh"]) / 3.6 for *_, d in edges])
    lanes = np.array([int(d["lanes"]) for *_, d in edges], dtype=np.int64)
    capacity = np.array([float(d["capacity_veh_h"]) for *_, d in edges])

    approach_of: dict[str, dict[str, Any]] = {}
    for tls in G.graph.get("traffic_lights", {}).values():
        for app in tls.get("approaches", []):
            approach_of[str(app["segment_id"])] = app
    sat = np.empty(n)
    for i, (*_, d) in enumerate(edges):
        ratio = _green_ratio(approach_of, segment_ids[i]) if d.get("signalised_end") else None
        per_lane = capacity[i] / lanes[i]
        sat[i] = per_lane / ratio if ratio else per_lane
        if not math.isfinite(sat[i]) or sat[i] <= 0:
            sat[i] = SAT_FLOW_VEH_H_LANE

    # Lanes.
    lane_ids: list[str] = []
    lane_seg: list[int] = []
    lane_pos: list[int] = []
    seg_lanes: list[list[int]] = []
    lane_turns: list[list[str]] = []
    for i, (*_, d) in enumerate(edges):
        detail = sorted(d.get("lane_detail") or [], key=lambda ln: int(ln["index"]))
        if len(detail) != lanes[i]:
            detail = [{"lane_id": f"{segment_ids[i]}_{k}", "index": k, "turns": []} for k in range(lanes[i])]
        ids = []
        for k, ln in enumerate(detail):
            ids.append(len(lane_ids))
            lane_ids.append(str(ln["lane_id"]))
            lane_seg.append(i)
            lane_pos.append(k)
            lane_turns.append([str(t) for t in ln.get("turns") or []])
        seg_lanes.append(ids)
    lane_index = {lid: k for k, lid in enumerate(lane_ids)}

    # Cells.
    n_cells = np.maximum(1, np.floor(length_m / (vf_ms * dt_s) + 1e-9)).astype(np.int64)
    first_cell = np.concatenate([[0], np.cumsum(n_cells)[:-1]]).astype(np.int64)
    last_cell = first_cell + n_cells - 1
    cell_seg = np.repeat(np.arange(n, dtype=np.int64), n_cells)
    cell_len = (length_m / n_cells)[cell_seg]
    cell_start = (np.arange(len(cell_seg)) - first_cell[cell_seg]) * cell_len

    # Entries and sinks.
    fringe = {str(v) for v, a in G.nodes(data=True) if a.get("fringe")}
    no_in = {str(v) for v in G.nodes if G.in_degree(v) == 0}
    out_of: dict[str, list[int]] = {str(v): [] for v in G.nodes}
    for i in range(n):
        out_of[seg_from[i]].append(i)
    is_entry = np.array([seg_from[i] in fringe or seg_from[i] in no_in for i in range(n)])
    is_sink = np.array([seg_to[i] in fringe or not out_of[seg_to[i]] for i in range(n)])

    geom = [d.get("geometry_xy_m") or [] for *_, d in edges]
    head_in = [_heading(g, True) for g in geom]
    head_out = [_heading(g, False) for g in geom]

    mov_seg: list[int] = []
    mov_to: list[int] = []
    mov_beta: list[float] = []
    mov_lam: list[float] = []
    mov_dir: list[str] = []
    pair_mov: list[int] = []
    pair_lane: list[int] = []
    pair_w: list[float] = []
    turn_source: dict[str, str] = {}

    def add(seg: int, to: int, beta: float, lam: float, direction: str, lane_w: Mapping[int, float]) -> None:
        m = len(mov_seg)
        mov_seg.append(seg)
        mov_to.append(to)
        mov_beta.append(beta)
        mov_lam.append(lam)
        mov_dir.append(direction)
        total = sum(lane_w.values())
        for ln, w in lane_w.items():
            pair_mov.append(m)
            pair_lane.append(ln)
            pair_w.append(w / total)

    for i in range(n):
        my_lanes = seg_lanes[i]
        nl = len(my_lanes)
        if is_sink[i]:
            add(i, -1, 1.0, 1.0, "x", dict.fromkeys(my_lanes, 1.0))
            turn_source[segment_ids[i]] = "sink"
            continue
        outs = out_of[seg_to[i]]
        dirs = {j: ("t" if seg_to[j] == seg_from[i] else turn_direction(head_in[i], head_out[j])) for j in outs}
        normal = [j for j in outs if dirs[j] != "t"] or outs

        # Targets of each lane (local lane position -> target segments).
        targets: dict[int, list[int]] = {}
        app = approach_of.get(segment_ids[i])
        links = app.get("links") if app else None
        source = "capacity"
        if links:
            for link in links:
                ln = lane_index.get(str(link.get("from_lane")))
                j = index.get(str(link.get("to_edge")))
                if ln is not None and j is not None and j in dirs and lane_seg[ln] == i:
                    targets.setdefault(lane_pos[ln], [])
                    if j not in targets[lane_pos[ln]]:
                        targets[lane_pos[ln]].append(j)
            if targets:
                source = "links"
        if not targets and any(lane_turns[ln] for ln in my_lanes):
            for k, ln in enumerate(my_lanes):
                want = set(lane_turns[ln])
                tj = [j for j in outs if dirs[j] in want]
                if tj:
                    targets[k] = tj
            if targets:
                source = "turns"
        for k in range(nl):
            if not targets.get(k):
                targets[k] = list(normal)
        turn_source[segment_ids[i]] = source

        beta: dict[int, float] = {}
        lane_w: dict[int, dict[int, float]] = {}
        for k in range(nl):
            caps = np.array([capacity[j] for j in targets[k]])
            share = caps / caps.sum() if caps.sum() > 0 else np.full(len(caps), 1.0 / len(caps))
            for j, sh in zip(targets[k], share, strict=True):
                w = sh / nl
                beta[j] = beta.get(j, 0.0) + w
                lane_w.setdefault(j, {})[my_lanes[k]] = lane_w.get(j, {}).get(my_lanes[k], 0.0) + w
        override = (turning_ratios or {}).get(segment_ids[i])
        if override is not None:
            turn_source[segment_ids[i]] = "scenario"
            shares = _override_shares(segment_ids[i], override, index, dirs)
            for j, share in shares.items():
                if j < 0:
                    add(i, -1, share, 1.0, "x", dict.fromkeys(my_lanes, 1.0))
                elif j in lane_w:
                    lam = sum(1 for k in range(nl) if j in targets[k]) / nl
                    add(i, j, share, lam, dirs[j], lane_w[j])
                else:
                    add(i, j, share, 1.0, dirs[j], dict.fromkeys(my_lanes, 1.0))
            continue
        keep = 1.0 - exit_share
        for j in sorted(beta):
            lam = sum(1 for k in range(nl) if j in targets[k]) / nl
            add(i, j, beta[j] * keep, lam, dirs[j], lane_w[j])
        if exit_share > 0:
            add(i, -1, exit_share, 1.0, "x", dict.fromkeys(my_lanes, 1.0))

    # Renormalise so that the turning ratios of every approach sum to exactly 1 (vehicle conservation).
    beta_arr = np.array(mov_beta)
    seg_arr = np.array(mov_seg, dtype=np.int64)
    beta_arr /= bsum(seg_arr, beta_arr, n)[seg_arr]
    return Network(
        segment_ids=segment_ids,
        index=index,
        seg_from=seg_from,
        seg_to=seg_to,
        length_m=length_m,
        vf_ms=vf_ms,
        lanes=lanes,
        sat_veh_s_lane=sat / 3600.0,
        capacity_veh_h=capacity,
        is_entry=is_entry,
        is_sink=is_sink,
        lane_ids=lane_ids,
        lane_index=lane_index,
        lane_seg=np.array(lane_seg, dtype=np.int64),
        lane_pos=np.array(lane_pos, dtype=np.int64),
        n_cells=n_cells,
        first_cell=first_cell,
        last_cell=last_cell,
        cell_seg=cell_seg,
        cell_len_m=cell_len,
        cell_start_m=cell_start,
        mov_seg=seg_arr,
        mov_to=np.array(mov_to, dtype=np.int64),
        mov_beta=beta_arr,
        mov_lam=np.array(mov_lam),
        mov_dir=mov_dir,
        pair_mov=np.array(pair_mov, dtype=np.int64),
        pair_lane=np.array(pair_lane, dtype=np.int64),
        pair_w=np.array(pair_w),
        turn_source=turn_source,
    )
