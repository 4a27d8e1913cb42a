"""Scenario files: demand, incidents, device faults, signal-plan overrides and the seed of a simulation run.

A scenario is one JSON object; every key is optional (``docs/simulator.md`` has the full reference)::

    {
      "seed": 7,
      "demand": {"scale": 1.2, "profile": [[6, 0.3], [8, 1.0], [10, 0.4]],
                 "entry_veh_h_per_lane": 300, "interior_veh_h_per_lane_km": 60, "exit_share": 0.1,
                 "segment_veh_h": {"left2A2": 900}, "noise_sigma": 0.1, "noise_tau_s": 600},
      "incidents": [{"incident_id": "INC1", "segment_id": "B2C2", "lane_index": 1, "start_s": 600,
                     "duration_s": 600, "kind": "blocked_lane", "pos_m": 200}],
      "faults": [{"device_id": "loop_mid_B2C2_0", "kind": "stuck"},
                 {"fraction": 0.05, "kinds": ["silent", "late"], "seed": 3}],
      "signals": {"B2": {"green_s": [50, 34]}, "C2": {"cycle_s": 60, "splits": [0.6, 0.4], "at_s": 900}},
      "turning_ratios": {"A2B2": {"B2C2": 0.8, "B2B1": 0.1, "B2B3": 0.1}}
    }

Times (``start_s``, ``at_s``, fault ``from_s``/``to_s``) are seconds after the simulation start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sensors_sim.faults import FaultRule, parse_fault_rules

PEAK_HOUR = 8.0
"""Centre of the default morning peak, hours UTC."""
PEAK_WIDTH_H = 1.25
"""Standard deviation of the default Gaussian morning peak, hours."""
BASE_DEMAND = 0.30
"""Default demand factor away from the peak (the peak itself is 1.0)."""
INCIDENT_KINDS = ("blocked_lane", "slowdown")
MAX_ENTRY_X = 0.9
"""Peak rates drawn for a segment are capped at this share of its capacity."""


def morning_peak(t_s: float) -> float:
    """The default time-of-day demand factor: a smooth morning peak.

    ``BASE_DEMAND + (1 - BASE_DEMAND) * exp(-0.5 * ((h - PEAK_HOUR) / PEAK_WIDTH_H) ** 2)`` with ``h`` the UTC
    hour of day: 1.0 at 08:00, 0.74 at 07:00 and 09:00, 0.30 at night.

    Parameters
    ----------
    t_s : float
        POSIX time, seconds.

    Returns
    -------
    float
        The factor, dimensionless, in ``[BASE_DEMAND, 1]``.
    """
    h = (t_s % 86400.0) / 3600.0
    return BASE_DEMAND + (1.0 - BASE_DEMAND) * math.exp(-0.5 * ((h - PEAK_HOUR) / PEAK_WIDTH_H) ** 2)


@dataclass(frozen=True)
class DemandSpec:
    """Where and how much traffic enters the network.

    Attributes
    ----------
    scale : float
        Multiplies every rate, dimensionless.
    profile : tuple of (float, float), optional
        Time-of-day factor as ``(hour UTC, factor)`` points, interpolated linearly and periodic over 24 h;
        ``None`` = :func:`morning_peak`.
    entry_veh_h_per_lane : float
        Peak rate entering each segment that leaves a fringe node, vehicles per hour per lane.
    interior_veh_h_per_lane_km : float
        Peak rate generated at the upstream end of every other segment (local traffic: parking, side
        streets), vehicles per hour per lane-km of the segment.
    exit_share : float
        Share of vehicles leaving the network at each interior node, dimensionless in ``[0, 1)``.
    segment_veh_h : dict of str to float
        Peak rates of given segments (whole segment, all lanes), vehicles per hour; override the above.
        Other rates are capped at ``MAX_ENTRY_X`` × the segment's ``capacity_veh_h``.
    noise_sigma : float
        Stationary standard deviation of the log-rate noise (an Ornstein–Uhlenbeck process per segment).
    noise_tau_s : float
        Correlation time of that noise, seconds.
    spread : float
        Standard deviation of a per-segment log-normal multiplier (mean 1, drawn once from the seed) of the
        peak rates, so that some streets are busier than others; dimensionless, 0 = uniform.
    """

    scale: float = 1.0
    profile: tuple[tuple[float, float], ...] | None = None
    entry_veh_h_per_lane: float = 300.0
    interior_veh_h_per_lane_km: float = 60.0
    exit_share: float = 0.1
    segment_veh_h: Mapping[str, float] = field(default_factory=dict)
    noise_sigma: float = 0.10
    noise_tau_s: float = 600.0
    spread: float = 0.4

    def factor(self, t_s: float) -> float:
        """Time-of-day factor times ``scale``.

        Parameters
        ----------
        t_s : float
            POSIX time, seconds (the hour of day is taken in UTC).

        Returns
        -------
        float
            The factor, dimensionless.
        """
        if self.profile is None:
            base = morning_peak(t_s)
        else:
            h = (t_s % 86400.0) / 3600.0
            hs = [p[0] for p in self.profile]
            fs = [p[1] for p in self.profile]
            base = float(_interp_periodic(h, hs, fs))
        return self.scale * base


def _interp_periodic(h: float, hs: Sequence[float], fs: Sequence[float]) -> float:
    xs = [hs[-1] - 24.0, *hs, hs[0] + 24.0]
    ys = [fs[-1], *fs, fs[0]]
    for k in range(len(xs) - 1):
        if xs[k] <= h <= xs[k + 1]:
            span = xs[k + 1] - xs[k]
            return ys[k] if span <= 0 else ys[k] + (ys[k + 1] - ys[k]) * (h - xs[k]) / span
    return ys[-1]


@dataclass(frozen=True)
class IncidentSpec:
    """One scripted incident.

    Attributes
    ----------
    incident_id : str
        Id (``INC<n>`` by default).
    segment_id : str
        Where.
    lane_index : int or None
        Which lane (0 = rightmost); ``None`` = every lane.
    start_s, duration_s : float
        Start after the simulation start, and duration, seconds.
    kind : str
        ``blocked_lane`` (stalled vehicle: capacity drop at ``pos_m``) or ``slowdown`` (speed limit lowered
        to ``speed_kmh`` over the whole segment).
    speed_kmh : float or None
        Speed of a slowdown, km/h.
    pos_m : float or None
        Position of a blocked lane, metres from the segment start; default 70 % of the length.
    """

    incident_id: str
    segment_id: str
    lane_index: int | None
    start_s: float
    duration_s: float
    kind: str
    speed_kmh: float | None = None
    pos_m: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Everything a run can be told besides the network (see the module docstring).

    Attributes
    ----------
    seed : int or None
        Random seed (used when the caller gives none).
    demand : DemandSpec
        Demand.
    incidents : tuple of IncidentSpec
        Scripted incidents.
    faults : tuple of FaultRule
        Device faults.
    signals : dict of str to dict
        Plan per traffic light (``green_s`` or ``cycle_s`` + ``splits``, optional ``at_s``: seconds after
        the start; without it the plan runs from the start).
    turning_ratios : dict of str to dict
        ``{approach segment: {target segment or "exit": share}}``, replacing the derived ratios.
    """

    seed: int | None = None
    demand: DemandSpec = field(default_factory=DemandSpec)
    incidents: tuple[IncidentSpec, ...] = ()
    faults: tuple[FaultRule, ...] = ()
    signals: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    turning_ratios: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Scenario:
        """Build a scenario from its JSON object.

        Parameters
        ----------
        doc : mapping
            The decoded scenario file.

        Returns
        -------
        Scenario
            The scenario.

        Raises
        ------
        ValueError
            On unknown keys or ill-typed / out-of-range values.
        """
        if not isinstance(doc, Mapping):
            raise ValueError("a scenario must be a JSON object")
        known = {"seed", "demand", "incidents", "faults", "signals", "turning_ratios", "description", "name"}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown scenario keys: {sorted(unknown)}")
        seed = doc.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        signals = doc.get("signals") or {}
        if not isinstance(signals, Mapping) or not all(isinstance(v, Mapping) for v in signals.values()):
            raise ValueError("signals must map traffic-light ids to plan objects")
        return cls(
            seed=seed,
            demand=_demand(doc.get("demand") or {}),
            incidents=tuple(_incident(k, rec) for k, rec in enumerate(doc.get("incidents") or [])),
            faults=tuple(parse_fault_rules(doc.get("faults") or [])),
            signals={str(k): dict(v) for k, v in signals.items()},
            turning_ratios=_turning_ratios(doc.get("turning_ratios") or {}),
        )


