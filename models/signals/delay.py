"""Delay models: HCM control delay of one movement, and the network delay of a set of plans.

:func:`hcm_delay` and :func:`interval_delay` give the control delay of a movement under random arrivals;
:func:`evaluate_plans` gives the per-lane delay of every signal of a network (cyclic flow profiles, TRANSYT
style, when all signals share one cycle; HCM otherwise), tuned by :class:`PolicyConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.signals.network import (
    ACCEL_PENALTY_S,
    DISPERSION_ALPHA,
    DISPERSION_BETA,
    EXTENSION_S,
    HCM_I,
    HCM_K,
    HCM_T_H,
    STARTUP_LOST_S,
    STOP_PENALTY_S,
    X_UNIFORM_CAP,
    IntersectionModel,
    LaneModel,
    SegmentModel,
    SignalNetwork,
)

# ---------------------------------------------------------------------------------------------------------
# HCM delay
# ---------------------------------------------------------------------------------------------------------


def hcm_delay(
    q_veh_h: Any, s_veh_h: Any, g_eff_s: Any, cycle_s: Any, T_h: float = HCM_T_H
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HCM-2010 control delay terms for random arrivals (vectorised).

    ``X = q C / (s g)``; ``d1 = 0.5 C (1 - g/C)^2 / (1 - min(1, X) g/C)`` (uniform, s/veh);
    ``d2 = 900 T [(X - 1) + sqrt((X - 1)^2 + 8 k I X / (c T))]`` (incremental, s/veh) with ``c = s g / C``,
    ``k = 0.5`` (pretimed), ``I = 1``.

    Returns
    -------
    d1, d2, X : numpy.ndarray
    """
    q = np.asarray(q_veh_h, dtype=float)
    s = np.asarray(s_veh_h, dtype=float)
    g = np.maximum(np.asarray(g_eff_s, dtype=float), 1e-6)
    C = np.asarray(cycle_s, dtype=float)
    lam = np.minimum(g / C, 1.0)
    c = s * lam
    X = q / np.maximum(c, 1e-9)
    d1 = 0.5 * C * (1.0 - lam) ** 2 / np.maximum(1.0 - np.minimum(1.0, X) * lam, 1e-9)
    d2 = _hcm_d2(X, c, T_h)
    return d1, d2, X


def _hcm_d2(X: np.ndarray, c: np.ndarray, T_h: float, filtering: Any = HCM_I) -> np.ndarray:
    """HCM incremental delay (s/veh); ``filtering`` is HCM's upstream filtering factor ``I`` (1 isolated,
    lower downstream of a signal: ``I = 1 - 0.91 X_up^2.68``)."""
    cc = np.maximum(c, 1e-9)
    return 900.0 * T_h * ((X - 1.0) + np.sqrt((X - 1.0) ** 2 + 8.0 * HCM_K * filtering * X / (cc * T_h)))


def interval_delay(
    q_veh_h: float,
    s_veh_h: float,
    green_intervals_s: Sequence[tuple[float, float]],
    cycle_s: float,
    T_h: float = HCM_T_H,
) -> tuple[float, float]:
    """Control delay and v/c of one movement whose displayed greens are arbitrary intervals of the cycle.

    Random arrivals. Uniform delay: the deterministic queue over the cycle (exactly HCM's ``d1`` for a
    single green; also right for a movement served twice per cycle), capped at ``X = 0.95``; plus HCM's
    incremental delay on the total effective green (``G + 2 s - 2 s`` per interval).

    Parameters
    ----------
    q_veh_h, s_veh_h : float
        Demand and saturation flow, veh/h.
    green_intervals_s : Sequence[tuple[float, float]]
        ``(start, end)`` of each displayed green within ``[0, cycle_s)``, s.
    cycle_s : float
        Cycle, s.
    T_h : float
        HCM analysis period, h.

    Returns
    -------
    delay_s : float
        Control delay, s/veh (0 without demand).
    x : float
        Degree of saturation ``q / c``.
    """
    C = round(cycle_s)
    mask = np.zeros(C, dtype=bool)
    for a, b in green_intervals_s:
        start = round(a + STARTUP_LOST_S)
        length = round(b - a + EXTENSION_S - STARTUP_LOST_S)
        if length > 0:
            mask[(start + np.arange(min(length, C))) % C] = True
    g = float(mask.sum())
    c = s_veh_h * g / C
    x = q_veh_h / c if c > 0 else math.inf
    if q_veh_h <= 0:
        return 0.0, 0.0 if c > 0 else math.inf
    if g <= 0:
        return math.inf, math.inf
    scale = min(1.0, X_UNIFORM_CAP / x)
    a_row = np.full((1, C), q_veh_h * scale / 3600.0)
    cap = (s_veh_h / 3600.0 * mask)[None, :]
    on = mask
    trans = np.nonzero(on & ~np.roll(on, -1))[0]
    start_bin = np.array([(int(trans[0]) + 1) % C if len(trans) and not on.all() else 0])
    qsum, _, _ = _simulate_queues(a_row, cap, start_bin)
    d1 = float(qsum[0] / a_row.sum())
    d2 = float(_hcm_d2(np.array([x]), np.array([c]), T_h)[0])
    return d1 + d2, float(x)


