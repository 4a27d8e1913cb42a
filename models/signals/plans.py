"""Signal plans under real-controller constraints: Webster, max-pressure, validity checks, signal clocks.

Critical flow ratios and Webster's cycle and splits projected onto the constraints (minimum and pedestrian
greens, cycle bounds, bounded change, whole seconds); :func:`check_greens` lists violations,
:func:`transition_is_safe` tells whether a plan change can strand a queue; cycle-based max-pressure splits;
:class:`SignalClock` tracks the plan each signal runs and when its phase 0 starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.signals.network import (
    EXTENSION_S,
    STARTUP_LOST_S,
    IntersectionModel,
    SignalConstraints,
)

# ---------------------------------------------------------------------------------------------------------
# Webster under constraints
# ---------------------------------------------------------------------------------------------------------

#: Above this total critical flow ratio Webster's formula is meaningless; the cycle goes to its maximum.
Y_MAX = 0.95


def critical_flow_ratios(ix: IntersectionModel, lane_q: Mapping[str, float]) -> list[float]:
    """Critical flow ratio ``y_k = max q/s`` over the lanes each green phase serves (dimensionless).

    A lane served by ``n`` green phases loads each of them with ``q / (n s)``.

    Parameters
    ----------
    ix : IntersectionModel
    lane_q : Mapping[str, float]
        Demand per lane, veh/h (missing lanes count 0).

    Returns
    -------
    list[float]
        One ratio per green phase.
    """
    y = [0.0] * ix.n_green
    for ln in ix.lanes:
        r = float(lane_q.get(ln.lane_id, 0.0)) / ln.sat_flow_veh_h / len(ln.serving)
        for k in ln.serving:
            y[k] = max(y[k], r)
    return y


def webster_cycle_s(lost_s: float, Y: float, cycle_min_s: float, cycle_max_s: float) -> float:
    """Webster's optimum cycle ``C0 = (1.5 L + 5) / (1 - Y)``, clipped to ``[cycle_min_s, cycle_max_s]`` (s).

    ``Y >= Y_MAX`` (0.95) returns ``cycle_max_s``.
    """
    if Y >= Y_MAX:
        return float(cycle_max_s)
    return float(min(max((1.5 * lost_s + 5.0) / (1.0 - Y), cycle_min_s), cycle_max_s))


def green_bounds(
    ix: IntersectionModel,
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
) -> tuple[list[float], list[float], bool]:
    """Per green phase ``[lo, hi]`` bounds in whole seconds, and whether bounded change could be kept.

    Hard bounds (minimum green, pedestrian minimum, cycle maximum) always hold; bounded change against
    ``prev_greens`` is dropped (third value False) only when it conflicts with them.
    """
    hard_lo = [float(math.ceil(x - 1e-9)) for x in ix.min_greens_s(constraints)]
    fixed = ix.fixed_time_s
    room = math.floor(constraints.cycle_max_s - fixed + 1e-9)
    if sum(hard_lo) > room:
        raise ValueError(
            f"{ix.tls_id}: minimum greens {hard_lo} + intergreens {fixed} s exceed the cycle maximum "
            f"{constraints.cycle_max_s} s"
        )
    big = float(room)
    if prev_greens is None:
        return hard_lo, [big] * ix.n_green, True
    lo, hi = [], []
    for k, g in enumerate(prev_greens):
        d = constraints.max_change_s(float(g))
        lo.append(max(hard_lo[k], float(math.ceil(g - d - 1e-9))))
        hi.append(min(big, max(hard_lo[k], float(math.floor(g + d + 1e-9)))))
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    if cmin > cmax + 1e-9:
        return hard_lo, [big] * ix.n_green, False
    return lo, hi, True


def cycle_range_s(
    ix: IntersectionModel, constraints: SignalConstraints, prev_greens: Sequence[float] | None = None
) -> tuple[int, int]:
    """Whole-second cycle lengths reachable in one step: ``(min, max)`` (s); requires integer intergreens."""
    lo, hi, _ = green_bounds(ix, constraints, prev_greens)
    fixed = ix.fixed_time_s
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    return math.ceil(cmin - 1e-9), math.floor(cmax + 1e-9)


def _waterfill(weights: Sequence[float], lo: Sequence[float], hi: Sequence[float], total: float) -> np.ndarray:
    """Values ``clip(lam * w, lo, hi)`` summing to ``total`` (exact: piecewise-linear in ``lam``).

    ``total`` must lie in ``[sum(lo), sum(hi)]``; zero weights are treated as tiny positive ones.
    """
    w = [max(float(x), 0.0) for x in weights]
    if sum(w) <= 0:
        w = [1.0] * len(w)
    w = [x + 1e-9 for x in w]
    lo_l, hi_l = [float(x) for x in lo], [float(x) for x in hi]

    def at(lam: float) -> float:
        return sum(min(max(lam * wk, a), b) for wk, a, b in zip(w, lo_l, hi_l, strict=True))

    points = sorted(
        {0.0} | {a / wk for wk, a in zip(w, lo_l, strict=True)} | {b / wk for wk, b in zip(w, hi_l, strict=True)}
    )
    prev_lam, prev_val = points[0], at(points[0])
    lam = points[-1]
    if prev_val >= total:
        lam = prev_lam
    else:
        for p in points[1:]:
            v = at(p)
            if v >= total:
                lam = prev_lam + (p - prev_lam) * (total - prev_val) / (v - prev_val) if v > prev_val else p
                break
            prev_lam, prev_val = p, v
    return np.array([min(max(lam * wk, a), b) for wk, a, b in zip(w, lo_l, hi_l, strict=True)])


def constrain_greens(
    ix: IntersectionModel,
    target_greens_s: Sequence[float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    cycle_s: float | None = None,
) -> list[int]:
    """Project target greens onto the constraints, in whole seconds.

    Parameters
    ----------
    ix : IntersectionModel
    target_greens_s : Sequence[float]
        Wanted greens per green phase, s (their shares are kept as far as the bounds allow).
    constraints : SignalConstraints
    prev_greens : Sequence[float], optional
        Greens of the running plan (bounded change).
    cycle_s : float, optional
        Wanted cycle, s; default ``sum(target) + intergreens``. Clipped to what the bounds allow.

    Returns
    -------
    list[int]
        Greens, s. ``check_greens`` on them is empty (asserted).
    """
    lo, hi, change_ok = green_bounds(ix, constraints, prev_greens)
    fixed = ix.fixed_time_s
    want = (cycle_s if cycle_s is not None else sum(target_greens_s) + fixed) - fixed
    cmin = max(constraints.cycle_min_s, sum(lo) + fixed)
    cmax = min(constraints.cycle_max_s, sum(hi) + fixed)
    s_lo = math.ceil(cmin - fixed - 1e-9)
    s_hi = math.floor(cmax - fixed + 1e-9)
    total = int(min(max(round(want), s_lo), s_hi))
    g = _waterfill(target_greens_s, lo, hi, float(total))
    base = np.floor(g + 1e-9)
    rem = round(total - base.sum())
    order = np.argsort(-(g - base), kind="stable")
    out = base.copy()
    i = 0
    while rem > 0 and i < 10 * len(order):
        k = order[i % len(order)]
        if out[k] + 1 <= hi[k] + 1e-9:
            out[k] += 1
            rem -= 1
        i += 1
    while rem < 0:  # never needed in practice (floor), kept for safety
        k = int(np.argmax(out - np.asarray(lo)))
        out[k] -= 1
        rem += 1
    greens = [int(x) for x in out]
    problems = check_greens(ix, greens, constraints, prev_greens if change_ok else None)
    assert not problems, problems
    return greens


def check_greens(
    ix: IntersectionModel,
    greens: Sequence[float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
) -> list[str]:
    """List every constraint a plan violates (empty when it is valid).

    Checks: one green per green phase, whole seconds, minimum green, pedestrian minimum, cycle bounds
    (greens + the network's yellow/all-red), and bounded change against ``prev_greens`` when given.
    """
    out: list[str] = []
    if len(greens) != ix.n_green:
        return [f"{ix.tls_id}: {len(greens)} greens for {ix.n_green} green phases"]
    for k, g in enumerate(greens):
        if abs(g - round(g)) > 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s is not whole seconds")
        if g < constraints.min_green_s - 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s < minimum {constraints.min_green_s} s")
        if g < ix.ped_min_s[k] - 1e-9:
            out.append(f"{ix.tls_id}: green {k} = {g} s < pedestrian minimum {ix.ped_min_s[k]:.1f} s")
    cyc = sum(greens) + ix.fixed_time_s
    if cyc > constraints.cycle_max_s + 1e-9:
        out.append(f"{ix.tls_id}: cycle {cyc} s > maximum {constraints.cycle_max_s} s")
    if cyc < constraints.cycle_min_s - 1e-9:
        out.append(f"{ix.tls_id}: cycle {cyc} s < minimum {constraints.cycle_min_s} s")
    if prev_greens is not None:
        for k, (g, p) in enumerate(zip(greens, prev_greens, strict=True)):
            lim = constraints.max_change_s(float(p))
            floor_k = max(constraints.min_green_s, ix.ped_min_s[k])
            forced_up = g > p and g <= math.ceil(floor_k - 1e-9)
            if abs(g - p) > lim + 1e-9 and not forced_up:
                out.append(f"{ix.tls_id}: green {k} changes {p} -> {g} s (limit {lim:.1f} s)")
    return out


def transition_is_safe(
    ix: IntersectionModel,
    old_durations_s: Sequence[float],
    new_greens_s: Sequence[float],
    lane_q: Mapping[str, float],
    margin: float = 1.25,
) -> bool:
    """Whether switching plans cannot strand a queue (no transition shock).

    The new plan starts when the old one reaches phase 0. For each lane, the red before its first green of
    the new plan is the rest of the old cycle after its last old green plus the new plan's time before that
    green; the queue ``q r`` built in it, discharged at ``s - q``, must clear within the new effective green
    (times ``margin``).

    Parameters
    ----------
    ix : IntersectionModel
    old_durations_s : Sequence[float]
        Phase durations of the running plan, s.
    new_greens_s : Sequence[float]
        Greens of the new plan, s.
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    margin : float
        Safety factor on the clearance time.

    Returns
    -------
    bool
    """
    old = list(old_durations_s)
    new = ix.durations(new_greens_s)
    c_old = sum(old)
    old_start = np.concatenate([[0.0], np.cumsum(old)])
    new_start = np.concatenate([[0.0], np.cumsum(new)])
    for ln in ix.lanes:
        q = float(lane_q.get(ln.lane_id, 0.0)) / 3600.0
        s = ln.sat_flow_veh_h / 3600.0
        if q <= 0:
            continue
        if q >= s:
            return False
        last_end = max(old_start[ix.green_positions[k]] + old[ix.green_positions[k]] for k in ln.serving)
        k0 = min(ln.serving, key=lambda k: new_start[ix.green_positions[k]])
        pos = ix.green_positions[k0]
        red = (c_old - last_end) + new_start[pos] + STARTUP_LOST_S
        g_eff = new[pos] + EXTENSION_S - STARTUP_LOST_S
        if margin * q * red / (s - q) > g_eff:
            return False
    return True


def webster_plan(
    ix: IntersectionModel,
    lane_q: Mapping[str, float],
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    cycle_s: float | None = None,
    blend: float = 1.0,
) -> tuple[list[int], dict[str, Any]]:
    """Webster's cycle and splits for one intersection, under the constraints.

    Parameters
    ----------
    ix : IntersectionModel
    lane_q : Mapping[str, float]
        Demand per lane, veh/h.
    constraints : SignalConstraints
    prev_greens : Sequence[float], optional
        Greens of the running plan (bounded change).
    cycle_s : float, optional
        Impose this cycle (e.g. a common cycle); default Webster's ``C0``.
    blend : float
        Share of Webster's split (``y``-proportional) in the effective green; the rest is shared equally.

    Returns
    -------
    greens : list[int]
        Displayed greens per green phase, s.
    info : dict
        ``y`` (per phase), ``Y``, ``L`` (lost time, s), ``C0`` (Webster cycle, s), ``cycle_s`` (final, s).
    """
    y = critical_flow_ratios(ix, lane_q)
    lost = ix.lost_time_s()
    L, Y = sum(lost), sum(y)
    cmin, cmax = cycle_range_s(ix, constraints, prev_greens)
    c0 = webster_cycle_s(L, Y, max(cmin, constraints.cycle_min_s), max(cmin, min(cmax, constraints.cycle_max_s)))
    C = float(cycle_s) if cycle_s is not None else c0
    eff = max(C - L, 0.0)
    shares = [yk / Y for yk in y] if Y > 0 else [1.0 / ix.n_green] * ix.n_green
    shares = [blend * sh + (1.0 - blend) / ix.n_green for sh in shares]
    target = [max(eff * sh + lost[k] - ix.intergreen_s[k], 0.0) for k, sh in enumerate(shares)]
    greens = constrain_greens(ix, target, constraints, prev_greens, cycle_s=C)
    c0_free = webster_cycle_s(
        L, Y, max(constraints.cycle_min_s, sum(ix.min_greens_s(constraints)) + ix.fixed_time_s), constraints.cycle_max_s
    )
    info = {"y": y, "Y": Y, "L": L, "C0": c0, "C0_unbounded": c0_free, "cycle_s": sum(greens) + ix.fixed_time_s}
    return greens, info


def max_pressure_greens(
    ix: IntersectionModel,
    lane_queue_veh: Mapping[str, float],
    segment_queue_veh: Mapping[str, float],
    segment_lanes: Mapping[str, Sequence[str]],
    cycle_s: float,
    constraints: SignalConstraints,
    prev_greens: Sequence[float] | None = None,
    smoothing: float = 1.0,
    floor_frac: float = 0.0,
) -> tuple[list[int], list[float]]:
    """Cycle-based max-pressure splits (Le et al. 2015): greens in proportion to each phase's pressure.

    The pressure of green phase ``k`` is ``Σ_lanes served s_l max(0, Q_l - mean over exits Q_exit / lanes)``
    with queues in vehicles (upstream per lane, downstream per lane of the exit segment). Weights are floored
    at ``floor_frac`` x their mean (and a tiny positive value), and the split moves by ``smoothing`` (0-1)
    from the running split towards the pressure split (1 = no smoothing).

    Returns
    -------
    greens : list[int]
        Greens, s, under the constraints and the given cycle.
    pressure : list[float]
        The phase pressures (veh x veh/h).
    """
    p = [0.0] * ix.n_green
    for ln in ix.lanes:
        up = float(lane_queue_veh.get(ln.lane_id, 0.0))
        downs = [
            float(segment_queue_veh.get(e, 0.0)) / max(1, len(segment_lanes.get(e, ())) or 1) for e in ln.to_segments
        ]
        down = sum(downs) / len(downs) if downs else 0.0
        for k in ln.serving:
            p[k] += ln.sat_flow_veh_h * max(0.0, up - down) / len(ln.serving)
    eff = cycle_s - ix.fixed_time_s
    mean = sum(p) / len(p) if p else 0.0
    floor = max(floor_frac * mean, 1e-3 * (max(p) if max(p) > 0 else 1.0))
    w = [max(x, floor) for x in p]
    target = [eff * x / sum(w) for x in w]
    if prev_greens is not None and 0.0 <= smoothing < 1.0 and sum(prev_greens) > 0:
        old = [eff * g / sum(prev_greens) for g in prev_greens]
        target = [smoothing * a + (1.0 - smoothing) * b for a, b in zip(target, old, strict=True)]
    return constrain_greens(ix, target, constraints, prev_greens, cycle_s=cycle_s), p


# ---------------------------------------------------------------------------------------------------------
# Signal clocks: where each signal's cycle stands (plans start at the next phase-0 start)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SignalClock:
    """The plan a signal runs and when its phase 0 starts (s), mirroring "install at the next phase-0 start".

    Attributes
    ----------
    durations_s : list[float]
        Phase durations of the running plan, s.
    anchor_s : float
        A time at which phase 0 of the running plan started, s.
    pending_s : list[float] or None
        A plan sent but not installed yet.
    pending_from_s : float
        When it was sent, s; it installs at the first phase-0 start at or after that time.
    """

    durations_s: list[float]
    anchor_s: float
    pending_s: list[float] | None = None
    pending_from_s: float = 0.0

    @property
    def cycle_s(self) -> float:
        """Cycle of the running plan, s."""
        return float(sum(self.durations_s))

    def next_phase0_s(self, t_s: float) -> float:
        """First phase-0 start of the running plan at or after ``t_s`` (s)."""
        C = self.cycle_s
        k = math.ceil((t_s - self.anchor_s) / C - 1e-9)
        return self.anchor_s + max(k, 0) * C if t_s >= self.anchor_s else self.anchor_s

    def advance(self, t_s: float) -> None:
        """Install the pending plan if its phase-0 start has come by ``t_s``."""
        if self.pending_s is None:
            return
        at = self.next_phase0_s(self.pending_from_s)
        if at <= t_s + 1e-9:
            self.durations_s = list(self.pending_s)
            self.anchor_s = at
            self.pending_s = None

    def send(self, t_s: float, durations_s: Sequence[float]) -> float:
        """Record a plan sent at ``t_s``; returns its installation time (s)."""
        self.advance(t_s)
        self.pending_s = [float(d) for d in durations_s]
        self.pending_from_s = float(t_s)
        return self.next_phase0_s(t_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalClock:
        """Inverse of :meth:`to_dict`."""
        return cls(list(d["durations_s"]), float(d["anchor_s"]), d.get("pending_s"), float(d["pending_from_s"]))

    @classmethod
    def for_intersection(cls, ix: IntersectionModel) -> SignalClock:
        """The network's fixed plan, phase 0 starting at the network offset."""
        return cls(list(ix.phase_durations_s), ix.offset_s)