def _turning_ratios(doc: Any) -> dict[str, dict[str, float]]:
    if not isinstance(doc, Mapping) or not all(isinstance(v, Mapping) for v in doc.values()):
        raise ValueError("turning_ratios must map approach segments to {target: share} objects")
    out: dict[str, dict[str, float]] = {}
    for sid, shares in doc.items():
        out[str(sid)] = {str(t): float(_num(shares, t, None, 0.0) or 0.0) for t in shares}
    return out


def _num(rec: Mapping[str, Any], key: str, default: float | None, lo: float = -math.inf) -> float | None:
    v = rec.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
        raise ValueError(f"{key} must be a number >= {lo:g}, got {v!r}")
    return float(v)


def _demand(rec: Mapping[str, Any]) -> DemandSpec:
    known = {f for f in DemandSpec.__dataclass_fields__}
    unknown = set(rec) - known
    if unknown:
        raise ValueError(f"unknown demand keys: {sorted(unknown)}")
    profile = rec.get("profile")
    prof: tuple[tuple[float, float], ...] | None = None
    if profile is not None and profile != "morning_peak":
        pts = sorted((float(h), float(f)) for h, f in profile)
        if not pts or any(not 0 <= h < 24 or f < 0 for h, f in pts):
            raise ValueError("demand.profile must be [[hour 0-24, factor >= 0], ...] or 'morning_peak'")
        prof = tuple(pts)
    exit_share = _num(rec, "exit_share", 0.1, 0.0)
    assert exit_share is not None
    if exit_share >= 1.0:
        raise ValueError(f"exit_share must be < 1, got {exit_share}")
    seg = rec.get("segment_veh_h") or {}
    return DemandSpec(
        scale=_num(rec, "scale", 1.0, 0.0) or 0.0,
        profile=prof,
        entry_veh_h_per_lane=_num(rec, "entry_veh_h_per_lane", 300.0, 0.0) or 0.0,
        interior_veh_h_per_lane_km=_num(rec, "interior_veh_h_per_lane_km", 60.0, 0.0) or 0.0,
        exit_share=exit_share,
        segment_veh_h={str(k): float(_num(seg, k, None, 0.0) or 0.0) for k in seg},
        noise_sigma=_num(rec, "noise_sigma", 0.10, 0.0) or 0.0,
        noise_tau_s=_num(rec, "noise_tau_s", 600.0, 1e-3) or 600.0,
        spread=_num(rec, "spread", 0.4, 0.0) or 0.0,
    )


