"""Loop detectors and cameras that observe a :class:`~sensors_sim.traffic.TrafficModel`.

Each device accumulates what it would see every model step (:meth:`DeviceBank.observe`) and, at the end of
its interval, turns that into one device-schema-v1 event (:meth:`DeviceBank.emit`), the JSON of the SUMO
harness (``../shared/eval/sumo/README.md``, "Event stream"). A device reads the cell that contains it:

- **Loops.** The vehicles crossing the loop are the outflow of its cell, split over the lanes: equally on
  the link (blocked lanes excepted, see below), and at the last cell of a segment, where the stop-line loop
  sits, by movement (a movement's flow goes to the lanes that serve it). ``count`` is Poisson around that
  expected number, so a stop-line loop counts exactly 0 through a red. The spot speed is the flow-weighted
  speed of the counted vehicles: the cell's space-mean speed on the link; at the stop line the free speed
  (straight on) or ``TURN_SPEED_KMH`` (turning movements) for vehicles arriving on green, blended towards
  ``DISCHARGE_SPEED_KMH`` as the lane's density approaches the critical density (vehicles leaving a
  queue); a per-vehicle spread ``SPEED_SPREAD`` on top. ``occupancy`` is the time the passing vehicles spend
  over the loop, ``(VEHICLE_LENGTH_M + LOOP_LENGTH_M) / speed`` each (scaled to the vehicles actually
  counted), plus the time a halting queue covers it, as a share of the interval: on the link the covered
  share of the lane (density × effective length), at the stop line as soon as the queue reaches back to
  the loop (the first halting vehicle for a loop 5 m before the line).
- **Cameras** see the last ``zone_length_m`` of every lane. ``counts`` are Poisson around the vehicles
  entering the zone, split 85/10/5 % into car/truck/bus. ``queue_len_veh`` is the halting vehicles in the zone
  at ``ts`` (cells slower than 5 km/h, see :func:`~sensors_sim.traffic.halting_share`), ``queue_max_veh`` the
  largest such number in the interval. Occupancy is the mean share of the zone covered by vehicles
  (``VEHICLE_LENGTH_M`` each), speed the zone's space-mean speed (distance / time), null when the zone was
  empty.
- **Lane shares under incidents.** A blocked lane carries nothing downstream of the stalled vehicle, and
  drivers leave it over the ``MERGE_ZONE_M`` before it (its share falls linearly to 0), so its mid-link loop
  empties while the neighbour's fills up. A slowed lane reports its own (lower) speed.

Events for a ``ts`` cover ``[ts - interval_s, ts)``; an interval that was not observed in full (the first
one after an unaligned start) is dropped. Loop and camera counts are drawn independently.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np

from sensors_sim.events import iso_utc
from sensors_sim.network import K_JAM_VEH_KM_LANE, FloatArray, IntArray, bsum
from sensors_sim.traffic import TrafficModel

VEHICLE_LENGTH_M = 5.5
"""Mean vehicle length, metres."""
LOOP_LENGTH_M = 2.0
"""Length of an induction loop along the lane, metres."""
DISCHARGE_SPEED_KMH = 20.0
"""Speed of a vehicle crossing the stop line after having stood in the queue, km/h."""
TURN_SPEED_KMH = {"r": 20.0, "l": 28.0, "t": 15.0}
"""Speed of turning vehicles at the stop line, km/h (right, left, U-turn)."""
SPEED_SPREAD = 0.08
"""Per-vehicle relative standard deviation of spot speeds, dimensionless."""
CAMERA_SPEED_NOISE = 0.03
"""Relative standard deviation of a camera's zone speed, dimensionless."""
CLASS_SHARES = {"car": 0.85, "truck": 0.10, "bus": 0.05}
"""Share of each vehicle class in camera counts."""
MERGE_ZONE_M = 150.0
"""Distance over which drivers leave a blocked lane before the blockage, metres."""
EMPTY_VEH_S = 0.5
"""A camera zone with fewer vehicle-seconds than this in an interval (and nothing counted) is empty."""


def _interval(rec: dict[str, Any], did: str) -> int:
    iv = float(rec["interval_s"])
    if iv <= 0 or iv != int(iv):
        raise ValueError(f"detector {did}: interval_s must be a positive whole number of seconds, got {iv}")
    return int(iv)


