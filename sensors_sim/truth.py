"""Ground truth of a run, in the SUMO harness's formats (``../shared/eval/sumo/README.md``, "Schemas").

- :class:`GroundTruth`: per segment per minute (``ground_truth_edges.jsonl``), integrated exactly from the
  model's cells every step:

  - ``speed_kmh``: space-mean speed = vehicle-distance / vehicle-time (each vehicle leaving a cell of length
    ``l`` travelled ``l``), ``null`` when the segment was empty;
  - ``density_veh_km``: mean vehicles on the segment / its length (all lanes);
  - ``flow_veh_h``: vehicles that left the segment, as an hourly rate; ``entered``: vehicles that entered
    (rounded);
  - ``occupancy``: density × ``VEHICLE_LENGTH_M`` / lanes (share of the lane length covered);
  - ``waiting_s``: halting vehicle-seconds (:func:`~sensors_sim.traffic.halting_share`);
    ``time_loss_s``: vehicle-time − vehicle-distance / free speed; ``sampled_veh_s``: vehicle-time;
  - ``los``: on ``speed_ratio`` = speed / speed limit, A > .85, B > .67, C > .50, D > .40, E > .30, F;
    ``congested``: ``speed_ratio < 0.5`` and ``density_veh_km >= 10 × lanes``.

- :func:`incident_records`: the incident list (``incidents.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sensors_sim.devices import VEHICLE_LENGTH_M
from sensors_sim.events import iso_utc
from sensors_sim.network import FloatArray, bsum
from sensors_sim.traffic import BLOCK_POS_SHARE, TrafficModel

LOS_BANDS = ((0.85, "A"), (0.67, "B"), (0.50, "C"), (0.40, "D"), (0.30, "E"))
"""Lower bounds (exclusive) of the speed ratio per level of service; below the last: F."""
CONGESTED_RATIO = 0.5
"""A segment-minute is congested below this speed ratio ..."""
CONGESTED_MIN_DENSITY = 10.0
"""... and at or above this density, vehicles per km per lane."""


def los(ratio: float) -> str:
    """Level of service of a speed ratio (speed / speed limit), HCM-2010 urban-street style.

    Parameters
    ----------
    ratio : float
        Speed ratio, dimensionless.

    Returns
    -------
    str
        ``A``–``F``.
    """
    for lim, name in LOS_BANDS:
        if ratio > lim:
            return name
    return "F"


class GroundTruth:
    """Per-segment per-minute truth, accumulated from every model step.

    Parameters
    ----------
    model : TrafficModel
        The model to integrate.
    interval_s : int
        Aggregation interval, seconds (60 in the harness format).

    Attributes
    ----------
    raw : dict of str to numpy.ndarray
        The unrounded per-segment sums of the last emitted interval: ``veh_s`` (vehicle-seconds),
        ``veh_m`` (vehicle-metres), ``entered``, ``left``, ``halting_s``, and ``seconds`` (observed time).
    """

    def __init__(self, model: TrafficModel, interval_s: int = 60) -> None:
        self.model = model
        self.interval_s = interval_s
        net = model.net
        self._nc = len(net.cell_seg)
        self._ns = net.n_segments
        self._reset()
        self.raw: dict[str, FloatArray] = {}
        self._ffs: FloatArray = np.round(net.vf_ms * 3.6, 2)

    def _reset(self) -> None:
        self._veh_s = np.zeros(self._nc)
        self._veh_m = np.zeros(self._nc)
        self._halt_s = np.zeros(self._nc)
        self._entered = np.zeros(self._ns)
        self._left = np.zeros(self._ns)
        self._seconds = 0.0

    def observe(self, model: TrafficModel) -> None:
        """Accumulate the model's last step.

        Parameters
        ----------
        model : TrafficModel
            The model, just advanced.
        """
        dt = model.dt_s
        self._veh_s += model.n_prev * dt
        self._veh_m += model.cell_out * model.cell_len
        self._halt_s += model.n_prev * model.cell_halting * dt
        self._entered += model.seg_in
        self._left += model.seg_out
        self._seconds += dt

    def emit(self, ts_end_s: float) -> list[dict[str, Any]]:
        """Records of the interval ending at ``ts_end_s``, one per segment (graph order), then reset.

        Nothing is returned for an interval not observed in full (the first one after an unaligned start).

        Parameters
        ----------
        ts_end_s : float
            End of the interval, POSIX seconds.

        Returns
        -------
        list of dict
            ``ground_truth_edges.jsonl`` records (see the module docstring).
        """
        net = self.model.net
        seg = net.cell_seg
        ns = self._ns
        full = self._seconds >= self.interval_s - 1e-6
        self.raw = {
            "veh_s": bsum(seg, self._veh_s, ns),
            "veh_m": bsum(seg, self._veh_m, ns),
            "halting_s": bsum(seg, self._halt_s, ns),
            "entered": self._entered.copy(),
            "left": self._left.copy(),
            "seconds": np.full(ns, self._seconds),
        }
        seconds = self._seconds
        self._reset()
        if not full:
            return []
        r = self.raw
        veh_s, veh_m = r["veh_s"], r["veh_m"]
        length_km = net.length_m / 1000.0
        density = veh_s / seconds / length_km
        speed = np.divide(veh_m, veh_s, out=np.zeros(ns), where=veh_s > 1e-9) * 3.6
        loss = np.maximum(veh_s - veh_m / net.vf_ms, 0.0)
        t0, t1 = iso_utc(ts_end_s - seconds), iso_utc(ts_end_s)
        present = veh_s > 1e-9
        speed_r = np.round(speed, 2)
        ratio = np.round(speed_r / self._ffs, 3)
        occ = np.minimum(density * VEHICLE_LENGTH_M / 1000.0 / net.lanes, 1.0)
        congested = present & (ratio < CONGESTED_RATIO) & (density >= CONGESTED_MIN_DENSITY * net.lanes)
        flow = np.round(r["left"] / seconds * 3600.0, 1)
        out = [
            {
                "segment_id": sid,
                "ts_start": t0,
                "ts_end": t1,
                "interval_s": float(seconds),
                "speed_kmh": sp if ok else None,
                "free_flow_kmh": ffs,
                "speed_ratio": ra if ok else None,
                "density_veh_km": de,
                "flow_veh_h": fl,
                "entered": round(en),
                "occupancy": oc,
                "waiting_s": wa,
                "time_loss_s": tl,
                "sampled_veh_s": vs,
                "los": los(ra) if ok else None,
                "congested": co,
            }
            for sid, ok, sp, ffs, ra, de, fl, en, oc, wa, tl, vs, co in zip(
                net.segment_ids,
                present.tolist(),
                speed_r.tolist(),
                self._ffs.tolist(),
                ratio.tolist(),
                np.round(density, 2).tolist(),
                flow.tolist(),
                r["entered"].tolist(),
                np.round(occ, 4).tolist(),
                np.round(r["halting_s"], 1).tolist(),
                np.round(loss, 1).tolist(),
                np.round(veh_s, 1).tolist(),
                congested.tolist(),
                strict=True,
            )
        ]
        return out


def incident_records(model: TrafficModel, *, include_pending: bool = False) -> list[dict[str, Any]]:
    """The incident list in the harness's ``incidents.json`` format.

    ``start_s``/``end_s`` are seconds after the simulation start (the harness's simulated seconds when the run
    starts at its t = 0). ``status`` is ``done``, or ``active`` when the incident was still in effect at the
    end of the run (``end_s`` is then its planned end, so that the harness's scorer can use it), or
    ``pending`` when it never started (such records are left out unless ``include_pending``).

    Parameters
    ----------
    model : TrafficModel
        The model that ran the incidents.
    include_pending : bool
        Also list the incidents that never started (``start_s``/``end_s`` null).

    Returns
    -------
    list of dict
        One record per incident, in scenario order.
    """
    net = model.net
    out = []
    for inc in model.incidents:
        i = net.index[inc.segment_id]
        log = model.incident_log[inc.incident_id]
        start, end = log["start_s"], log["end_s"]
        status = "pending" if start is None else ("active" if end is None else "done")
        if status == "pending" and not include_pending:
            continue
        if status == "active":
            end = inc.start_s + inc.duration_s
        lane = None
        if inc.lane_index is not None:
            lane = net.lane_ids[int(np.flatnonzero((net.lane_seg == i) & (net.lane_pos == inc.lane_index))[0])]
        pos = inc.pos_m
        if inc.kind == "blocked_lane" and pos is None:
            pos = round(BLOCK_POS_SHARE * float(net.length_m[i]), 1)
        rec: dict[str, Any] = {
            "incident_id": inc.incident_id,
            "kind": inc.kind,
            "segment_id": inc.segment_id,
            "lane": lane,
            "lane_index": inc.lane_index,
            "pos_m": pos if inc.kind == "blocked_lane" else None,
            "planned_start_s": inc.start_s,
            "duration_s": inc.duration_s,
            "start_s": start,
            "end_s": end,
            "start_ts": None if start is None else iso_utc(model.t0_s + start),
            "end_ts": None if end is None else iso_utc(model.t0_s + end),
            "status": status,
        }
        if inc.kind == "slowdown":
            rec["speed_kmh"] = inc.speed_kmh
        out.append(rec)
    return out