def _incident(k: int, rec: Mapping[str, Any]) -> IncidentSpec:
    if not isinstance(rec, Mapping):
        raise ValueError(f"incident {k}: must be an object")
    seg = rec.get("segment_id", rec.get("edge"))
    if not isinstance(seg, str):
        raise ValueError(f"incident {k}: segment_id must be a string")
    kind = rec.get("kind")
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"incident {k}: kind must be one of {INCIDENT_KINDS}, got {kind!r}")
    lane = rec.get("lane_index")
    if lane is not None and (not isinstance(lane, int) or isinstance(lane, bool) or lane < 0):
        raise ValueError(f"incident {k}: lane_index must be an integer >= 0 or null, got {lane!r}")
    speed = _num(rec, "speed_kmh", None, 0.0)
    if speed is None and rec.get("speed_ms") is not None:
        speed = (_num(rec, "speed_ms", None, 0.0) or 0.0) * 3.6
    if kind == "slowdown" and (speed is None or speed <= 0):
        raise ValueError(f"incident {k}: a slowdown needs speed_kmh > 0")
    start = _num(rec, "start_s", None, 0.0)
    dur = _num(rec, "duration_s", None, 0.0)
    if start is None or dur is None:
        raise ValueError(f"incident {k}: start_s and duration_s are required")
    return IncidentSpec(
        incident_id=str(rec.get("incident_id", rec.get("id", f"INC{k + 1}"))),
        segment_id=seg,
        lane_index=lane,
        start_s=start,
        duration_s=dur,
        kind=str(kind),
        speed_kmh=speed,
        pos_m=_num(rec, "pos_m", None, 0.0),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file.

    Parameters
    ----------
    path : str or pathlib.Path
        JSON file.

    Returns
    -------
    Scenario
        The scenario.

    Raises
    ------
    ValueError
        If the file is not valid JSON or not a valid scenario.
    """
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    return Scenario.from_dict(doc)
