"""Per-segment traffic state over one time window, from the loop and camera readings inside it.

This is the backbone's deliberately simple estimator (the congestion work replaces the speed model):

- **flow** (veh/h): per lane, vehicles counted by the lane's mid-link loop divided by the time its readings
  cover; lanes summed. Without mid-link loops, stop-line loops; without loops, the camera's count.
  Lanes without a working loop are filled with the mean of the observed lanes.
- **occupancy** (0–1): time-weighted mean over the loops used for flow.
- **speed** (km/h): count-weighted harmonic mean of the loops' spot speeds (harmonic, because a space-mean
  speed is the harmonic mean of spot speeds); a camera's zone speed when no loop counted a vehicle; 0 when
  loops count nothing but stay occupied (a standing queue); unknown (None) when nothing moved or stood.
- **density** (veh/km, all lanes) = flow / speed, **travel time** (s) = length / speed.
- **level of service** on speed / speed limit (HCM-2010 urban-street bands): A > .85, B > .67, C > .50,
  D > .40, E > .30, F ≤ .30.
- **congested** = speed ratio < 0.5 and density ≥ 10 veh/km per lane (a red light alone halves the mean speed
  of a short signalised link; the density condition keeps a lone car waiting at a red from counting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

LOS_BANDS: tuple[tuple[float, str], ...] = ((0.85, "A"), (0.67, "B"), (0.50, "C"), (0.40, "D"), (0.30, "E"))
CONGESTED_SPEED_RATIO = 0.5
CONGESTED_DENSITY_PER_LANE_VEH_KM = 10.0
JAMMED_OCCUPANCY = 0.5


def level_of_service(speed_ratio: float) -> str:
    """HCM-2010 urban-street level of service (A–F) for a speed / speed-limit ratio (dimensionless)."""
    for threshold, los in LOS_BANDS:
        if speed_ratio > threshold:
            return los
    return "F"


def is_congested(speed_ratio: float | None, density_veh_km: float | None, lanes: int) -> bool:
    """Congested when speed ratio < 0.5 and density (veh/km, all lanes) ≥ 10 veh/km per lane."""
    if speed_ratio is None or density_veh_km is None:
        return False
    return speed_ratio < CONGESTED_SPEED_RATIO and density_veh_km >= CONGESTED_DENSITY_PER_LANE_VEH_KM * lanes


@dataclass(frozen=True)
class SegmentWindowState:
    """The estimate for one segment and window. Units are in the field names; ratios are 0–1."""

    flow_veh_h: float
    occupancy: float | None
    speed_kmh: float | None
    density_veh_km: float | None
    travel_time_s: float | None
    speed_ratio: float | None
    los: str | None
    congested: bool
    confidence: float
    n_readings: int
    n_detectors: int
    sources: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (all scalars but ``sources``, a new list); cheaper than ``asdict``."""
        d = {f: getattr(self, f) for f in _STATE_FIELDS}
        d["sources"] = list(self.sources)
        return d


_STATE_FIELDS = tuple(f.name for f in fields(SegmentWindowState))


def _lane_rates(readings: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """Per lane: (count, seconds covered, occupancy·seconds)."""
    out: dict[str, tuple[float, float, float]] = {}
    for r in readings:
        c, t, o = out.get(r["lane"], (0.0, 0.0, 0.0))
        out[r["lane"]] = (c + r["count"], t + r["interval_s"], o + r["occupancy"] * r["interval_s"])
    return out


def estimate_segment_state(
    readings: Iterable[Mapping[str, Any]],
    *,
    length_m: float,
    lanes: int,
    speed_limit_kmh: float,
) -> SegmentWindowState:
    """Estimate one segment's state from the device-schema-v1 readings of one window.

    Parameters
    ----------
    readings
        Loop and camera events (device schema v1 fields) whose intervals fall in the window.
    length_m
        Segment length, metres.
    lanes
        Number of lanes.
    speed_limit_kmh
        Speed limit, km/h.

    Returns
    -------
    SegmentWindowState
    """
    readings = list(readings)
    mid = [r for r in readings if r["type"] == "loop" and r["role"] == "mid_link"]
    stop = [r for r in readings if r["type"] == "loop" and r["role"] == "stop_line"]
    cams = [r for r in readings if r["type"] == "camera"]
    loops = mid or stop
    sources = tuple(name for name, rs in (("mid_link", mid), ("stop_line", stop), ("camera", cams)) if rs)
    n_detectors = len({r.get("detector_id") or r.get("camera_id") for r in readings})

    flow_veh_h = 0.0
    occupancy: float | None = None
    speed_kmh: float | None = None
    if loops:
        rates = _lane_rates(loops)
        lane_flows = [c / t * 3600.0 for c, t, _ in rates.values() if t > 0]
        lane_occ = [o / t for _, t, o in rates.values() if t > 0]
        flow_veh_h = sum(lane_flows) / len(lane_flows) * lanes if lane_flows else 0.0
        occupancy = sum(lane_occ) / len(lane_occ) if lane_occ else None
        moving = [(r["count"], r["speed_kmh"]) for r in loops if r["count"] > 0 and r["speed_kmh"]]
        n_moving = sum(c for c, _ in moving)
        if n_moving > 0:
            speed_kmh = n_moving / sum(c / v for c, v in moving)
        elif occupancy is not None and occupancy >= JAMMED_OCCUPANCY:
            speed_kmh = 0.0
    elif cams:
        covered = sum(r["interval_s"] for r in cams)
        flow_veh_h = sum(r["count_total"] for r in cams) / covered * 3600.0 if covered else 0.0
        occupancy = sum(r["occupancy"] * r["interval_s"] for r in cams) / covered if covered else None
    if speed_kmh is None:
        cam_speeds = [(r["count_total"] or 1, r["speed_kmh"]) for r in cams if r["speed_kmh"] is not None]
        if cam_speeds:
            n = sum(c for c, _ in cam_speeds)
            speed_kmh = sum(c * v for c, v in cam_speeds) / n

    density: float | None = None
    travel_time_s: float | None = None
    ratio: float | None = None
    los: str | None = None
    if speed_kmh is not None:
        ratio = speed_kmh / speed_limit_kmh
        los = level_of_service(ratio)
        if speed_kmh > 0:
            density = flow_veh_h / speed_kmh
            travel_time_s = length_m / (speed_kmh / 3.6)
        else:
            density = 1000.0 / 7.5 * lanes  # jam density: one vehicle per 7.5 m of lane
    confidence = 1.0 if mid else 0.7 if stop else 0.5 if cams else 0.0
    return SegmentWindowState(
        flow_veh_h=round(flow_veh_h, 3),
        occupancy=None if occupancy is None else round(occupancy, 5),
        speed_kmh=None if speed_kmh is None else round(speed_kmh, 3),
        density_veh_km=None if density is None else round(density, 3),
        travel_time_s=None if travel_time_s is None else round(travel_time_s, 2),
        speed_ratio=None if ratio is None else round(ratio, 4),
        los=los,
        congested=is_congested(ratio, density, lanes),
        confidence=confidence,
        n_readings=len(readings),
        n_detectors=n_detectors,
        sources=sources,
    )
