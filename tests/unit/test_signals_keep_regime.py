"""Signal recommendations (issue #17): the junction's saturation regime from the live state, and the rule that
a recommendation never replaces the running plans unless the area it coordinates is expected to gain."""

from __future__ import annotations

import pytest

from models.signals import (
    DemandSnapshot,
    PolicyConfig,
    SignalClock,
    SignalNetwork,
    junction_regime,
    recommend,
    recommendation_id,
)
from roadnet import grid_city


def _clocks(net: SignalNetwork) -> dict[str, SignalClock]:
    return {t: SignalClock.for_intersection(ix) for t, ix in net.intersections.items()}


def _snap(
    net: SignalNetwork,
    ns: float,
    ew: float,
    spillback: set[str] | None = None,
    occupancy: dict[str, float] | None = None,
    t_s: float = 600.0,
) -> DemandSnapshot:
    """Every N-S lane (green phase 0) at ``ns`` veh/h, every E-W lane at ``ew``."""
    q = {ln.lane_id: ns if 0 in ln.serving else ew for ix in net.intersections.values() for ln in ix.lanes}
    return DemandSnapshot(t_s, q, {}, {}, {}, spillback or set(), {}, occupancy=occupancy or {})


# ---------------------------------------------------------------------------------------------------------
# Regime
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def row() -> SignalNetwork:
    # two signals A0 -> B0 (300 m apart), fixed 42 s / 3 s / 42 s / 3 s, 2 lanes of 1800 veh/h per approach
    return SignalNetwork.from_graph(grid_city(1, 2))


def test_light_demand_is_undersaturated(row: SignalNetwork) -> None:
    snap = _snap(row, 150.0, 200.0)
    for t, ix in row.intersections.items():
        reg = junction_regime(ix, snap, snap.lane_demand_veh_h, ix.phase_durations_s)
        assert reg.regime == "undersaturated", (t, reg)
        # v/c of the critical lane under the running 42/90 s green: 200 / (1800 * 42 / 90) = 0.24
        assert reg.critical_vc == pytest.approx(200.0 / (1800.0 * 42.0 / 90.0), rel=0.1)


def test_demand_near_capacity_of_the_running_plan_is_saturated(row: SignalNetwork) -> None:
    # 780 veh/h/lane against 1800 * 42 / 90 = 840: v/c 0.93 (>= 0.9), nothing spilled back
    snap = _snap(row, 150.0, 780.0)
    ix = row.intersections["A0"]
    reg = junction_regime(ix, snap, snap.lane_demand_veh_h, ix.phase_durations_s)
    assert reg.regime == "saturated"
    assert reg.critical_vc >= 0.9 and not reg.spilled_approaches and not reg.blocked_exits


def test_queue_at_the_upstream_loop_or_an_occupied_exit_is_spillback(row: SignalNetwork) -> None:
    a0, b0 = row.intersections["A0"], row.intersections["B0"]
    # the link A0 -> B0 is spilled back: B0's approach queue reaches its mid-link loop, A0's exit is blocked
    snap = _snap(row, 150.0, 200.0, spillback={"A0B0"})
    ra = junction_regime(a0, snap, snap.lane_demand_veh_h, a0.phase_durations_s)
    rb = junction_regime(b0, snap, snap.lane_demand_veh_h, b0.phase_durations_s)
    assert ra.regime == "spillback" and ra.blocked_exits == ("A0B0",)
    assert rb.regime == "spillback" and rb.spilled_approaches == ("A0B0",)
    assert "A0B0" in ra.describe() and "A0B0" in rb.describe()
    # an exit whose mid-link loops read high occupancy (not yet flagged as spilled back) is gridlock risk too
    snap = _snap(row, 150.0, 200.0, occupancy={"B0right0": 0.6})
    rb = junction_regime(b0, snap, snap.lane_demand_veh_h, b0.phase_durations_s)
    assert rb.regime == "spillback" and rb.blocked_exits == ("B0right0",)
    # moderate exit occupancy is not
    snap = _snap(row, 150.0, 200.0, occupancy={"B0right0": 0.1})
    assert junction_regime(b0, snap, snap.lane_demand_veh_h, b0.phase_durations_s).regime == "undersaturated"


def test_recommendation_says_the_regime(row: SignalNetwork) -> None:
    snap = _snap(row, 150.0, 780.0, spillback={"B0right0"})
    recs, diag = recommend(row, snap, _clocks(row), 600.0)
    assert recs["B0"].regime == "spillback" and "spillback" in recs["B0"].reason
    assert recs["A0"].regime == "saturated" and "saturated" in recs["A0"].reason
    assert diag["regimes"] == {"A0": "saturated", "B0": "spillback"}
    assert recs["B0"].to_dict()["regime"] == "spillback"