# ---------------------------------------------------------------------------------------------------------
# Network delay with cyclic flow profiles
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyConfig:
    """Tuning of :func:`recommend` and :func:`evaluate_plans` (general; nothing refers to one network).

    Parameters
    ----------
    coordinate : bool
        Consider common cycles (coordination through preserved phase-0 times).
    cycle_search_max_s : float
        Largest common cycle tried, s (the hard maximum stays ``SignalConstraints.cycle_max_s``).
    dispersion_alpha, dispersion_beta : float
        Robertson platoon dispersion factors.
    accel_penalty_s : float
        Extra travel time of a platoon leaving a stop line, s.
    gate_spillback : bool
        Reduce the planning flow of lanes whose every exit is spilled back.
    analysis_period_h : float
        HCM analysis period for the incremental delay, h.
    stop_penalty_s : float
        Time lost by one stop (deceleration + acceleration) beyond the stopped delay, s; stops are counted
        from the arrival profile and the queue (a vehicle arriving on red or behind a queue stops).
    isolated_alternative : bool
        Also score the isolated plan (each signal at its own Webster cycle) against the common cycles.
        Off by default: signals a few hundred metres apart are coordinated (standard practice), and isolated
        cycles let the phase-0 times drift apart for good.
    critical_cycle_floor : bool
        No common cycle below the critical intersection's Webster cycle (classic system-cycle rule; off by
        default: Webster assumes random arrivals and overestimates the cycle a coordinated grid needs).
    system_cycle_s : float or None
        Operator-imposed common cycle (s); still clipped to what the constraints allow.
    split_blend : float
        Share of Webster's ``y``-proportional split in the effective green (the rest shared equally).
    cycle_tolerance : float
        Among common cycles from the best one to 1.25 times it, those within this share of the best network
        delay are equivalent: the running one is kept if among them, else the longest is taken.
    transition : {"fastest", "argmin"}
        While bounded change keeps the wanted cycle out of reach: move to the reachable cycle closest to it,
        or to the reachable cycle with the lowest delay.
    transition_waiver : bool
        Skip the bounded-change limit when :func:`transition_is_safe` shows that the first cycle of the new
        plan clears every queue the old plan leaves (the limit exists to prevent exactly that shock).
    keep_running_plans : bool
        Never worse than the plans being replaced: where the expected delay over the area a recommendation
        coordinates (every signal on the common cycle; one signal in isolated mode) is not lower than under
        the running plans (by ``keep_margin``), the running plans stay.
    keep_margin : float
        Share of the running plans' delay the new plans must save to replace them (0: any saving).
    throughput_vc_gain : float or None
        Oversaturation: where the area has saturated or spilled-back junctions, new plans that lower the
        highest critical v/c over those junctions by this much replace the running plans even without a
        delay saving (throughput is optimised there, not delay); None: delay only.
    saturated_vc : float
        Degree of saturation under the running plan from which a junction is ``saturated``.
    exit_blocked_occupancy : float
        Mid-link occupancy (0-1) from which an exit counts as blocked (junction regime ``spillback``).
    congested_cycle_floor : bool
        Oversaturation: while a junction is ``saturated`` or ``spillback``, no common cycle below its
        Webster cycle (cycle for throughput: lost time is a smaller share of a longer cycle).
    spilled_demand_floor : bool
        Oversaturation: the demand of an approach whose queue reaches the upstream loops is at least its
        capacity under the running plan (the loops then count the served flow, not the arrivals).
    """

    coordinate: bool = True
    cycle_search_max_s: float = 150.0
    dispersion_alpha: float = DISPERSION_ALPHA
    dispersion_beta: float = DISPERSION_BETA
    accel_penalty_s: float = ACCEL_PENALTY_S
    gate_spillback: bool = True
    analysis_period_h: float = HCM_T_H
    stop_penalty_s: float = STOP_PENALTY_S
    isolated_alternative: bool = False
    critical_cycle_floor: bool = False
    system_cycle_s: float | None = None
    split_blend: float = 1.0
    cycle_tolerance: float = 0.08
    transition: str = "fastest"
    transition_waiver: bool = True
    keep_running_plans: bool = True
    keep_margin: float = 0.0
    throughput_vc_gain: float | None = 0.02
    saturated_vc: float = 0.9
    exit_blocked_occupancy: float = 0.35
    congested_cycle_floor: bool = True
    spilled_demand_floor: bool = True


