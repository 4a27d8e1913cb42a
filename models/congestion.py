"""Per-segment, per-window traffic state from loops and cameras: space-mean speed, density, congestion.

The quantity estimated is what SUMO's edge statistics (or a floating-car survey) report: the **space-mean
speed over the whole segment** during the window, total vehicle-distance / total vehicle-time, including the
time spent standing at a red light. Detectors see only points or short zones, so the segment is split into
parts, each with a mean number of vehicles present ``N`` (all lanes) and a space-mean speed ``v`` (km/h):

- **upstream part** ``[0, L - zone]`` (the whole segment without a camera), seen by the mid-link loops: a point
  loop is occupied ``length / speed`` s per vehicle, so occupancy / vehicle length is the point density and
  ``N_A = Σ_lanes occupancy · L_A / vehicle length``; ``v_A`` is the count-weighted harmonic mean of the spot
  speeds (the space-mean speed at the loop). A lane without a working loop gets the vehicles the camera
  counted and the other lanes did not (Little's law, ``N = q · L_A / v_A``; lanes carry very unequal shares),
  without a camera its stop-line loop's flow, else the mean of the observed lanes.
- **stop-line zone** ``[L - zone, L]``, seen by a camera: ``N_B = zone occupancy · zone · lanes / vehicle
  length`` and ``v_B`` = the camera's zone space-mean speed. This is where the red-light queue stands.
- **no camera on a signalised approach**: the queue from the stop-line loops. A loop occupied ``o·T`` s has a
  queue head standing on it while the queue behind grows at the arrival rate ``q_a`` (veh/s per lane) and
  then drains at ``s - q_a`` (deterministic queue, saturation flow ``s`` = 1800 veh/h per lane), so
  ``N_q = lanes · o · (1 + q_a · o · T / 2 · s / (s - q_a))`` standing vehicles (speed 0). Without
  stop-line loops either, the signal's mean uniform delay (Webster / HCM, :func:`uniform_signal_delay_s`,
  from the flow, the green ratio and the cycle) as ``N_d = q · d`` standing vehicles (Little's law).

Then ``v = Σ N_i v_i / Σ N_i`` (exactly distance / time over the union of the parts; a vehicle length
common to all parts cancels out) and ``density = Σ N_i / L``. The vehicle length is the mean over the camera's vehicle
classes entering the zone (typical lengths: car 4.5 m, truck 10 m, bus 12 m), smoothed over windows, 5.5 m
without class counts; it matters only for the density.

Congestion follows the ground-truth definition (``models.segment_state.is_congested``): speed below half the
limit **and** density ≥ 10 veh/km per lane, so a red-phase queue on an otherwise empty link (low speed, low
density) is not congestion.

A small JSON-able **filter state** is carried per segment from window to window: a scalar Kalman filter on
the speed (random walk, process variance ``PROCESS_VAR_KMH2`` per window; measurement variance
``MEASUREMENT_VAR_1VEH_KMH2 / vehicles seen``), the recent upstream speed and the vehicle length. A window in
which no vehicle was seen reports the recent upstream speed (any vehicle present is in the unobserved part
before the first loop, at free speed) with a low confidence.

Everything here is pure Python (no I/O, no framework) and allocates little per call. Detectors named in
``excluded`` (see ``models.detector_health``) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from models.segment_state import SegmentWindowState, is_congested, level_of_service

MID, STOP, CAMERA = 0, 1, 2
ROLE_NAMES = ("mid_link", "stop_line", "camera")

#: Typical vehicle lengths by camera class, m (passenger car, rigid truck, city bus, two-wheeler).
CLASS_LENGTH_M: dict[str, float] = {"car": 4.5, "truck": 10.0, "bus": 12.0, "motorcycle": 2.2, "bicycle": 1.8}
#: Mean vehicle length of an urban mix, m (used without class counts and for unknown classes).
DEFAULT_VEHICLE_LENGTH_M = 5.5
#: Weight of the carried vehicle length against this window's class counts, vehicles.
VEHICLE_LENGTH_PRIOR_VEH = 2.0
#: Base saturation flow, veh/h per lane (HCM).
SATURATION_FLOW_VEH_H_LANE = 1800.0
#: Loop occupancy above which a loop that counted nothing is taken to stand under a queue.
JAMMED_OCCUPANCY = 0.5
#: Fallback signal timing when the network gives none: cycle (s) and green ratio.
DEFAULT_CYCLE_S = 90.0
DEFAULT_GREEN_RATIO = 0.45
#: Kalman filter: process noise per window, (km/h)^2, and one-vehicle measurement variance, (km/h)^2.
PROCESS_VAR_KMH2 = 200.0
MEASUREMENT_VAR_1VEH_KMH2 = 16.0
#: Smoothing weight of a new upstream speed observation for the carried free speed.
FREE_SPEED_GAIN = 0.2


@dataclass(frozen=True, slots=True)
class DetectorMeta:
    """One detector of a segment as the estimator needs it.

    Attributes
    ----------
    role : int
        ``MID`` (mid-link loop), ``STOP`` (stop-line loop) or ``CAMERA``.
    lane : int
        Lane index (0 = rightmost) for loops, -1 for cameras.
    interval_s : float
        Reporting interval, s.
    pos_m : float
        Position from the segment start, m (a camera's zone start).
    """

    role: int
    lane: int
    interval_s: float
    pos_m: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentModel:
    """Static description of one segment: geometry, detectors, signal timing.

    Attributes
    ----------
    segment_id : str
    length_m : float
        Segment length, m.
    lanes : int
        Number of lanes.
    speed_limit_kmh : float
        Speed limit, km/h.
    signalised_end : bool
        A traffic light controls the downstream end.
    detectors : dict of str to DetectorMeta
        Detector id → metadata.
    zone_length_m : float or None
        Length of the camera's stop-line zone, m (None without a camera).
    camera_lanes : int
        Lanes the camera covers.
    cycle_s, green_ratio : float or None
        Signal cycle (s) and this approach's effective green ratio (0–1), when known.
    loop_length_m : float
        Detection length of the loops, m, added to the vehicle length in occupancy → density (0 for the
        point loops of a simulator; about 2 m for real inductive loops).
    """

    segment_id: str
    length_m: float
    lanes: int
    speed_limit_kmh: float
    signalised_end: bool = False
    detectors: dict[str, DetectorMeta] = field(default_factory=dict)
    zone_length_m: float | None = None
    camera_lanes: int = 0
    cycle_s: float | None = None
    green_ratio: float | None = None
    loop_length_m: float = 0.0

    @property
    def upstream_length_m(self) -> float:
        """Length of the part before the camera zone, m (the whole segment without a camera)."""
        if self.zone_length_m is None:
            return self.length_m
        return max(0.0, self.length_m - self.zone_length_m)


def build_segment_model(
    segment_id: str,
    edge: Mapping[str, Any],
    detectors: Iterable[Mapping[str, Any]],
    *,
    cycle_s: float | None = None,
    green_ratio: float | None = None,
    loop_length_m: float = 0.0,
) -> SegmentModel:
    """Build a :class:`SegmentModel` from contract metadata (``docs/roadnet-contract.md``).

    Parameters
    ----------
    segment_id : str
    edge : Mapping
        Edge attributes: ``length_m`` (m), ``lanes``, ``speed_limit_kmh`` (km/h), optional ``signalised_end``.
    detectors : iterable of Mapping
        The segment's detector records: ``detector_id``, ``kind`` (loop/camera), ``interval_s``; loops
        ``role`` and ``lane_index``; cameras ``zone_length_m`` (or ``zone_m``) and ``lanes``.
    cycle_s : float, optional
        Signal cycle, s.
    green_ratio : float, optional
        Effective green / cycle for this approach.
    loop_length_m : float
        Loop detection length, m.
    """
    dets: dict[str, DetectorMeta] = {}
    zone: float | None = None
    cam_lanes = 0
    for d in detectors:
        did = str(d.get("detector_id") or d.get("id"))
        interval = float(d.get("interval_s") or 60.0)
        if d.get("kind") == "camera":
            z = d.get("zone_length_m", d.get("zone_m"))
            zone = min(float(z), float(edge["length_m"])) if z is not None else zone
            lanes_v = d.get("lanes")
            cam_lanes = len(lanes_v) if isinstance(lanes_v, list) else int(lanes_v or edge["lanes"])
            dets[did] = DetectorMeta(CAMERA, -1, interval, float(d.get("pos_m") or 0.0))
        else:
            role = STOP if d.get("role") == "stop_line" else MID
            dets[did] = DetectorMeta(role, int(d.get("lane_index") or 0), interval, float(d.get("pos_m") or 0.0))
    return SegmentModel(
        segment_id=segment_id,
        length_m=float(edge["length_m"]),
        lanes=int(edge["lanes"]),
        speed_limit_kmh=float(edge["speed_limit_kmh"]),
        signalised_end=bool(edge.get("signalised_end", False)),
        detectors=dets,
        zone_length_m=zone,
        camera_lanes=cam_lanes or int(edge["lanes"]),
        cycle_s=cycle_s,
        green_ratio=green_ratio,
        loop_length_m=loop_length_m,
    )


def segment_models_from_graph(G: Any, *, loop_length_m: float = 0.0) -> dict[str, SegmentModel]:
    """All segments of a contract road graph (``roadnet.load_trafficnet``) as :class:`SegmentModel`.

    Signal timing comes from ``G.graph["traffic_lights"]``: the cycle and the approach's
    ``fixed_green_ratio``.
    """
    dets = G.graph.get("detectors", {})
    timing: dict[str, tuple[float, float]] = {}
    for t in G.graph.get("traffic_lights", {}).values():
        for a in t.get("approaches", []):
            timing[a["segment_id"]] = (float(t["cycle_s"]), float(a["fixed_green_ratio"]))
    out: dict[str, SegmentModel] = {}
    for _, _, sid, d in G.edges(keys=True, data=True):
        cyc, g = timing.get(sid, (None, None))
        recs = [dets[i] for i in d.get("detector_ids", []) if i in dets]
        out[sid] = build_segment_model(sid, d, recs, cycle_s=cyc, green_ratio=g, loop_length_m=loop_length_m)
    return out


def uniform_signal_delay_s(flow_veh_h_lane: float, green_ratio: float, cycle_s: float) -> float:
    """Webster / HCM uniform control delay per vehicle, s.

    ``d = C (1 - g)^2 / (2 (1 - min(X, 1) g))`` with ``X = q / (g s)`` the degree of saturation, ``q`` the
    flow (veh/h per lane), ``s`` = 1800 veh/h per lane, ``g`` the green ratio and ``C`` the cycle (s).
    """
    g = min(max(green_ratio, 0.05), 1.0)
    x = min(flow_veh_h_lane / (g * SATURATION_FLOW_VEH_H_LANE), 1.0)
    return 0.5 * cycle_s * (1.0 - g) ** 2 / (1.0 - x * g)


def estimate_window(
    readings: Iterable[Mapping[str, Any]],
    model: SegmentModel,
    prior: Mapping[str, Any] | None = None,
    *,
    excluded: AbstractSet[str] = frozenset(),
    end_s: float | None = None,
    window_s: float = 60.0,
) -> tuple[SegmentWindowState, dict[str, Any]]:
    """Estimate one segment's state for one window and advance its filter state.

    Parameters
    ----------
    readings : iterable of Mapping
        The window's loop and camera readings (device schema v1: loops ``count``, ``occupancy`` 0–1,
        ``speed_kmh`` or null, ``interval_s``; cameras also ``counts`` by class, ``count_total``).
    model : SegmentModel
        The segment's static description.
    prior : Mapping, optional
        The filter state returned for this segment's previous window (None for the first window).
    excluded : set of str
        Detector / camera ids to ignore (unhealthy, see ``models.detector_health``).
    end_s : float, optional
        End of the window, Unix s. With it the filter knows how many windows passed since ``prior`` (a
        segment that reported nothing for a while gets a proportionally larger process noise).
    window_s : float
        Window length, s.

    Returns
    -------
    state : SegmentWindowState
        Speed (km/h), density (veh/km, all lanes), flow (veh/h), occupancy, travel time (s), level of service,
        congestion flag, confidence (0–1).
    filter_state : dict
        JSON-able state to pass as ``prior`` with the next window: ``v`` filtered speed (km/h), ``p`` its
        variance ((km/h)^2), ``vf`` recent upstream (free) speed (km/h), ``lv`` vehicle length (m) and, with
        ``end_s``, ``t`` the window end (s).
    """
    lanes = model.lanes
    prior = prior or {}
    vf_prior = float(prior.get("vf") or model.speed_limit_kmh)
    lv_prior = float(prior.get("lv") or DEFAULT_VEHICLE_LENGTH_M)

    # per lane: [count, occupied s, covered s] for mid-link and stop-line loops
    mid: dict[int, list[float]] = {}
    stop: dict[int, list[float]] = {}
    mid_n = 0.0  # vehicles with a spot speed
    mid_inv = 0.0  # Σ count / speed, h/km·veh
    cam_occ_s = cam_cov_s = cam_cnt = 0.0
    cam_vt = cam_t = 0.0  # Σ speed · occupied s, Σ occupied s (vehicle-time weights)
    cam_speed_any: float | None = None
    len_sum = len_n = 0.0
    n_readings = 0
    devices: set[str] = set()
    detectors = model.detectors
    for r in readings:
        get = r.get
        # device id, role and lane index: from the model, or for unknown devices from the reading
        if get("type") == "camera":
            did, role, lane = str(get("camera_id")), CAMERA, -1
        else:
            did = str(get("detector_id"))
            meta = detectors.get(did)
            if meta is not None:
                role, lane = meta.role, meta.lane
            else:
                role, lane = STOP if get("role") == "stop_line" else MID, int(get("lane_index") or 0)
        if did in excluded:
            continue
        n_readings += 1
        devices.add(did)
        interval = float(get("interval_s") or 0.0)
        occ = float(get("occupancy") or 0.0)
        speed = get("speed_kmh")
        if role == CAMERA:
            cam_cov_s += interval
            cam_occ_s += occ * interval
            cam_cnt += float(r.get("count_total") or 0)
            if speed is not None:
                cam_speed_any = float(speed)
                w = occ * interval
                cam_vt += float(speed) * w
                cam_t += w
            counts = r.get("counts")
            if isinstance(counts, Mapping):
                for cls, n in counts.items():
                    if n:
                        len_sum += CLASS_LENGTH_M.get(cls, DEFAULT_VEHICLE_LENGTH_M) * n
                        len_n += n
            continue
        count = float(get("count") or 0)
        per_lane = mid if role == MID else stop
        acc = per_lane.get(lane)
        if acc is None:  # (not ``setdefault(lane, [...])``: no throw-away list per reading)
            acc = per_lane[lane] = [0.0, 0.0, 0.0]
        acc[0] += count
        acc[1] += occ * interval
        acc[2] += interval
        if role == MID and count > 0 and speed:
            mid_n += count
            mid_inv += count / float(speed)

    lv = (len_sum + VEHICLE_LENGTH_PRIOR_VEH * lv_prior) / (len_n + VEHICLE_LENGTH_PRIOR_VEH)
    lv_loop = lv + model.loop_length_m

    has_cam = cam_cov_s > 0 and model.zone_length_m is not None
    cam_rate = cam_cnt / cam_cov_s if cam_cov_s > 0 else None  # veh/s entering the zone, all lanes

    # flow (veh/h, all lanes) and occupancy at the point loops. Lanes without a working loop get the vehicles
    # the camera saw and the observed lanes did not (lanes carry very different shares), else the observed
    # lanes' mean.
    flow_veh_h = 0.0
    occupancy: float | None = None
    loops = mid or stop
    covered = [a for a in loops.values() if a[2] > 0]
    if covered:
        q_obs = sum([a[0] / a[2] for a in covered])
        occupancy = sum([a[1] / a[2] for a in covered]) / len(covered)
        missing = max(0, lanes - len(covered))
        q_fill = 0.0
        if missing:
            q_fill = max(0.0, cam_rate - q_obs) if cam_rate is not None else q_obs / len(covered) * missing
        flow_veh_h = (q_obs + q_fill) * 3600.0
    elif cam_rate is not None:
        flow_veh_h = cam_rate * 3600.0

    # upstream part: up to the camera zone when the camera reported, else the whole segment
    l_a = model.upstream_length_m if has_cam else model.length_m
    v_a: float | None = mid_n / mid_inv if mid_n > 0 and mid_inv > 0 else None
    n_a = 0.0
    mid_cov = [a for a in mid.values() if a[2] > 0]
    occ_a: float | None = None
    if mid_cov:
        occ_sum = sum([a[1] / a[2] for a in mid_cov])
        occ_a = occ_sum / len(mid_cov)
        n_a = occ_sum * l_a / lv_loop
        missing = max(0, lanes - len(mid_cov))
        if missing:
            # Little's law for the vehicles the observed lanes do not explain: the camera's surplus, else the
            # missing lanes' own stop-line loops, else the observed lanes' mean
            pace = l_a / ((v_a or vf_prior) / 3.6)  # s to cross the upstream part
            if cam_rate is not None:
                n_a += max(0.0, cam_rate - sum(a[0] / a[2] for a in mid_cov)) * pace
            else:
                for lane, a in stop.items():
                    m = mid.get(lane)
                    if a[2] > 0 and (m is None or m[2] <= 0):
                        n_a += a[0] / a[2] * pace
                        missing -= 1
                n_a += occ_a * max(0, missing) * l_a / lv_loop
    elif flow_veh_h > 0:  # no mid-link loop: Little's law with the carried free speed
        n_a = flow_veh_h / 3600.0 * l_a / (vf_prior / 3.6)
        v_a = vf_prior

    # stop-line zone
    n_b = 0.0
    v_b: float | None = None
    if has_cam and model.zone_length_m is not None:
        n_b = cam_occ_s / cam_cov_s * model.zone_length_m * model.camera_lanes / lv
        v_b = cam_vt / cam_t if cam_t > 0 else cam_speed_any
    if v_a is None and n_a > 0:
        jammed = occ_a is not None and occ_a >= JAMMED_OCCUPANCY
        v_a = (v_b if v_b is not None else 0.0) if jammed else vf_prior
    if v_b is None and n_b > 0:
        v_b = v_a if v_a is not None else vf_prior

    parts_n = n_a + n_b
    parts_nv = n_a * (v_a or 0.0) + n_b * (v_b or 0.0)
    sources = []
    if mid:
        sources.append("mid_link")
    if stop:
        sources.append("stop_line")
    if has_cam:
        sources.append("camera")
    elif model.signalised_end:
        stop_cov = [a for a in stop.values() if a[2] > 0]
        if stop_cov:
            # no camera: the queue seen by the stop-line loops. A loop occupied o·T s has a queue head
            # standing on it; behind it the queue grows at the arrival rate q_a and, once the head moves,
            # drains at s - q_a (D/D/1): q_a (o·T)^2 / 2 · s / (s - q_a) vehicle-seconds, plus the head.
            o_s = sum(a[1] / a[2] for a in stop_cov) / len(stop_cov)
            span = sum(a[2] for a in stop_cov) / len(stop_cov)
            q_a = flow_veh_h / lanes / 3600.0
            drain = 1.0 / (1.0 - min(q_a / (SATURATION_FLOW_VEH_H_LANE / 3600.0), 0.9))
            parts_n += lanes * o_s * (1.0 + q_a * o_s * span / 2.0 * drain)
            sources.append("stop_queue")
        elif flow_veh_h > 0:
            # neither: the signal's mean uniform delay as standing vehicles (Little's law)
            d = uniform_signal_delay_s(
                flow_veh_h / lanes, model.green_ratio or DEFAULT_GREEN_RATIO, model.cycle_s or DEFAULT_CYCLE_S
            )
            parts_n += flow_veh_h / 3600.0 * d
            sources.append("signal_delay")
    v_meas: float | None = parts_nv / parts_n if parts_n > 0 else None
    n_obs = mid_n + n_b  # vehicles (mid-link) + vehicle-windows in the zone

    # filter: random walk on the speed, one step per window
    v_prev = prior.get("v")
    p_prev = float(prior.get("p") or 0.0)
    steps = 1.0
    t_prev = prior.get("t")
    if end_s is not None and t_prev is not None:
        steps = max(1.0, (end_s - float(t_prev)) / window_s)
    q_var = PROCESS_VAR_KMH2 * steps
    if v_meas is not None:
        r_var = MEASUREMENT_VAR_1VEH_KMH2 / max(n_obs, 1.0)
        if v_prev is None:
            v_est, p_est = v_meas, r_var
        else:
            p_pred = p_prev + q_var
            gain = p_pred / (p_pred + r_var)
            v_est = float(v_prev) + gain * (v_meas - float(v_prev))
            p_est = (1.0 - gain) * p_pred
        speed_kmh: float | None = v_est
        density: float | None = parts_n / model.length_m * 1000.0
    else:
        # nobody seen: any vehicle present is free-flowing in the unobserved part
        v_est = vf_prior
        p_est = p_prev + q_var
        speed_kmh = vf_prior
        density = 0.0
        sources.append("prior")
    if v_a is not None and mid_n > 0 and (occ_a or 0.0) < JAMMED_OCCUPANCY:
        gain_f = FREE_SPEED_GAIN * min(1.0, mid_n / 5.0)
        vf = vf_prior + gain_f * (v_a - vf_prior)
    else:
        vf = vf_prior

    ratio = speed_kmh / model.speed_limit_kmh if speed_kmh is not None else None
    travel_time_s = model.length_m / (speed_kmh / 3.6) if speed_kmh else None
    # confidence: how many vehicles were seen, times the share of the segment's detectors that contributed
    known = len(model.detectors)
    coverage = min(1.0, len(devices) / known) if known else 1.0
    confidence = (1.0 - math.exp(-n_obs / 3.0)) * coverage if v_meas is not None else 0.1 * coverage
    state = SegmentWindowState(
        flow_veh_h=round(flow_veh_h, 3),
        occupancy=None if occupancy is None else round(occupancy, 5),
        speed_kmh=None if speed_kmh is None else round(speed_kmh, 3),
        density_veh_km=None if density is None else round(density, 3),
        travel_time_s=None if travel_time_s is None else round(travel_time_s, 2),
        speed_ratio=None if ratio is None else round(ratio, 4),
        los=None if ratio is None else level_of_service(ratio),
        congested=is_congested(ratio, density, lanes),
        confidence=round(confidence, 3),
        n_readings=n_readings,
        n_detectors=len(devices),
        sources=tuple(sources),
    )
    new_prior: dict[str, Any] = {
        "v": round(v_est, 3),
        "p": round(min(p_est, 1e4), 3),
        "vf": round(vf, 3),
        "lv": round(lv, 3),
    }
    if end_s is not None:
        new_prior["t"] = end_s
    return state, new_prior
