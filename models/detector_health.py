"""Detector health from each detector's own recent readings and its segment neighbours.

Statuses, in order of precedence:

- ``silent``: no reading for more than 2.5 reporting intervals of stream time (a function of the last-seen
  reading time and the current stream time, e.g. the end of the window being closed);
- ``stuck``: the same non-zero reading (count, occupancy, speed; for cameras also queue) reported
  ``STUCK_REPEATS`` times in a row — real traffic does not repeat itself to the last digit. "Fully occupied,
  nothing counted" is what a vehicle standing on the loop reports, so that one needs ``STUCK_ON_S``;
- ``implausible``: the latest reading breaks physics: vehicles counted with (almost) no occupancy, a loop
  occupied the whole interval while vehicles pass at speed, more than one vehicle per second per lane, a speed
  far above the limit, a camera with vehicles and no occupancy or a queue longer than its zone can hold;
- ``disagrees``: the detector has counted nothing for a while although the vehicles it should have seen add
  up to ``DISAGREE_MIN_REF_VEH`` (a dead loop that still reports zeros). The evidence per window is the count
  of the same lane's other loop (the same vehicles) when that loop counts; otherwise half the camera's count
  per lane, or without a camera half the other lanes' mean count (lanes carry unequal shares, and a blocked or
  closed lane, whose two loops both go quiet, must not be declared broken too quickly). A camera's evidence
  is the mid-link loops' total count. Any vehicle counted ends the streak;
- ``ok`` otherwise.

A device whose readings are stamped too far ahead of its segment's stream time is a ``clock`` fault: the stream
layer rejects those readings before any window sees them (``streams.windowing``), and :func:`clock_decision`
turns that into a device-fault decision of the same shape as ``models.incidents``' (``device_fault`` /
``device_restored``), so it is published like the other device faults.

The state of one segment is a JSON-able dict ``{"t0": first stream time seen, "d": {detector id: state}}``
with per detector ``last`` (s), ``sig`` (last reading signature), ``rep`` (identical readings in a row),
``imp`` (latest reading implausible, 0/1), ``zs`` (windows in the current zero-count streak) and ``zr``
(reference vehicles per lane seen during that streak). Everything is pure Python; the estimator takes the
returned ``excluded`` set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from models.congestion import CAMERA, MID, STOP, SegmentModel

OK, SILENT, STUCK, IMPLAUSIBLE, DISAGREES = "ok", "silent", "stuck", "implausible", "disagrees"
CLOCK = "clock"
#: A detector is silent after this many reporting intervals without a reading.
SILENT_INTERVALS = 2.5
#: Identical non-zero readings in a row that make a detector stuck.
STUCK_REPEATS = 3
#: A loop reporting "fully occupied, nothing counted" is stuck only after this long, s (a stalled vehicle).
STUCK_ON_S = 300.0
#: Reference vehicles per lane, counted while the detector counted none, that make it disagree.
DISAGREE_MIN_REF_VEH = 20.0
#: Shortest plausible vehicle, m: a loop passed by ``count`` vehicles at ``speed`` is occupied at least
#: about ``(count - 1) · length / speed`` (with a factor ``MIN_OCCUPANCY_SHARE`` of slack).
MIN_VEHICLE_LENGTH_M = 2.0
MIN_OCCUPANCY_SHARE = 0.1
#: A lane passes at most this many vehicles per second.
MAX_LANE_RATE_VEH_S = 1.0
#: Speeds above this multiple of the limit (plus 20 km/h) are implausible.
MAX_SPEED_FACTOR = 2.0
#: A loop occupied at least this share of the interval cannot pass vehicles at ``OCCUPIED_MAX_SPEED_KMH``.
FULL_OCCUPANCY = 0.98
OCCUPIED_MAX_SPEED_KMH = 30.0
#: Densest standing queue, m per vehicle (with gaps); a camera queue above zone · lanes / this is implausible.
MIN_JAM_SPACING_M = 5.0


def new_health_state() -> dict[str, Any]:
    """An empty per-segment health state."""
    return {"t0": None, "d": {}}


def reading_signature(r: Mapping[str, Any]) -> list[Any]:
    """The values a stuck detector repeats: count, occupancy, speed (and queue for cameras)."""
    if r.get("type") == "camera":
        return [r.get("count_total"), r.get("occupancy"), r.get("speed_kmh"), r.get("queue_max_veh")]
    return [r.get("count"), r.get("occupancy"), r.get("speed_kmh")]


_ZEROS = (None, 0, 0.0)


def _nonzero(sig: list[Any]) -> bool:
    for v in sig:  # (a loop, not ``any(generator)``: called per reading)
        if v not in _ZEROS:
            return True
    return False


def _stuck_repeats(sig: list[Any] | None, meta: Any) -> int:
    """Identical readings in a row that make a detector stuck: a vehicle may stand on a loop (count 0, fully
    occupied) through a long red or an incident, so that signature needs ``STUCK_ON_S`` of repeats."""
    if sig is not None and len(sig) == 3 and not sig[0] and (sig[1] or 0.0) >= FULL_OCCUPANCY:
        interval = meta.interval_s if meta is not None and meta.interval_s > 0 else 30.0
        return max(STUCK_REPEATS, math.ceil(STUCK_ON_S / interval))
    return STUCK_REPEATS


def implausible_reason(r: Mapping[str, Any], model: SegmentModel | None = None) -> str | None:
    """Why one reading is physically implausible, or None.

    Parameters
    ----------
    r : Mapping
        A loop or camera reading (device schema v1).
    model : SegmentModel, optional
        For the speed limit (km/h) and the camera zone length (m).
    """
    get = r.get
    interval = float(get("interval_s") or 0.0)
    occ = float(get("occupancy") or 0.0)
    speed = get("speed_kmh")
    limit = model.speed_limit_kmh if model is not None else 130.0
    if speed is not None and float(speed) > MAX_SPEED_FACTOR * limit + 20.0:
        return "speed far above the limit"
    if get("type") == "camera":
        count = int(r.get("count_total") or 0)
        if count > 0 and occ == 0.0 and speed is None:
            return "vehicles entered an empty zone"
        lanes = int(r.get("lanes") or (model.camera_lanes if model else 1) or 1)
        zone = model.zone_length_m if model is not None and model.zone_length_m else None
        if zone is not None and int(r.get("queue_max_veh") or 0) > zone * lanes / MIN_JAM_SPACING_M:
            return "queue longer than the zone holds"
        return None
    count = int(get("count") or 0)
    if count <= 0 or interval <= 0:
        return None
    if count / interval > MAX_LANE_RATE_VEH_S:
        return "more than one vehicle per second"
    # the first counted vehicle may have entered the loop in the previous interval: count - 1 full passages
    if speed is not None and float(speed) > 0:
        min_occ = (count - 1) * MIN_VEHICLE_LENGTH_M / (float(speed) / 3.6) / interval
        if occ < MIN_OCCUPANCY_SHARE * min(min_occ, 1.0):
            return "vehicles counted with no occupancy"
        if occ >= FULL_OCCUPANCY and count >= 2 and float(speed) >= OCCUPIED_MAX_SPEED_KMH:
            return "fully occupied while vehicles pass at speed"
    elif occ == 0.0 and count >= 2:
        return "vehicles counted with no occupancy"
    return None


def assess_window(
    readings: Iterable[Mapping[str, Any]],
    model: SegmentModel,
    state: dict[str, Any],
    now_s: float,
) -> tuple[dict[str, str], frozenset[str]]:
    """Update a segment's detector health with one window's readings and classify its detectors.

    Parameters
    ----------
    readings : iterable of Mapping
        The window's readings (with ``ts_s``, Unix s), in time order.
    model : SegmentModel
        The segment (its detectors, lanes, limit).
    state : dict
        The segment's health state (:func:`new_health_state`), updated in place.
    now_s : float
        Current stream time, s (normally the end of the window).

    Returns
    -------
    status : dict of str to str
        Detector id → ``ok`` / ``silent`` / ``stuck`` / ``implausible`` / ``disagrees`` for every detector of
        the model and every device that reported.
    excluded : frozenset of str
        The detectors that are not ``ok``: pass to ``models.congestion.estimate_window``.
    """
    if state.get("t0") is None:
        state["t0"] = now_s
    dstates: dict[str, dict[str, Any]] = state.setdefault("d", {})
    detectors = model.detectors
    # window counts: per detector; per (role, lane) for references
    win_count: dict[str, float] = {}
    meta_of: dict[str, tuple[int, int]] = {}
    for r in readings:
        get = r.get
        is_cam = get("type") == "camera"
        did = str(get("camera_id") if is_cam else get("detector_id"))
        m = detectors.get(did)
        if m is not None:
            meta_of[did] = (m.role, m.lane)
        else:
            role = CAMERA if is_cam else STOP if get("role") == "stop_line" else MID
            meta_of[did] = (role, -1 if is_cam else int(get("lane_index") or 0))
        ds = dstates.get(did)
        if ds is None:  # (not ``setdefault(did, {...})``: no throw-away dict per reading)
            ds = dstates[did] = {"last": None, "sig": None, "rep": 0, "imp": 0, "zs": 0, "zr": 0.0}
        ts = float(get("ts_s") or now_s)
        last = ds["last"]
        if last is None:
            ds["last"] = ts
        else:
            last = float(last)
            ds["last"] = ts if ts > last else last  # max(last, ts)
        # reading_signature(r), inline
        if is_cam:
            sig = [get("count_total"), get("occupancy"), get("speed_kmh"), get("queue_max_veh")]
        else:
            sig = [get("count"), get("occupancy"), get("speed_kmh")]
        ds["rep"] = ds["rep"] + 1 if sig == ds["sig"] and _nonzero(sig) else 1
        ds["sig"] = sig
        bad = 1 if implausible_reason(r, model) is not None else 0
        if did in win_count:  # any implausible reading in the window
            if bad > ds["imp"]:
                ds["imp"] = bad
            win_count[did] += float((get("count_total") if is_cam else get("count")) or 0)
        else:
            ds["imp"] = bad
            win_count[did] = 0.0 + float((get("count_total") if is_cam else get("count")) or 0)

    status: dict[str, str] = {}
    for did, ds in dstates.items():
        if ds["rep"] >= _stuck_repeats(ds["sig"], model.detectors.get(did)):
            status[did] = STUCK
        elif ds["imp"]:
            status[did] = IMPLAUSIBLE
    # reference counts from the detectors that look fine so far
    lane_counts: dict[tuple[int, int], float] = {}
    cam_count: float | None = None
    for did, c in win_count.items():
        if did in status:
            continue
        role, lane = meta_of[did]
        if role == CAMERA:
            cam_count = (cam_count or 0.0) + c
        else:
            lane_counts[(role, lane)] = lane_counts.get((role, lane), 0.0) + c
    cam_lanes = max(1, model.camera_lanes or model.lanes)
    for did, c in win_count.items():
        ds = dstates[did]
        if did in status:
            ds["zs"], ds["zr"] = 0, 0.0
            continue
        if c > 0:  # (before the evidence, which only a detector that counted nothing needs)
            ds["zs"], ds["zr"] = 0, 0.0
            continue
        role, lane = meta_of[did]
        evidence = 0.0
        if role == CAMERA:
            mids = [v for (ro, _), v in lane_counts.items() if ro == MID]
            evidence = sum(mids)
        else:
            partner = [v for (ro, ln), v in lane_counts.items() if ln == lane and ro != role]
            if partner and max(partner) > 0:
                evidence = max(partner)  # the same lane's other loop: the same vehicles
            elif cam_count is not None:
                # the camera's count per lane, else the other lanes' mean, at half weight: lanes carry
                # unequal shares, and a blocked or closed lane (both its loops quiet) is not a broken loop
                evidence = 0.5 * cam_count / cam_lanes
            else:
                same_role = [v for (ro, ln), v in lane_counts.items() if ro == role and ln != lane]
                if same_role:
                    evidence = 0.5 * sum(same_role) / len(same_role)
        ds["zs"] += 1
        ds["zr"] = round(float(ds["zr"]) + evidence, 3)
        if ds["zr"] >= DISAGREE_MIN_REF_VEH:
            status[did] = DISAGREES
    # silence: every known detector, from its last reading (or from when we started watching)
    for did, m in model.detectors.items():
        seen = dstates.get(did)
        last = seen["last"] if seen is not None and seen["last"] is not None else state["t0"]
        if now_s - float(last) > SILENT_INTERVALS * m.interval_s:
            status[did] = SILENT
    for did in dstates:
        status.setdefault(did, OK)
    for did in model.detectors:
        status.setdefault(did, OK)
    return status, frozenset([d for d, s in status.items() if s != OK])


def clock_decision(
    faults: dict[str, str],
    *,
    segment_id: str,
    detector_id: str,
    lane: str | None,
    at: str,
    ahead_s: float | None,
) -> dict[str, Any] | None:
    """Track a device's clock status; return a device-fault decision when it changes.

    Parameters
    ----------
    faults : dict of str to str
        The segment's open clock faults (detector id → since, ISO UTC), updated in place.
    segment_id, detector_id, lane : str
        The device and where it sits (``lane`` None for a camera).
    at : str
        Stream time of the change (ISO UTC): the segment's watermark, or the reading's time before it has one.
    ahead_s : float or None
        How far (s) the device's rejected reading was ahead of the segment's stream time; None when a reading of
        the device was accepted.

    Returns
    -------
    dict or None
        ``{"type": "device_fault", "fault": "clock", ..., "evidence": {"ahead_s": ...}}`` when the device becomes
        a clock fault, ``{"type": "device_restored", "fault": "clock", ...}`` when a faulty device's reading was
        accepted again, else None (no change: one alert per episode).
    """
    base = {"segment_id": segment_id, "detector_id": detector_id, "lane": lane, "fault": CLOCK, "ts": at}
    if ahead_s is None:
        if faults.pop(detector_id, None) is None:
            return None
        return {"type": "device_restored", **base}
    if detector_id in faults:
        return None
    faults[detector_id] = at
    return {"type": "device_fault", **base, "since_ts": at, "evidence": {"ahead_s": round(float(ahead_s), 1)}}
