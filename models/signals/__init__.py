"""Signal timing: demand estimation, constrained Webster, a coordinated adaptive policy, HCM delay, recommendations.

Everything here is pure numpy (no I/O). Units: flows in veh/h (per lane unless said otherwise), times in
seconds, lengths in metres, speeds in km/h unless a name says ``_m_s``.

**Demand** (:class:`DemandEstimator`). Stop-line loops count the vehicles that were *served*; on an
oversaturated approach they read the capacity, not the demand, and the approach looks quiet. Arrivals are
measured upstream instead: per approach ``demand = max(Σ mid-link loop counts, Σ stop-line counts + growth of
the camera queue)``, split over the lanes by the stop-line lane shares (lane choice is made after the
mid-link loop), smoothed over periods with an exponential filter. Camera queues and mid-link occupancy also
flag spill-back (a queue reaching the middle of the link). The estimator is fed device-schema-v1 events one
at a time and its state is a JSON-able dict.

**Webster with real-controller constraints** (:func:`webster_plan`, :func:`constrain_greens`). Lost time per
green phase ``l = startup_lost + intergreen - extension`` (defaults 2 s + yellow/all-red - 2 s, i.e. the
intergreen), ``C0 = (1.5 L + 5) / (1 - Y)`` with ``Y`` the sum of the critical flow ratios ``y = q / s`` of the
green phases, effective greens in proportion to ``y``. Then, in this order of precedence: minimum green,
pedestrian minimum, yellow and all-red kept as in the network, cycle bounds, bounded change against the
running plan (transition shock), whole seconds. :func:`check_greens` lists violations and every public
planner asserts there are none.

**Adaptive coordinated policy** (:func:`recommend`). Signals that share one cycle keep their relative timing
(the harness installs a plan at the next start of phase 0, so absolute phase-0 times are preserved), so a
*common cycle* chosen against the link travel times gives green waves without any offset command. For every
candidate common cycle the greens come from constrained Webster (per intersection), and the network delay
is evaluated with a cyclic-flow-profile model (TRANSYT style): departures of each upstream lane (queue
discharge at saturation flow, then arrivals), split over the exits by turning shares balanced against the
exits' mid-link counts (Furness), shifted by the link travel time measured by the mid-link loops and by
the phase-0 times, and dispersed (Robertson), give the arrival profile at the downstream stop line; a
deterministic queue over the cycle gives the uniform delay and the stops (each stop costs
``STOP_PENALTY_S`` more), HCM's incremental term (with its upstream-filtering factor) the random/overflow
delay. The cycle taken is the longest within ``cycle_tolerance`` (8 %) of the best in ``[C_best, 1.25
C_best]`` (the delay curve is steep below the optimum, flat above it), the running one if it is among them.
Saturation flow carries the HCM heavy-vehicle factor from the camera class counts. Saturation and
spill-back: demand includes queue growth, lanes whose every exit is spilled back (queue at mid-link on the
receiving link) are gated (their flow is not worth green), and the overflow term drives the cycle up where
``X -> 1``. Bounded change: while it keeps the wanted cycle out of reach the policy moves towards it step
by step, unless :func:`transition_is_safe` shows that the first new cycle clears every queue the old plan
leaves (the shock the limit guards against); then it goes there directly. An isolated alternative (each
signal at its own Webster cycle) can be enabled (``PolicyConfig.isolated_alternative``).

**Pedestrian minimum.** A green phase during which pedestrians cross leg ``a`` (its approach has red) lasts
at least ``walk + width / speed`` (defaults 7 s + width / 1.2 m/s). It applies where the network declares a
crosswalk (approach or traffic-light record: ``crosswalk_width_m`` / ``crossings``, or
``SignalConstraints.crosswalk_widths_m``), or everywhere with ``pedestrians="always"`` (width = lanes of the
leg both ways x ``lane_width_m``). The SUMO scenario has no pedestrians and declares no crosswalks.

**Modules.** :mod:`~models.signals.network` (physical constants and defaults, :class:`SignalConstraints`,
the network model built from a road graph), :mod:`~models.signals.demand` (demand estimation, turning
proportions), :mod:`~models.signals.plans` (Webster under constraints, max-pressure, :class:`SignalClock`),
:mod:`~models.signals.delay` (HCM delay, network delay with cyclic flow profiles, :class:`PolicyConfig`),
:mod:`~models.signals.recommendations` (:func:`recommend`, :class:`Recommendation`). Every public name is
re-exported here: ``from models.signals import X`` is the way to import them.
"""

from models.signals.delay import (
    PlanEvaluation,
    PolicyConfig,
    evaluate_plans,
    hcm_delay,
    interval_delay,
)
from models.signals.demand import (
    TURN_PRIOR,
    DemandEstimator,
    DemandSnapshot,
    turning_proportions,
)
from models.signals.network import (
    ACCEL_PENALTY_S,
    DISPERSION_ALPHA,
    DISPERSION_BETA,
    EXTENSION_S,
    HCM_I,
    HCM_K,
    HCM_T_H,
    HEAVY_CLASSES,
    HEAVY_PCE,
    JAM_SPACING_M,
    PERMISSIVE_FACTOR,
    SAT_FLOW_VEH_H_LANE,
    SPILLBACK_GATE,
    STARTUP_LOST_S,
    STOP_PENALTY_S,
    X_UNIFORM_CAP,
    IntersectionModel,
    LaneModel,
    SegmentModel,
    SignalConstraints,
    SignalNetwork,
)
from models.signals.plans import (
    Y_MAX,
    SignalClock,
    check_greens,
    constrain_greens,
    critical_flow_ratios,
    cycle_range_s,
    green_bounds,
    max_pressure_greens,
    transition_is_safe,
    webster_cycle_s,
    webster_plan,
)
from models.signals.recommendations import (
    REGIMES,
    JunctionRegime,
    Recommendation,
    junction_regime,
    recommend,
    recommendation_id,
)

__all__ = [
    "ACCEL_PENALTY_S",
    "DISPERSION_ALPHA",
    "DISPERSION_BETA",
    "EXTENSION_S",
    "HCM_I",
    "HCM_K",
    "HCM_T_H",
    "HEAVY_CLASSES",
    "HEAVY_PCE",
    "JAM_SPACING_M",
    "PERMISSIVE_FACTOR",
    "REGIMES",
    "SAT_FLOW_VEH_H_LANE",
    "SPILLBACK_GATE",
    "STARTUP_LOST_S",
    "STOP_PENALTY_S",
    "TURN_PRIOR",
    "X_UNIFORM_CAP",
    "Y_MAX",
    "DemandEstimator",
    "DemandSnapshot",
    "IntersectionModel",
    "JunctionRegime",
    "LaneModel",
    "PlanEvaluation",
    "PolicyConfig",
    "Recommendation",
    "SegmentModel",
    "SignalClock",
    "SignalConstraints",
    "SignalNetwork",
    "check_greens",
    "constrain_greens",
    "critical_flow_ratios",
    "cycle_range_s",
    "evaluate_plans",
    "green_bounds",
    "hcm_delay",
    "interval_delay",
    "junction_regime",
    "max_pressure_greens",
    "recommend",
    "recommendation_id",
    "transition_is_safe",
    "turning_proportions",
    "webster_cycle_s",
    "webster_plan",
]
