"""A small macroscopic traffic state over the road graph, vectorised with numpy.

The model, per directed segment (all arrays are indexed like :attr:`TrafficState.segment_ids`):

1. **Demand.** The degree of saturation ``x = flow / capacity`` is
   ``base_load * demand_factor(time of day) * exp(noise)``, clipped to ``[0, X_MAX]``.
   ``base_load`` is drawn once per segment: quiet segments ``U(0.30, 0.65)``, a few "hot" ones
   ``U(0.88, 0.96)``, i.e. near capacity at the peak. ``noise`` is an Ornstein–Uhlenbeck process
   (log-normal, slowly varying), one per segment.
2. **Density and speed.** Moving vehicles are on the free-flow branch of a triangular fundamental diagram
   (free speed = speed limit, ``k = q / v_f``); demand is kept below capacity, so the congested branch is
   never reached. On signalised approaches the Webster uniform delay
   ``d = 0.5 C (1 - g/C)^2 / (1 - min(x, 0.95) g/C)`` is added to the free-flow travel time, so the mean
   (space-mean) speed is ``L / (L / v_f + d)`` and the density, by Little's law, ``k = q / v``.
3. **Queues.** Each lane runs a deterministic fluid D/D/1 queue at its stop line: arrivals at the lane's
   flow, departures at the saturation flow ``s = capacity / (lanes * g/C)`` while green. Unsignalised lanes
   are always green and never queue. The cycle average of this queue is exactly the Webster uniform delay
   above; the queue itself is what stop-line loops and cameras see within a cycle. The jam density
   (150 veh/km/lane) sets the spacing of queued vehicles and how many fit on a lane.

The time of day is taken in UTC (the demo city lives on UTC). Not modelled: spill-back between segments,
flow conservation at junctions, route choice, oversaturation, incidents, vehicle classes.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

K_JAM_VEH_KM_LANE = 150.0
"""Jam density, vehicles per km per lane (6.7 m per queued vehicle)."""
X_MAX = 0.98
"""Highest degree of saturation (flow / capacity) the demand may reach."""
X_DELAY_CAP = 0.95
"""``x`` is capped at this value inside the uniform-delay formula."""
QUIET_LOAD = (0.30, 0.65)
"""Range of the peak-hour degree of saturation of ordinary segments."""
HOT_LOAD = (0.88, 0.96)
"""Range of the peak-hour degree of saturation of hot segments."""
HOT_FRACTION = 0.08
"""Share of segments made hot when they are chosen at random."""
NOISE_SIGMA = 0.10
"""Stationary standard deviation of the log-demand noise (dimensionless)."""
NOISE_TAU_S = 600.0
"""Correlation time of the demand noise, seconds."""
PEAK_HOUR = 8.0
"""Centre of the morning peak, hours UTC."""
PEAK_WIDTH_H = 1.25
"""Standard deviation of the Gaussian morning peak, hours."""
BASE_DEMAND = 0.30
"""Demand factor away from the peak (the peak itself is 1.0)."""


def demand_factor(t_s: float) -> float:
    """Time-of-day demand factor: a smooth morning peak.

    ``BASE_DEMAND + (1 - BASE_DEMAND) * exp(-0.5 * ((h - PEAK_HOUR) / PEAK_WIDTH_H) ** 2)`` with ``h`` the
    UTC hour of day; 1.0 at 08:00, about 0.95 at 07:30 and 0.30 at night.

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


def uniform_delay_s(cycle_s: FloatArray, green_ratio: FloatArray, x: FloatArray) -> FloatArray:
    """Webster's uniform delay at a fixed-time signal, per vehicle.

    ``d = 0.5 C (1 - g/C)^2 / (1 - min(x, X_DELAY_CAP) g/C)``; zero where ``g/C = 1`` (no signal).

    Parameters
    ----------
    cycle_s : numpy.ndarray
        Cycle length ``C``, seconds.
    green_ratio : numpy.ndarray
        Effective green ratio ``g/C``, dimensionless in ``(0, 1]``.
    x : numpy.ndarray
        Degree of saturation ``flow / capacity``, dimensionless.

    Returns
    -------
    numpy.ndarray
        Mean delay, seconds per vehicle.
    """
    xc = np.minimum(x, X_DELAY_CAP)
    d: FloatArray = 0.5 * cycle_s * (1.0 - green_ratio) ** 2 / (1.0 - xc * green_ratio)
    return d