class DeviceBank:
    """Every loop and camera of a road graph, observing one :class:`TrafficModel`.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph with ``G.graph["detectors"]`` (``docs/roadnet-contract.md``).
    model : TrafficModel
        The model the devices observe.
    seed : int
        Seed of the measurement noise.

    Attributes
    ----------
    intervals_s : list of int
        The distinct detector intervals, seconds.
    types : dict of str to str
        Device id → ``loop`` or ``camera``.
    """

    def __init__(self, G: nx.MultiDiGraph, model: TrafficModel, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng((seed, 2))
        net = model.net
        self.net = net
        dets: dict[str, dict[str, Any]] = G.graph.get("detectors", {})
        loops = [(did, r) for did, r in dets.items() if r["kind"] == "loop"]
        cams = [(did, r) for did, r in dets.items() if r["kind"] == "camera"]
        # Within a timestamp: by segment, lane, mid-link before stop-line; cameras by segment.
        loops.sort(key=lambda dr: (dr[1]["segment_id"], int(dr[1]["lane_index"]), dr[1]["role"], dr[0]))
        cams.sort(key=lambda dr: (dr[1]["segment_id"], dr[0]))
        self.types = {did: str(r["kind"]) for did, r in dets.items()}

        def seg(did: str, rec: dict[str, Any]) -> int:
            if rec["segment_id"] not in net.index:
                raise ValueError(f"detector {did}: unknown segment {rec['segment_id']!r}")
            return net.index[rec["segment_id"]]

        def lane(did: str, lane_id: str) -> int:
            if lane_id not in net.lane_index:
                raise ValueError(f"detector {did}: unknown lane {lane_id!r}")
            return net.lane_index[lane_id]

        # Loops.
        self._loop_static = [
            {
                "type": "loop",
                "detector_id": did,
                "segment_id": r["segment_id"],
                "lane": r["lane"],
                "lane_index": int(r["lane_index"]),
                "role": r["role"],
            }
            for did, r in loops
        ]
        self.loop_interval: IntArray = np.array([_interval(r, did) for did, r in loops], dtype=np.int64)
        self.loop_seg: IntArray = np.array([seg(did, r) for did, r in loops], dtype=np.int64)
        self.loop_lane: IntArray = np.array([lane(did, r["lane"]) for did, r in loops], dtype=np.int64)
        self.loop_pos: FloatArray = np.array(
            [min(max(float(r["pos_m"]), 0.0), net.length_m[net.index[r["segment_id"]]]) for _, r in loops]
        )
        self.loop_cell: IntArray = np.array(
            [net.cell_at(int(s), float(p)) for s, p in zip(self.loop_seg, self.loop_pos, strict=True)], dtype=np.int64
        )
        self.loop_at_end = self.loop_cell == net.last_cell[self.loop_seg]
        self._body = np.flatnonzero(~self.loop_at_end)
        self._end = np.flatnonzero(self.loop_at_end)
        dist_m = net.length_m[self.loop_seg[self._end]] - self.loop_pos[self._end]
        self._end_cover_veh: FloatArray = np.maximum(dist_m * K_JAM_VEH_KM_LANE / 1000.0, 1.0)
        turn_ms = np.array([TURN_SPEED_KMH.get(d, np.inf) / 3.6 for d in net.mov_dir])
        self._mov_speed: FloatArray = np.minimum(turn_ms, net.vf_ms[net.mov_seg])
        nl = len(loops)
        self.loop_share = np.zeros(nl)
        self.loop_dshare = np.zeros(nl)
        self._pair_w = net.pair_w.copy()
        self._version = -1
        self._l_obs, self._l_count, self._l_flow_v, self._l_moving_s, self._l_stand_s = (np.zeros(nl) for _ in range(5))

        # Cameras: (camera, cell, overlap share) pairs for bincount.
        self._cam_static = [
            {"type": "camera", "camera_id": did, "segment_id": r["segment_id"], "lanes": len(r["lanes"])}
            for did, r in cams
        ]
        cam_seg = np.array([seg(did, r) for did, r in cams], dtype=np.int64)
        for did, r in cams:
            for lid in r["lanes"]:
                lane(did, lid)
        self.cam_interval: IntArray = np.array([_interval(r, did) for did, r in cams], dtype=np.int64)
        self.cam_zone_m: FloatArray = np.minimum(
            np.array([float(r["zone_length_m"]) for _, r in cams]), net.length_m[cam_seg]
        )
        self.cam_lanes: FloatArray = net.lanes[cam_seg].astype(np.float64)
        pc: list[int] = []
        pcell: list[int] = []
        pov: list[float] = []
        entry: list[int] = []
        for k, s in enumerate(cam_seg.tolist()):
            z0 = float(net.length_m[s] - self.cam_zone_m[k])
            f, la = int(net.first_cell[s]), int(net.last_cell[s])
            ln = float(net.cell_len_m[f])
            # Entering the zone = crossing the cell boundary nearest to its upstream end.
            entry.append(f + min(round(z0 / ln), la - f))
            for c in range(f, la + 1):
                a = net.cell_start_m[c]
                ov = (min(a + ln, float(net.length_m[s])) - max(a, z0)) / ln
                if ov > 1e-9:
                    pc.append(k)
                    pcell.append(c)
                    pov.append(min(ov, 1.0))
        self._pc = np.array(pc, dtype=np.int64)
        self._pcell = np.array(pcell, dtype=np.int64)
        self._pov = np.array(pov)
        self._cam_entry = np.array(entry, dtype=np.int64)
        nc = len(cams)
        (self._c_obs, self._c_entries, self._c_veh_s, self._c_vkt, self._c_qmax, self._c_qnow) = (
            np.zeros(nc) for _ in range(6)
        )
        self.intervals_s: list[int] = sorted(set(self.loop_interval.tolist()) | set(self.cam_interval.tolist()))

    @property
    def n_loops(self) -> int:
        """Number of loop detectors."""
        return len(self._loop_static)

    @property
    def n_cameras(self) -> int:
        """Number of cameras."""
        return len(self._cam_static)

    def device_ids(self) -> list[tuple[str, str]]:
        """``(type, id)`` of every device: loops, then cameras."""
        return [("loop", s["detector_id"]) for s in self._loop_static] + [
            ("camera", s["camera_id"]) for s in self._cam_static
        ]

    # ------------------------------------------------------------------------------------------ lane shares

    def _refresh_shares(self, model: TrafficModel) -> None:
        """Lane shares of flow and density at each loop, and the stop-line lane split, under the incidents."""
        net = self.net
        block = model.lane_block_pos
        speed_f = model.lane_speed_factor
        lane_seg = net.lane_seg
        # Body loops: weight of each lane of the loop's segment at the loop's position.
        nl = self.n_loops
        self.loop_share = np.zeros(nl)
        self.loop_dshare = np.zeros(nl)
        blocked_segs = set(lane_seg[~np.isnan(block)].tolist())
        slowed_segs = set(lane_seg[speed_f != 1.0].tolist())
        lanes_f = net.lanes[self.loop_seg].astype(np.float64)
        self.loop_share[:] = 1.0 / lanes_f
        self.loop_dshare[:] = 1.0 / lanes_f
        for d in np.flatnonzero(np.isin(self.loop_seg, list(blocked_segs | slowed_segs))).tolist():
            s = int(self.loop_seg[d])
            lanes = np.flatnonzero(lane_seg == s)
            w = np.ones(len(lanes))
            bp = block[lanes]
            hit = ~np.isnan(bp)
            w[hit] = np.clip((bp[hit] - self.loop_pos[d]) / MERGE_ZONE_M, 0.0, 1.0)
            k = int(np.flatnonzero(lanes == self.loop_lane[d])[0])
            self.loop_share[d] = w[k] / w.sum() if w.sum() > 0 else 0.0
            dw = w / speed_f[lanes]
            self.loop_dshare[d] = dw[k] / dw.sum() if dw.sum() > 0 else 0.0
        # Stop line: blocked lanes carry nothing; their movements' flow moves to the open lanes.
        pw = net.pair_w.copy()
        open_lane = np.isnan(block)
        if not open_lane.all():
            for m in np.unique(net.pair_mov[~open_lane[net.pair_lane]]).tolist():
                idx = np.flatnonzero(net.pair_mov == m)
                ok = open_lane[net.pair_lane[idx]]
                if ok.any():
                    pw[idx] = np.where(ok, pw[idx], 0.0)
                    pw[idx] /= pw[idx].sum()
        self._pair_w = pw
        self._version = model.incident_version

    # ---------------------------------------------------------------------------------------------- observe

    def observe(self, model: TrafficModel) -> None:
        """Accumulate what the devices saw during the model's last step.

        Parameters
        ----------
        model : TrafficModel
            The model, just advanced by :meth:`TrafficModel.step`.
        """
        if self._version != model.incident_version:
            self._refresh_shares(model)
        dt = model.dt_s
        net = self.net
        l_eff = VEHICLE_LENGTH_M + LOOP_LENGTH_M
        n_lanes = len(net.lane_ids)
        # Lane departures and lane queues at the stop line (last cell), by movement.
        lane_dep = bsum(net.pair_lane, self._pair_w * model.mov_flow[net.pair_mov], n_lanes)
        lane_end = bsum(net.pair_lane, self._pair_w * model.q[net.pair_mov], n_lanes)

        flow = np.empty(self.n_loops)
        dens = np.empty(self.n_loops)  # veh/m on the loop's lane
        speed = np.empty(self.n_loops)  # m/s
        b, e = self._body, self._end
        cb = self.loop_cell[b]
        flow[b] = model.cell_out[cb] * self.loop_share[b]
        dens[b] = model.n[cb] * self.loop_dshare[b] / model.cell_len[cb]
        lane_f = model.lane_speed_factor[self.loop_lane]
        speed[b] = np.minimum(model.cell_speed_ms[cb] * lane_f[b], model.vf[cb] * lane_f[b])
        ce = self.loop_cell[e]
        le = self.loop_lane[e]
        flow[e] = lane_dep[le]
        dens[e] = lane_end[le] / model.cell_len[ce]
        # Speed over the stop line: free speed straight on, the turn speed for turning movements ...
        pair_flow = self._pair_w * model.mov_flow[net.pair_mov]
        lane_v = np.divide(
            bsum(net.pair_lane, pair_flow * self._mov_speed[net.pair_mov], n_lanes),
            lane_dep,
            out=np.full(n_lanes, np.inf),
            where=lane_dep > 1e-12,
        )
        v_free = np.minimum(model.vf[ce] * lane_f[e], lane_v[le])
        # ... and the discharge speed for vehicles that stood in the queue (lane above critical density).
        k_crit = model.q_cap[ce] / net.lanes[self.loop_seg[e]] / model.vf[ce]
        queued = np.clip(dens[e] / k_crit, 0.0, 1.0)
        speed[e] = v_free * (1.0 - queued) + np.minimum(DISCHARGE_SPEED_KMH / 3.6, v_free) * queued
        halting = model.cell_halting[self.loop_cell]
        # A halting queue covers a loop once it reaches back to it: at the stop line, the first vehicle.
        cover = np.clip(dens * l_eff, 0.0, 1.0)
        cover[e] = np.clip(lane_end[le] / self._end_cover_veh, 0.0, 1.0)

        self._l_obs += dt
        self._l_count += flow
        self._l_flow_v += flow * speed
        self._l_moving_s += flow * l_eff / np.maximum(speed, 0.5)
        self._l_stand_s += dt * cover * halting

        if not self.n_cameras:
            return
        nc = self.n_cameras
        pc, pcell, pov = self._pc, self._pcell, self._pov
        n_c = model.n[pcell] * pov
        q_now = bsum(pc, n_c * model.cell_halting[pcell], nc)
        self._c_obs += dt
        self._c_entries += model.cell_in[self._cam_entry]
        self._c_veh_s += bsum(pc, model.n_prev[pcell] * pov * dt, nc)
        self._c_vkt += bsum(pc, model.cell_out[pcell] * model.cell_len[pcell] * pov, nc)
        np.maximum(self._c_qmax, q_now, out=self._c_qmax)
        self._c_qnow = q_now

    # ------------------------------------------------------------------------------------------------- emit

    def emit(self, ts_s: int) -> list[dict[str, Any]]:
        """Events of every device whose interval ends at ``ts_s``: loops first, then cameras.

        Resets those devices' accumulators. Devices that did not observe their whole interval emit nothing.

        Parameters
        ----------
        ts_s : int
            POSIX time of the interval end, seconds.

        Returns
        -------
        list of dict
            Device-schema-v1 loop and camera events.
        """
        ts = iso_utc(ts_s)
        return self._emit_loops(ts_s, ts) + self._emit_cameras(ts_s, ts)

    def _emit_loops(self, ts_s: int, ts: str) -> list[dict[str, Any]]:
        due = np.flatnonzero(ts_s % self.loop_interval == 0)
        if not len(due):
            return []
        T = self.loop_interval[due].astype(np.float64)
        full = self._l_obs[due] >= T - 1e-6
        expected = self._l_count[due]
        n = self.rng.poisson(np.maximum(expected, 0.0))
        mean_v = np.divide(self._l_flow_v[due], expected, out=np.zeros(len(due)), where=expected > 1e-12) * 3.6
        z = self.rng.standard_normal(len(due))
        v = mean_v * np.maximum(1.0 + SPEED_SPREAD / np.sqrt(np.maximum(n, 1)) * z, 0.3)
        moving = np.divide(self._l_moving_s[due] * n, expected, out=np.zeros(len(due)), where=expected > 1e-12)
        occ = np.clip((moving + self._l_stand_s[due]) / T, 0.0, 1.0)
        static = self._loop_static
        out: list[dict[str, Any]] = [
            {
                **static[i],
                "ts": ts,
                "interval_s": iv,
                "count": cnt,
                "occupancy": o,
                "speed_kmh": sp if cnt > 0 else None,
            }
            for i, ok, cnt, o, sp, iv in zip(
                due.tolist(),
                full.tolist(),
                n.tolist(),
                np.round(occ, 4).tolist(),
                np.round(np.maximum(v, 1.0), 1).tolist(),
                self.loop_interval[due].tolist(),
                strict=True,
            )
            if ok
        ]
        for acc in (self._l_obs, self._l_count, self._l_flow_v, self._l_moving_s, self._l_stand_s):
            acc[due] = 0.0
        return out

    def _emit_cameras(self, ts_s: int, ts: str) -> list[dict[str, Any]]:
        due = np.flatnonzero(ts_s % self.cam_interval == 0)
        if not len(due):
            return []
        T = self.cam_interval[due].astype(np.float64)
        full = self._c_obs[due] >= T - 1e-6
        n = self.rng.poisson(np.maximum(self._c_entries[due], 0.0))
        by_class = self.rng.multinomial(n, list(CLASS_SHARES.values()))
        veh_s = self._c_veh_s[due]
        occ = np.clip(veh_s * VEHICLE_LENGTH_M / (self.cam_zone_m[due] * self.cam_lanes[due] * T), 0.0, 1.0)
        speed = np.divide(self._c_vkt[due], veh_s, out=np.zeros(len(due)), where=veh_s > 1e-9) * 3.6
        speed *= np.maximum(1.0 + CAMERA_SPEED_NOISE * self.rng.standard_normal(len(due)), 0.5)
        q_len = np.rint(self._c_qnow[due]).astype(np.int64)
        q_max = np.maximum(np.rint(self._c_qmax[due]).astype(np.int64), q_len)
        out: list[dict[str, Any]] = []
        static = self._cam_static
        for k, i in enumerate(due.tolist()):
            if not full[k]:
                continue
            count = int(n[k])
            empty = count == 0 and q_max[k] == 0 and veh_s[k] < EMPTY_VEH_S
            out.append(
                {
                    **static[i],
                    "ts": ts,
                    "interval_s": int(self.cam_interval[i]),
                    "counts": {c: int(x) for c, x in zip(CLASS_SHARES, by_class[k], strict=True)},
                    "count_total": count,
                    "queue_len_veh": int(q_len[k]),
                    "queue_max_veh": int(q_max[k]),
                    "occupancy": 0.0 if empty else round(float(occ[k]), 4),
                    "speed_kmh": None if empty else round(float(speed[k]), 1),
                }
            )
        for acc in (self._c_obs, self._c_entries, self._c_veh_s, self._c_vkt, self._c_qmax):
            acc[due] = 0.0
        return out


def tick_s(intervals_s: list[int]) -> int:
    """The simulation tick: the greatest common divisor of the detector intervals, seconds.

    Parameters
    ----------
    intervals_s : list of int
        Detector intervals, seconds.

    Returns
    -------
    int
        The tick, seconds (60 without detectors).
    """
    return math.gcd(*intervals_s) if intervals_s else 60
