"""Demand estimation from streaming detector events, and turning proportions.

:class:`DemandEstimator` turns device-schema-v1 loop and camera events into per-lane arrival demand, queues,
speeds and spill-back flags (:class:`DemandSnapshot`) at each decision time; :func:`turning_proportions` splits
each lane's flow over its exits, balanced against the measured exit flows (Furness).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.signals.network import (
    HEAVY_CLASSES,
    JAM_SPACING_M,
    IntersectionModel,
    SignalNetwork,
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