def _green_mask(tls: dict[str, Any], segment_id: str, green_phases: Collection[int]) -> tuple[BoolArray, float, float]:
    """Green (True) for each whole second of the cycle, the cycle length and the offset, seconds."""
    phases = sorted(tls["phases"], key=lambda p: p["index"])
    ends = np.cumsum([float(p["duration_s"]) for p in phases])
    cycle = float(tls["cycle_s"])
    mid = np.arange(math.ceil(cycle)) + 0.5
    which = np.minimum(np.searchsorted(ends, mid, side="right"), len(phases) - 1)
    green = np.array(
        [
            p["kind"] == "green" and (p["index"] in green_phases or segment_id in p.get("green_approaches", []))
            for p in phases
        ]
    )
    return green[which], cycle, float(tls.get("offset_s", 0.0))


class TrafficState:
    """Macroscopic traffic state of every segment and lane, advanced by :meth:`step`.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph following ``docs/roadnet-contract.md``.
    t_s : float
        POSIX time of the initial state, seconds.
    seed : int
        Seed of the state's random generator (base loads, hot segments, noise).
    hot_segments : collection of str, optional
        Segments to make hot. By default ``HOT_FRACTION`` of the signalised segments (of all segments if
        none is signalised), at least one, chosen at random.

    Attributes
    ----------
    t_s : float
        POSIX time of the state, seconds.
    segment_ids : list of str
        Segment order of the per-segment arrays; ``index`` maps a segment id to its position.
    lane_ids : list of str
        Lane order of the per-lane arrays; ``lane_index`` maps a lane id to its position.
    lane_segment : numpy.ndarray of int
        Segment position of each lane.
    hot : numpy.ndarray of bool
        Hot segments.
    base_load : numpy.ndarray
        Peak-hour degree of saturation per segment, dimensionless.
    x : numpy.ndarray
        Current degree of saturation, dimensionless.
    flow_veh_h : numpy.ndarray
        Segment flow, vehicles per hour (all lanes).
    delay_s : numpy.ndarray
        Mean signal delay, seconds per vehicle.
    speed_kmh : numpy.ndarray
        Space-mean speed including signal delay, km/h.
    density_veh_km : numpy.ndarray
        Mean density, vehicles per km (all lanes).
    lane_queue_veh : numpy.ndarray
        Queued vehicles per lane at :attr:`t_s`.
    lane_green : numpy.ndarray of bool
        Whether each lane had green during the last step (always True without a signal).
    lane_arrivals_veh, lane_departures_veh, lane_queued_departures_veh : numpy.ndarray
        Vehicles arriving at the queue, leaving over the stop line, and leaving after having queued, per
        lane, during the last step.
    """

    def __init__(
        self,
        G: nx.MultiDiGraph,
        t_s: float,
        *,
        seed: int = 0,
        hot_segments: Collection[str] | None = None,
    ) -> None:
        self.rng = np.random.default_rng((seed, 1))
        edges = [d for _, _, d in G.edges(data=True)]
        self.segment_ids: list[str] = [str(d["segment_id"]) for d in edges]
        self.index = {sid: i for i, sid in enumerate(self.segment_ids)}
        n = len(edges)
        self.length_m = np.array([float(d["length_m"]) for d in edges])
        self.lanes = np.array([int(d["lanes"]) for d in edges], dtype=np.int64)
        self.free_speed_kmh = np.array([float(d["speed_limit_kmh"]) for d in edges])
        self.capacity_veh_h = np.array([float(d["capacity_veh_h"]) for d in edges])

        # Signal plans: a green mask per whole second of the cycle for each signalised segment.
        masks: dict[int, tuple[BoolArray, float, float]] = {}
        for tls in G.graph.get("traffic_lights", {}).values():
            for app in tls["approaches"]:
                i = self.index.get(app["segment_id"])
                if i is not None:
                    masks[i] = _green_mask(tls, app["segment_id"], app.get("green_phases", []))
        self.signalised = np.zeros(n, dtype=bool)
        self.cycle_s = np.ones(n)
        self.offset_s = np.zeros(n)
        self.green_ratio = np.ones(n)
        width = max((len(m) for m, _, _ in masks.values()), default=1)
        self._masks = np.ones((n, width), dtype=bool)
        for i, (m, cycle, off) in masks.items():
            self.signalised[i] = True
            self.cycle_s[i] = cycle
            self.offset_s[i] = off
            self.green_ratio[i] = max(float(m.mean()), 1e-3)
            self._masks[i, : len(m)] = m

        # Lanes.
        self.lane_ids: list[str] = []
        lane_seg: list[int] = []
        for i, d in enumerate(edges):
            detail = sorted(d.get("lane_detail") or [], key=lambda ln: ln["index"])
            ids = [str(ln["lane_id"]) for ln in detail] or [f"{self.segment_ids[i]}_{k}" for k in range(self.lanes[i])]
            self.lane_ids.extend(ids)
            lane_seg.extend([i] * len(ids))
        self.lane_segment: IntArray = np.array(lane_seg, dtype=np.int64)
        self.lane_index = {lid: k for k, lid in enumerate(self.lane_ids)}
        seg_lanes = np.bincount(self.lane_segment, minlength=n).astype(np.float64)
        self._lanes_of_lane = seg_lanes[self.lane_segment]
        # Saturation flow per lane, veh/h: the lane's capacity share divided by its green ratio.
        self.lane_sat_flow_veh_h = (
            self.capacity_veh_h[self.lane_segment] / self._lanes_of_lane / self.green_ratio[self.lane_segment]
        )
        self.lane_storage_veh = self.length_m[self.lane_segment] * K_JAM_VEH_KM_LANE / 1000.0

        # Demand: base loads with a few hot segments.
        self.hot = np.zeros(n, dtype=bool)
        if hot_segments is not None:
            unknown = set(hot_segments) - set(self.index)
            if unknown:
                raise ValueError(f"unknown hot segments: {sorted(unknown)}")
            self.hot[[self.index[s] for s in hot_segments]] = True
        elif n:
            pool = np.flatnonzero(self.signalised) if self.signalised.any() else np.arange(n)
            k = max(1, round(HOT_FRACTION * len(pool)))
            self.hot[self.rng.choice(pool, size=k, replace=False)] = True
        self.base_load = np.where(self.hot, self.rng.uniform(*HOT_LOAD, size=n), self.rng.uniform(*QUIET_LOAD, size=n))
        self.noise = self.rng.normal(0.0, NOISE_SIGMA, size=n)

        self.t_s = float(t_s)
        n_lanes = len(self.lane_ids)
        self.lane_queue_veh = np.zeros(n_lanes)
        self.lane_green = np.ones(n_lanes, dtype=bool)
        self.lane_arrivals_veh = np.zeros(n_lanes)
        self.lane_departures_veh = np.zeros(n_lanes)
        self.lane_queued_departures_veh = np.zeros(n_lanes)
        self._update_macro()

    def _update_macro(self) -> None:
        """Recompute flow, delay, speed and density from the base load, time of day and noise."""
        self.x = np.clip(self.base_load * demand_factor(self.t_s) * np.exp(self.noise), 0.0, X_MAX)
        self.flow_veh_h = self.x * self.capacity_veh_h
        self.delay_s = np.where(self.signalised, uniform_delay_s(self.cycle_s, self.green_ratio, self.x), 0.0)
        free_time_s = self.length_m / (self.free_speed_kmh / 3.6)
        self.speed_kmh = self.length_m / (free_time_s + self.delay_s) * 3.6
        self.density_veh_km = self.flow_veh_h / self.speed_kmh
        self.lane_flow_veh_h = self.flow_veh_h[self.lane_segment] / self._lanes_of_lane

    def green_at(self, t_s: float) -> BoolArray:
        """Whether each lane has green at time ``t_s`` (always True without a signal).

        Parameters
        ----------
        t_s : float
            POSIX time, seconds; signal plans are aligned so that the cycle starts when
            ``(t_s - offset_s) % cycle_s == 0``.

        Returns
        -------
        numpy.ndarray of bool
            One value per lane.
        """
        pos = np.floor(np.mod(t_s - self.offset_s, self.cycle_s)).astype(np.int64)
        seg_green = self._masks[np.arange(len(pos)), pos]
        green: BoolArray = seg_green[self.lane_segment]
        return green

    def step(self, t_s: float) -> None:
        """Advance the state to time ``t_s``.

        The noise is advanced exactly over ``dt = t_s - self.t_s``; the queues are advanced in one fluid step
        using the signal state at the start of the step, so call this at least once a second.

        Parameters
        ----------
        t_s : float
            New POSIX time, seconds; not earlier than :attr:`t_s`.

        Raises
        ------
        ValueError
            If ``t_s`` is earlier than the current time.
        """
        dt = t_s - self.t_s
        if dt < 0:
            raise ValueError(f"step: time went backwards ({t_s} < {self.t_s})")
        a = math.exp(-dt / NOISE_TAU_S)
        self.noise = self.noise * a + NOISE_SIGMA * math.sqrt(1.0 - a * a) * self.rng.standard_normal(len(self.noise))
        self.lane_green = self.green_at(self.t_s)
        arrivals = self.lane_flow_veh_h / 3600.0 * dt
        service = np.where(self.lane_green, self.lane_sat_flow_veh_h / 3600.0 * dt, 0.0)
        q = self.lane_queue_veh
        departures = np.minimum(q + arrivals, service)
        self.lane_queued_departures_veh = np.minimum(q, service)
        self.lane_queue_veh = np.minimum(q + arrivals - departures, self.lane_storage_veh)
        self.lane_arrivals_veh = arrivals
        self.lane_departures_veh = departures
        self.t_s = float(t_s)
        self._update_macro()