@dataclass
class PlanEvaluation:
    """Per-lane performance of a set of plans.

    Attributes
    ----------
    rows : list[tuple[str, LaneModel]]
        ``(tls_id, lane)`` in array order.
    q_veh_h, d_uniform_s, d_incr_s, x, p_green : numpy.ndarray
        Demand (veh/h), uniform delay incl. progression (s/veh), HCM incremental delay (s/veh), degree of
        saturation, share of arrivals on green.
    coordinated : bool
        Whether the profile (coordination) model was used (all plans on one cycle).
    """

    rows: list[tuple[str, LaneModel]]
    q_veh_h: np.ndarray
    d_uniform_s: np.ndarray
    d_incr_s: np.ndarray
    x: np.ndarray
    p_green: np.ndarray
    coordinated: bool

    @property
    def total_delay_veh_h_per_h(self) -> float:
        """Total control delay, veh·h per hour of demand."""
        return float(np.sum(self.q_veh_h * (self.d_uniform_s + self.d_incr_s)) / 3600.0)

    def by_approach(self, tls_id: str) -> dict[str, dict[str, float]]:
        """Per approach of one signal: flow-weighted delay (s/veh), critical v/c, demand (veh/h)."""
        out: dict[str, dict[str, float]] = {}
        acc: dict[str, list[float]] = {}
        for i, (t, ln) in enumerate(self.rows):
            if t != tls_id:
                continue
            a = acc.setdefault(ln.segment_id, [0.0, 0.0, 0.0])
            q = float(self.q_veh_h[i])
            a[0] += q * float(self.d_uniform_s[i] + self.d_incr_s[i])
            a[1] += q
            a[2] = max(a[2], float(self.x[i]))
        for seg, (dq, q, x) in acc.items():
            out[seg] = {"delay_s": round(dq / q, 1) if q > 0 else 0.0, "vc": round(x, 3), "demand_veh_h": round(q)}
        return out


def _phase_masks(ix: IntersectionModel, durations: Sequence[float], C: int) -> np.ndarray:
    """Effective-green masks (n_green, C) in the signal's own frame (bin 0 = phase-0 start)."""
    m = np.zeros((ix.n_green, C), dtype=bool)
    starts = np.concatenate([[0.0], np.cumsum(durations)])
    for k, pos in enumerate(ix.green_positions):
        a = round(starts[pos] + STARTUP_LOST_S)
        length = round(durations[pos] + EXTENSION_S - STARTUP_LOST_S)
        if length > 0:
            m[k, (a + np.arange(min(length, C))) % C] = True
    return m