# ---------------------------------------------------------------------------------------------------------
# Keep the running plan
# ---------------------------------------------------------------------------------------------------------


def test_running_plan_kept_when_the_area_would_not_gain(row: SignalNetwork) -> None:
    # running: 16 s N-S / 68 s E-W on a 90 s cycle at both signals, against 300 / 500 veh/h per lane. The
    # policy wants a short cycle, but bounded change only reaches a 46 s plan with a 6 s N-S green, which the
    # delay model scores at 124 veh·h/h against 58 for the running plans (measured on the unchanged code,
    # which installed it). The running plans are kept, and the recommendation says why.
    clocks = _clocks(row)
    for t, ix in row.intersections.items():
        clocks[t].send(0.0, ix.durations([16, 68]))
    recs, diag = recommend(row, _snap(row, 300.0, 500.0), clocks, 600.0)
    assert diag["kept_running_plans"]
    assert diag["delay_after_veh_h_per_h"] == pytest.approx(diag["delay_before_veh_h_per_h"])
    assert diag["rejected_delay_veh_h_per_h"] >= diag["delay_before_veh_h_per_h"]
    for t, r in recs.items():
        assert r.kept and r.green_s == (16, 68) and r.cycle_s == 90.0
        assert r.reason.startswith("kept: running plan, expected delay")
        assert r.recommendation_id == recommendation_id(t, 600.0)  # ids stay stable
        assert r.to_dict()["kept"] is True


def test_new_plan_when_the_area_gains() -> None:
    net = SignalNetwork.from_graph(grid_city(2, 2))
    # the fixed 42/42 s plan against 100 veh/h N-S and 650 veh/h E-W: a new split is clearly better
    recs, diag = recommend(net, _snap(net, 100.0, 650.0), _clocks(net), 600.0)
    assert not diag["kept_running_plans"]
    assert diag["delay_after_veh_h_per_h"] < diag["delay_before_veh_h_per_h"]
    for r in recs.values():
        assert not r.kept and r.green_s[1] > r.green_s[0]
        assert not r.reason.startswith("kept")


# ---------------------------------------------------------------------------------------------------------
# What is optimised when oversaturated
# ---------------------------------------------------------------------------------------------------------


def test_spilled_approach_demand_is_at_least_its_running_capacity(row: SignalNetwork) -> None:
    # B0's approach A0B0 is spilled back while its loops read only 200 veh/h/lane (they count served flow):
    # planned as at least 1800 * 42 / 90 = 840 veh/h/lane, the approach gets at least half the green
    snap = _snap(row, 400.0, 200.0, spillback={"A0B0"})
    recs, _ = recommend(row, snap, _clocks(row), 600.0, config=PolicyConfig(keep_running_plans=False))
    cfg_off = PolicyConfig(keep_running_plans=False, spilled_demand_floor=False)
    recs_off, _ = recommend(row, snap, _clocks(row), 600.0, config=cfg_off)
    assert recs_off["B0"].green_s[1] < recs_off["B0"].green_s[0]  # as measured: E-W looks light
    share = {k: r["B0"].green_s[1] / sum(r["B0"].green_s) for k, r in (("on", recs), ("off", recs_off))}
    assert share["on"] >= 0.5 > share["off"]


def test_congested_area_replaces_the_running_plan_for_capacity_not_delay(row: SignalNetwork) -> None:
    import numpy as np

    from models.signals import PlanEvaluation
    from models.signals.recommendations import _keep_running

    rows = [(t, ln) for t, ix in row.intersections.items() for ln in ix.lanes]
    n = len(rows)

    def ev(x_a0: float, delay_s: float) -> PlanEvaluation:
        x = np.array([x_a0 if t == "A0" else 0.5 for t, _ in rows])
        return PlanEvaluation(rows, np.full(n, 300.0), np.full(n, delay_s), np.zeros(n), x, np.full(n, 0.4), True)

    running, longer = ev(1.05, 40.0), ev(0.95, 41.0)  # the new plan: more capacity at A0, a little more delay
    area = [list(row.intersections)]
    # undersaturated area: delay decides, the running plans stay
    kept = _keep_running(running, longer, area, 0.0, congested=(), vc_gain=0.02)
    assert set(kept) == {"A0", "B0"} and kept["A0"][0] > kept["A0"][1]
    # A0 saturated: throughput decides, the new plans go in
    assert _keep_running(running, longer, area, 0.0, congested=("A0",), vc_gain=0.02) == {}
    # ... unless the capacity gain is below the threshold
    assert _keep_running(running, ev(1.04, 41.0), area, 0.0, congested=("A0",), vc_gain=0.02)
