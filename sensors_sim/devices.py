"""Loop detectors and cameras that observe a :class:`~sensors_sim.traffic.TrafficState`.

Each device accumulates expected quantities every simulation step (:meth:`DeviceBank.observe`) and, at the
end of its interval, turns them into one device-schema-v1 event (:meth:`DeviceBank.emit`), the same JSON as
the SUMO harness (``eval/sumo/README.md``, "Event stream"):

- **Loops.** Mid-link loops count the vehicles arriving on their lane, stop-line loops the vehicles leaving
  the lane's queue. ``count`` is Poisson around the expected number. The spot speed is the mean over the
  counted vehicles: free-flow vehicles at the speed limit, vehicles that had queued at
  ``DISCHARGE_SPEED_KMH``, each with a per-vehicle spread of ``SPEED_SPREAD``. ``occupancy`` is the time the
  counted vehicles spend over the loop, ``(VEHICLE_LENGTH_M + LOOP_LENGTH_M) / speed`` each, plus the time a
  standing queue covers the loop, as a share of the interval.
- **Cameras.** ``counts`` are Poisson around the vehicles entering the zone (the last ``zone_length_m``),
  split 85/10/5 % into car/truck/bus. The queue is the lanes' queued vehicles inside the zone. Occupancy and
  space-mean speed come from the vehicle-seconds spent in the zone, queued (speed 0) and moving (free speed).

Events for a ``ts`` cover ``[ts - interval_s, ts)``; an interval that was not observed in full (the first one
after an unaligned start) is dropped. Loop and camera counts are drawn independently, so they agree only on
average.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import networkx as nx
import numpy as np

from sensors_sim.traffic import K_JAM_VEH_KM_LANE, BoolArray, FloatArray, IntArray, TrafficState

VEHICLE_LENGTH_M = 5.5
"""Mean vehicle length, metres."""
LOOP_LENGTH_M = 2.0
"""Length of an induction loop along the lane, metres."""
DISCHARGE_SPEED_KMH = 20.0
"""Speed of a vehicle crossing the stop line after having stood in the queue, km/h."""
SPEED_SPREAD = 0.08
"""Per-vehicle relative standard deviation of spot speeds, dimensionless."""
CLASS_SHARES = {"car": 0.85, "truck": 0.10, "bus": 0.05}
"""Share of each vehicle class in camera counts."""


def iso_utc(t_s: float) -> str:
    """Format a POSIX time as ``YYYY-MM-DDThh:mm:ssZ``.

    Parameters
    ----------
    t_s : float
        POSIX time, seconds (whole seconds are expected).

    Returns
    -------
    str
        The ISO 8601 UTC timestamp.
    """
    return datetime.fromtimestamp(round(t_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _interval(rec: dict[str, Any], did: str) -> int:
    iv = float(rec["interval_s"])
    if iv <= 0 or iv != int(iv):
        raise ValueError(f"detector {did}: interval_s must be a positive whole number of seconds, got {iv}")
    return int(iv)


class DeviceBank:
    """Every loop and camera of a road graph, observing one :class:`TrafficState`.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph with ``G.graph["detectors"]`` (``docs/roadnet-contract.md``).
    state : TrafficState
        The state the devices will observe (gives the segment and lane order).
    seed : int
        Seed of the measurement noise (Poisson counts, speeds, vehicle classes).

    Attributes
    ----------
    intervals_s : list of int
        The distinct detector intervals, seconds.
    """

    def __init__(self, G: nx.MultiDiGraph, state: TrafficState, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng((seed, 2))
        dets: dict[str, dict[str, Any]] = G.graph.get("detectors", {})
        loops = [(did, r) for did, r in dets.items() if r["kind"] == "loop"]
        cams = [(did, r) for did, r in dets.items() if r["kind"] == "camera"]
        # Within a timestamp: by segment, lane, mid-link before stop-line; cameras by segment.
        loops.sort(key=lambda dr: (dr[1]["segment_id"], int(dr[1]["lane_index"]), dr[1]["role"], dr[0]))
        cams.sort(key=lambda dr: (dr[1]["segment_id"], dr[0]))

        def seg(did: str, rec: dict[str, Any]) -> int:
            if rec["segment_id"] not in state.index:
                raise ValueError(f"detector {did}: unknown segment {rec['segment_id']!r}")
            return state.index[rec["segment_id"]]

        def lane(did: str, lane_id: str) -> int:
            if lane_id not in state.lane_index:
                raise ValueError(f"detector {did}: unknown lane {lane_id!r}")
            return state.lane_index[lane_id]

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
        self.loop_lane: IntArray = np.array([lane(did, r["lane"]) for did, r in loops], dtype=np.int64)
        for did, r in loops:
            seg(did, r)
        self.loop_stop: BoolArray = np.array([r["role"] == "stop_line" for _, r in loops], dtype=bool)
        dist = np.array([float(r["dist_to_stop_line_m"]) for _, r in loops])
        # A standing queue covers the loop once it reaches back past the loop (at least one vehicle).
        self.loop_cover_veh: FloatArray = 1.0 + np.floor(dist * K_JAM_VEH_KM_LANE / 1000.0)
        self.loop_free_kmh: FloatArray = state.free_speed_kmh[state.lane_segment[self.loop_lane]]
        nl = len(loops)
        self._l_obs, self._l_count, self._l_queued, self._l_stand = (np.zeros(nl) for _ in range(4))

        # Cameras: (camera, lane) pairs flattened for bincount.
        self._cam_static = [
            {"type": "camera", "camera_id": did, "segment_id": r["segment_id"], "lanes": len(r["lanes"])}
            for did, r in cams
        ]
        cam_seg = np.array([seg(did, r) for did, r in cams], dtype=np.int64)
        self.cam_interval: IntArray = np.array([_interval(r, did) for did, r in cams], dtype=np.int64)
        self.cam_zone_m: FloatArray = np.minimum(
            np.array([float(r["zone_length_m"]) for _, r in cams]), state.length_m[cam_seg]
        )
        self.cam_lanes: FloatArray = np.array([float(len(r["lanes"])) for _, r in cams])
        self.cam_free_kmh: FloatArray = state.free_speed_kmh[cam_seg]
        self._pair_cam: IntArray = np.array([c for c, (_, r) in enumerate(cams) for _ in r["lanes"]], dtype=np.int64)
        self._pair_lane: IntArray = np.array([lane(did, lid) for did, r in cams for lid in r["lanes"]], dtype=np.int64)
        self._pair_storage: FloatArray = np.floor(self.cam_zone_m[self._pair_cam] * K_JAM_VEH_KM_LANE / 1000.0)
        nc = len(cams)
        (self._c_obs, self._c_entries, self._c_queued_vs, self._c_moving_vs, self._c_qmax, self._c_qnow) = (
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

    def observe(self, state: TrafficState, dt_s: float) -> None:
        """Accumulate what the devices saw during the state's last step.

        Parameters
        ----------
        state : TrafficState
            The state, just advanced by :meth:`TrafficState.step`.
        dt_s : float
            Length of that step, seconds.
        """
        ln = self.loop_lane
        self._l_obs += dt_s
        self._l_count += np.where(self.loop_stop, state.lane_departures_veh[ln], state.lane_arrivals_veh[ln])
        self._l_queued += np.where(self.loop_stop, state.lane_queued_departures_veh[ln], 0.0)
        self._l_stand += dt_s * (state.lane_queue_veh[ln] >= self.loop_cover_veh)

        if not len(self._cam_static):
            return
        nc = len(self._cam_static)
        pl = self._pair_lane
        queued = np.minimum(state.lane_queue_veh[pl], self._pair_storage)
        queue_m = queued * 1000.0 / K_JAM_VEH_KM_LANE
        free_k = state.lane_flow_veh_h[pl] / self.cam_free_kmh[self._pair_cam]  # veh/km
        moving = free_k * np.maximum(self.cam_zone_m[self._pair_cam] - queue_m, 0.0) / 1000.0
        q_now = np.bincount(self._pair_cam, weights=queued, minlength=nc).astype(np.float64)
        self._c_obs += dt_s
        self._c_entries += np.bincount(self._pair_cam, weights=state.lane_arrivals_veh[pl], minlength=nc)
        self._c_queued_vs += q_now * dt_s
        self._c_moving_vs += np.bincount(self._pair_cam, weights=moving, minlength=nc) * dt_s
        self._c_qmax = np.maximum(self._c_qmax, q_now)
        self._c_qnow = q_now

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
        n = self.rng.poisson(expected)
        p_queued = np.clip(np.divide(self._l_queued[due], expected, out=np.zeros(len(due)), where=expected > 0), 0, 1)
        nq = self.rng.binomial(n, p_queued)
        nf = n - nq
        z = self.rng.standard_normal((2, len(due)))
        v_free = self.loop_free_kmh[due] * np.maximum(1.0 + SPEED_SPREAD / np.sqrt(np.maximum(nf, 1)) * z[0], 0.5)
        v_dis = DISCHARGE_SPEED_KMH * np.maximum(1.0 + SPEED_SPREAD / np.sqrt(np.maximum(nq, 1)) * z[1], 0.5)
        speed = (nf * v_free + nq * v_dis) / np.maximum(n, 1)
        l_eff = VEHICLE_LENGTH_M + LOOP_LENGTH_M
        busy_s = nf * l_eff / (v_free / 3.6) + nq * l_eff / (v_dis / 3.6) + self._l_stand[due]
        occ = np.clip(busy_s / T, 0.0, 1.0)
        out: list[dict[str, Any]] = []
        for k, i in enumerate(due.tolist()):
            if full[k]:
                count = int(n[k])
                out.append(
                    {
                        **self._loop_static[i],
                        "ts": ts,
                        "interval_s": int(self.loop_interval[i]),
                        "count": count,
                        "occupancy": round(float(occ[k]), 4),
                        "speed_kmh": round(float(speed[k]), 1) if count > 0 else None,
                    }
                )
        for acc in (self._l_obs, self._l_count, self._l_queued, self._l_stand):
            acc[due] = 0.0
        return out

    def _emit_cameras(self, ts_s: int, ts: str) -> list[dict[str, Any]]:
        due = np.flatnonzero(ts_s % self.cam_interval == 0)
        if not len(due):
            return []
        T = self.cam_interval[due].astype(np.float64)
        full = self._c_obs[due] >= T - 1e-6
        expected = self._c_entries[due]
        n = self.rng.poisson(expected)
        by_class = self.rng.multinomial(n, list(CLASS_SHARES.values()))
        # Moving vehicle-seconds scaled to the vehicles actually counted; queued ones from the queue.
        moving_vs = np.divide(self._c_moving_vs[due] * n, expected, out=np.zeros(len(due)), where=expected > 0)
        veh_s = self._c_queued_vs[due] + moving_vs
        zone = self.cam_zone_m[due]
        occ = np.clip(veh_s * VEHICLE_LENGTH_M / (zone * self.cam_lanes[due] * T), 0.0, 1.0)
        speed = np.divide(
            moving_vs * self.cam_free_kmh[due], veh_s, out=np.zeros(len(due)), where=veh_s > 0
        )  # km/h: distance (moving vs * free speed) over time (all vs)
        out: list[dict[str, Any]] = []
        for k, i in enumerate(due.tolist()):
            if not full[k]:
                continue
            count = int(n[k])
            q_len = round(float(self._c_qnow[i]))
            q_max = max(round(float(self._c_qmax[i])), q_len)
            empty = count == 0 and q_max == 0
            out.append(
                {
                    **self._cam_static[i],
                    "ts": ts,
                    "interval_s": int(self.cam_interval[i]),
                    "counts": {c: int(v) for c, v in zip(CLASS_SHARES, by_class[k], strict=True)},
                    "count_total": count,
                    "queue_len_veh": q_len,
                    "queue_max_veh": q_max,
                    "occupancy": 0.0 if empty else round(float(occ[k]), 4),
                    "speed_kmh": None if empty else round(float(speed[k]), 1),
                }
            )
        for acc in (self._c_obs, self._c_entries, self._c_queued_vs, self._c_moving_vs, self._c_qmax):
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
        The tick, seconds (the smallest interval when all are multiples of it; 60 without detectors).
    """
    return math.gcd(*intervals_s) if intervals_s else 60