def _simulate_queues(a: np.ndarray, cap: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic queues over two cycles from each row's ``start`` bin.

    Returns
    -------
    qsum : numpy.ndarray
        Queue integral over the second cycle, veh·s.
    departures : numpy.ndarray
        Departures per bin in the second cycle (row frame restored), veh.
    stopped : numpy.ndarray
        Arrivals of the second cycle that stop (red, or a queue ahead), veh.
    """
    n, C = a.shape
    idx = (start[:, None] + np.arange(C)[None, :]) % C
    rows = np.arange(n)[:, None]
    ar, cr = a[rows, idx], cap[rows, idx]
    Q = np.zeros(n)
    qsum = np.zeros(n)
    stopped = np.zeros(n)
    dep = np.zeros((n, C))
    for cyc in range(2):
        for b in range(C):
            tot = Q + ar[:, b]
            d = np.minimum(tot, cr[:, b])
            Qn = tot - d
            if cyc == 1:
                qsum += 0.5 * (Q + Qn)
                stopped += np.where((Q > 1e-6) | (cr[:, b] <= 0), ar[:, b], 0.0)
                dep[:, b] = d
            Q = Qn
    out = np.zeros((n, C))
    out[rows, idx] = dep
    return qsum, out, stopped


def _travel_time_s(seg: SegmentModel, speed_kmh: Mapping[str, float] | None) -> float:
    v = seg.speed_limit_kmh
    if speed_kmh and seg.segment_id in speed_kmh:
        v = min(max(float(speed_kmh[seg.segment_id]), 0.5 * seg.speed_limit_kmh), seg.speed_limit_kmh)
    return (seg.length_m + seg.approach_gap_m) / (v / 3.6)


def evaluate_plans(
    net: SignalNetwork,
    durations: Mapping[str, Sequence[float]],
    anchors_s: Mapping[str, float],
    lane_q: Mapping[str, float],
    speed_kmh: Mapping[str, float] | None = None,
    config: PolicyConfig | None = None,
    turns: Mapping[str, Mapping[str, float]] | None = None,
) -> PlanEvaluation:
    """Per-lane delay and v/c of a set of plans.

    With one common whole-second cycle the arrivals at each stop line are the upstream signal's departure
    profile (deterministic queue: discharge at saturation flow, then arrivals), shifted by the link travel
    time (mid-link speed, else the limit) and by the phase-0 times ``anchors_s``, dispersed (Robertson) and
    mixed with random arrivals for the share of the demand the upstream lanes do not explain. The uniform
    delay is the deterministic queue of that profile (capped at ``X = 0.95``); otherwise (different cycles)
    arrivals are random and ``d1`` is HCM's. The HCM incremental delay is added in both cases.

    Parameters
    ----------
    net : SignalNetwork
    durations : Mapping[str, Sequence[float]]
        Phase durations per signal (all phases), s.
    anchors_s : Mapping[str, float]
        A phase-0 start time per signal, s (absolute; only differences matter).
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    speed_kmh : Mapping[str, float], optional
        Measured cruise (mid-link) speed per segment, km/h.
    config : PolicyConfig, optional
    turns : Mapping[str, Mapping[str, float]], optional
        Lane -> exit -> share (:func:`turning_proportions`); default equal shares.

    Returns
    -------
    PlanEvaluation
    """
    cfg = config or PolicyConfig()
    tls_ids = [t for t in net.intersections if t in durations]
    rows = [(t, ln) for t in tls_ids for ln in net.intersections[t].lanes]
    n = len(rows)
    q = np.array([float(lane_q.get(ln.lane_id, 0.0)) for _, ln in rows])
    s = np.array([ln.sat_flow_veh_h for _, ln in rows])
    cycles = {t: float(sum(durations[t])) for t in tls_ids}
    cset = {round(c) for c in cycles.values()}
    coordinated = len(cset) == 1 and all(abs(c - round(c)) < 1e-6 for c in cycles.values()) and n > 0
    if not coordinated:
        g = np.zeros(n)
        Cv = np.zeros(n)
        for i, (t, ln) in enumerate(rows):
            ix = net.intersections[t]
            dur = durations[t]
            g[i] = sum(max(0.0, dur[ix.green_positions[k]] + EXTENSION_S - STARTUP_LOST_S) for k in ln.serving)
            Cv[i] = cycles[t]
        d1, d2, X = hcm_delay(q, s, g, Cv, cfg.analysis_period_h)
        lam_i = g / np.maximum(Cv, 1e-9)
        y_i = np.minimum(q / s, 0.95)
        stop_rate = np.minimum(1.0, (1.0 - lam_i) / np.maximum(1.0 - y_i, 0.05))
        return PlanEvaluation(rows, q, d1 + cfg.stop_penalty_s * stop_rate, d2, X, lam_i, False)

    C = int(next(iter(cset)))
    masks = {t: _phase_masks(net.intersections[t], durations[t], C) for t in tls_ids}
    M = np.zeros((n, C), dtype=bool)
    for i, (t, ln) in enumerate(rows):
        M[i] = masks[t][list(ln.serving)].any(axis=0)
    g_eff = M.sum(axis=1).astype(float)
    cap = (s / 3600.0)[:, None] * M
    lam = g_eff / C
    X = q / np.maximum(s * lam, 1e-9)
    # start each row's simulation where its effective green ends (start of red)
    ends = np.zeros(n, dtype=int)
    for i in range(n):
        on = M[i]
        if on.any() and not on.all():
            trans = np.nonzero(on & ~np.roll(on, -1))[0]
            ends[i] = (int(trans[0]) + 1) % C
    scale = np.minimum(1.0, X_UNIFORM_CAP / np.maximum(X, 1e-9))
    a1 = np.repeat((q * scale / 3600.0)[:, None], C, axis=1)
    _, dep, _ = _simulate_queues(a1, cap, ends)

    # arrival profiles per approach segment from upstream departures
    row_of_tls: dict[str, list[int]] = {}
    for i, (t, _) in enumerate(rows):
        row_of_tls.setdefault(t, []).append(i)
    seg_rows: dict[str, list[int]] = {}
    for i, (_, ln) in enumerate(rows):
        seg_rows.setdefault(ln.segment_id, []).append(i)
    a2 = a1.copy()
    filt = np.ones(n)  # HCM upstream filtering factor I per row
    for seg, idxs in seg_rows.items():
        sm = net.segments.get(seg)
        j = rows[idxs[0]][0]
        if sm is None or sm.upstream_tls is None or sm.upstream_tls not in durations:
            continue
        u = sm.upstream_tls
        prof = np.zeros(C)
        xw = xq = 0.0
        for i2 in row_of_tls.get(u, []):
            ln2 = rows[i2][1]
            if seg in ln2.to_segments:
                share = turns[ln2.lane_id].get(seg, 0.0) if turns and ln2.lane_id in turns else None
                w = share if share is not None else 1.0 / len(ln2.to_segments)
                prof += dep[i2] * w
                xw += w * q[i2] * min(float(X[i2]), 1.0)
                xq += w * q[i2]
        up_veh_h = prof.sum() * 3600.0 / C
        d_seg = float(q[idxs].sum())
        if up_veh_h <= 0 or d_seg <= 0:
            continue
        tau = _travel_time_s(sm, speed_kmh)
        F = 1.0 / (1.0 + cfg.dispersion_alpha * cfg.dispersion_beta * tau)
        shift = anchors_s[u] - anchors_s[j] + cfg.dispersion_beta * tau + cfg.accel_penalty_s
        nk = np.arange(3 * C)
        ker = np.zeros(C)
        np.add.at(ker, (round(shift) + nk) % C, F * (1.0 - F) ** nk)
        ker /= ker.sum()
        arr = np.fft.irfft(np.fft.rfft(prof) * np.fft.rfft(ker), C)
        arr = np.maximum(arr, 0.0)
        frac = min(1.0, up_veh_h / d_seg)
        shape = frac * arr / arr.sum() + (1.0 - frac) / C
        x_up = xw / xq if xq > 0 else 0.0
        for i in idxs:
            a2[i] = q[i] * scale[i] * C / 3600.0 * shape
            filt[i] = 1.0 - frac * 0.91 * x_up**2.68
    qsum, _, stopped = _simulate_queues(a2, cap, ends)
    arrivals = a2.sum(axis=1)
    d_unif = np.where(arrivals > 0, qsum / np.maximum(arrivals, 1e-12), 0.0)
    d_unif += cfg.stop_penalty_s * np.where(arrivals > 0, stopped / np.maximum(arrivals, 1e-12), 0.0)
    p_green = np.where(arrivals > 0, (a2 * M).sum(axis=1) / np.maximum(arrivals, 1e-12), lam)
    d2 = _hcm_d2(X, s * lam, cfg.analysis_period_h, filt)
    return PlanEvaluation(rows, q, d_unif, d2, X, p_green, True)
