"""Signal timing (models.signals): Webster and every constraint on hand-computed intersections, bounded
change, HCM delay, demand from upstream loops against stop-line counts, clocks, recommendations."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from models.signals import (
    DemandEstimator,
    DemandSnapshot,
    PolicyConfig,
    SignalClock,
    SignalConstraints,
    SignalNetwork,
    check_greens,
    constrain_greens,
    critical_flow_ratios,
    hcm_delay,
    interval_delay,
    max_pressure_greens,
    recommend,
    recommendation_id,
    transition_is_safe,
    webster_cycle_s,
    webster_plan,
)
from roadnet import grid_city

# grid_city(1, 1): one signal "A0"; phase 0 = N-S green (approaches bottom0A0, top0A0), phase 1 = yellow
# 3 s, phase 2 = E-W green (left0A0, right0A0), phase 3 = yellow 3 s; 2 lanes per approach; fixed 42/42 s.
NS = ("bottom0A0", "top0A0")
EW = ("left0A0", "right0A0")


@pytest.fixture(scope="module")
def one() -> SignalNetwork:
    return SignalNetwork.from_graph(grid_city(1, 1))


def lane_flows(ns: float, ew: float) -> dict[str, float]:
    q = {f"{s}_{i}": ns for s in NS for i in (0, 1)}
    q.update({f"{s}_{i}": ew for s in EW for i in (0, 1)})
    return q


def test_model_of_the_grid_signal(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    assert ix.green_positions == [0, 2]
    assert ix.intergreen_s == [3.0, 3.0]
    assert ix.fixed_time_s == 6.0
    # HCM lost time per phase = start-up 2 + intergreen 3 - extension 2 = 3 s
    assert ix.lost_time_s() == [3.0, 3.0]
    assert {ln.segment_id: ln.serving for ln in ix.lanes}["left0A0"] == (1,)
    assert ix.ped_min_s == [0.0, 0.0]  # no declared crosswalks


def test_webster_hand_computed(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    # y_NS = 360/1800 = 0.2, y_EW = 540/1800 = 0.3; L = 2 x 3 = 6 s; Y = 0.5
    # C0 = (1.5 x 6 + 5) / (1 - 0.5) = 14 / 0.5 = 28 s; effective green 28 - 6 = 22 s
    # g_NS = 22 x 0.2/0.5 = 8.8 s, g_EW = 22 x 0.3/0.5 = 13.2 s; displayed = effective (+2 -2)
    # whole seconds summing to 22: floor -> 8 + 13 = 21, the extra second to the larger fraction (8.8) -> 9
    q = lane_flows(360, 540)
    assert critical_flow_ratios(ix, q) == pytest.approx([0.2, 0.3])
    greens, info = webster_plan(ix, q, SignalConstraints())
    assert info["C0"] == pytest.approx(28.0)
    assert info["Y"] == pytest.approx(0.5)
    assert greens == [9, 13]
    assert info["cycle_s"] == 28
    assert webster_cycle_s(6.0, 0.5, 0.0, 180.0) == pytest.approx(28.0)


def test_minimum_green_binds(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    # y_NS = 18/1800 = 0.01, y_EW = 0.3: Y = 0.31, C0 = 14 / 0.69 = 20.29 s, effective 14.29 s
    # g_NS = 14.29 x 0.01/0.31 = 0.46 s < 5 s minimum -> 5; the total (round(20.29 - 6) = 14) leaves 9 for E-W
    greens, info = webster_plan(ix, lane_flows(18, 540), SignalConstraints())
    assert info["C0"] == pytest.approx(14 / 0.69)
    assert greens == [5, 9]
    # a 7 s minimum: 7 + 7 = 14
    assert webster_plan(ix, lane_flows(18, 540), SignalConstraints(min_green_s=7))[0] == [7, 7]


def test_cycle_bounds(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    # Y = 0.5 + 0.5 >= 0.95: Webster is undefined, the cycle goes to its maximum: greens 180 - 6 = 174 s
    greens, _ = webster_plan(ix, lane_flows(900, 900), SignalConstraints())
    assert sum(greens) + 6 == 180
    assert greens == [87, 87]
    # a 120 s maximum and a 60 s minimum
    assert sum(webster_plan(ix, lane_flows(900, 900), SignalConstraints(cycle_max_s=120))[0]) == 114
    assert sum(webster_plan(ix, lane_flows(360, 540), SignalConstraints(cycle_min_s=60))[0]) == 54


def test_pedestrian_minimum() -> None:
    # pedestrians="always": a leg has 2 lanes in + 2 out = 4 x 3.2 m = 12.8 m of crossing;
    # walk 7 s + 12.8 / 1.2 = 17.67 s, whole seconds -> 18 s per phase, so the cycle is at least 2 x 18 + 6 = 42
    cons = SignalConstraints(pedestrians="always")
    ix = SignalNetwork.from_graph(grid_city(1, 1), cons).intersections["A0"]
    assert ix.ped_min_s == pytest.approx([7 + 12.8 / 1.2] * 2)
    greens, _ = webster_plan(ix, lane_flows(18, 540), cons)
    assert greens == [18, 18]
    assert not check_greens(ix, greens, cons)
    assert any("pedestrian" in p for p in check_greens(ix, [17, 30], cons))
    # a declared crosswalk of 6 m on the E-W leg "left0A0": pedestrians cross it while N-S has green
    cons2 = SignalConstraints(crosswalk_widths_m={"left0A0": 6.0})
    ix2 = SignalNetwork.from_graph(grid_city(1, 1), cons2).intersections["A0"]
    assert ix2.ped_min_s == pytest.approx([7 + 6 / 1.2, 0.0])  # 12 s on phase 0 only
    assert webster_plan(ix2, lane_flows(18, 540), cons2)[0][0] >= 12


def test_yellow_and_all_red_kept(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    greens, _ = webster_plan(ix, lane_flows(360, 540), SignalConstraints())
    assert ix.durations(greens) == [9.0, 3.0, 13.0, 3.0]


def test_bounded_change(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    cons = SignalConstraints()  # |change| <= max(10 s, 50 % of the running green)
    # from 42/42 (limit 21 s) the Webster target 9/13 is out of reach: both greens stop at 42 - 21 = 21
    greens, _ = webster_plan(ix, lane_flows(360, 540), cons, prev_greens=[42, 42])
    assert greens == [21, 21]
    assert not check_greens(ix, greens, cons, [42, 42])
    assert any("changes" in p for p in check_greens(ix, [9, 13], cons, [42, 42]))
    # from 12/12 (limit max(10, 6) = 10 s) anything in [5, 22] is allowed
    greens, _ = webster_plan(ix, lane_flows(360, 540), cons, prev_greens=[12, 12])
    assert greens == [9, 13]
    # the minimum green may force a larger increase (5 s minimum from a 1 s green is allowed)
    assert not check_greens(ix, [5, 20], SignalConstraints(max_green_change_s=1, max_green_change_frac=0), [1, 20])


def test_transition_safety(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    old = [42.0, 3.0, 42.0, 3.0]
    # N-S lanes were red for 48 s (3 + 42 + 3) before the new plan's first green:
    # 100 veh/h -> queue 100/3600 x (48 + 2) = 1.39 veh, cleared at (1800-100)/3600 veh/s in 2.9 s (x1.25 = 3.7 s)
    # inside a 9 s effective green: safe
    assert transition_is_safe(ix, old, [9, 13], lane_flows(100, 100))
    # 700 veh/h: 9.7 veh queue, 32 s to clear at 1100 veh/h: a 9 s green strands it
    assert not transition_is_safe(ix, old, [9, 13], lane_flows(700, 100))


def test_constraints_always_hold_on_random_targets(one: SignalNetwork) -> None:
    import random

    ix = one.intersections["A0"]
    rng = random.Random(3)
    cons = SignalConstraints(cycle_min_s=30, cycle_max_s=120)
    for _ in range(300):
        target = [rng.uniform(0, 150), rng.uniform(0, 150)]
        prev = [rng.uniform(5, 80), rng.uniform(5, 80)] if rng.random() < 0.5 else None
        g = constrain_greens(ix, target, cons, prev, cycle_s=rng.uniform(10, 200))
        assert all(x >= 5 and x == int(x) for x in g)
        assert 30 <= sum(g) + 6 <= 120


def test_infeasible_minimums_raise(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    with pytest.raises(ValueError, match="exceed the cycle maximum"):
        constrain_greens(ix, [10, 10], SignalConstraints(min_green_s=90, cycle_max_s=180))


def test_hcm_delay_hand_computed() -> None:
    # q = 600, s = 1800, g = 30, C = 90: g/C = 1/3, c = 600, X = 1
    # d1 = 0.5 x 90 x (2/3)^2 / (1 - 1 x 1/3) = 20 / 0.6667 = 30 s
    # d2 = 900 x 0.25 x [0 + sqrt(8 x 0.5 x 1 x 1 / (600 x 0.25))] = 225 x sqrt(0.026667) = 36.74 s
    d1, d2, x = hcm_delay(600, 1800, 30, 90)
    assert float(x) == pytest.approx(1.0)
    assert float(d1) == pytest.approx(30.0)
    assert float(d2) == pytest.approx(36.74, abs=0.01)


def test_interval_delay_matches_hcm_for_one_green() -> None:
    # q = 400: X = 0.667; d1 = 0.5 x 90 x (2/3)^2 / (1 - 0.667/3) = 25.71 s;
    # d2 = 225 x (-0.3333 + sqrt(0.1111 + 4 x 0.667 / 150)) = 5.78 s  -> 31.5 s
    d, x = interval_delay(400, 1800, [(0, 30)], 90)
    assert x == pytest.approx(2 / 3)
    assert d == pytest.approx(25.71 + 5.78, abs=0.6)
    # the same 30 s of green split into two 15 s greens halves the red: less delay
    d2, x2 = interval_delay(400, 1800, [(0, 15), (45, 60)], 90)
    assert x2 == pytest.approx(x)
    assert d2 < d - 5


def _loop(lane: str, seg: str, role: str, ts: str, count: int, occ: float = 0.05) -> dict[str, Any]:
    return {
        "type": "loop",
        "detector_id": f"loop_{role}_{lane}",
        "segment_id": seg,
        "lane": lane,
        "lane_index": int(lane[-1]),
        "role": role,
        "ts": ts,
        "interval_s": 30,
        "count": count,
        "occupancy": occ,
        "speed_kmh": 40.0 if count else None,
    }


def _camera(seg: str, ts: str, queue: int) -> dict[str, Any]:
    return {
        "type": "camera",
        "camera_id": f"cam_{seg}",
        "segment_id": seg,
        "lanes": 2,
        "ts": ts,
        "interval_s": 60,
        "counts": {"car": 8, "truck": 2, "bus": 0},
        "count_total": 10,
        "queue_len_veh": queue,
        "queue_max_veh": queue,
        "occupancy": 0.2,
        "speed_kmh": 10.0,
    }


def test_demand_from_upstream_loops_not_stop_line(one: SignalNetwork) -> None:
    """An oversaturated approach: 10 veh/30 s/lane arrive at the mid-link loops, the stop line serves 6."""
    est = DemandEstimator(one)
    seg = "left0A0"
    for k in range(10):  # 300 s of 30 s loop intervals
        ts = f"2025-01-06T07:{k // 2:02d}:{(k % 2) * 30:02d}Z"
        for i in (0, 1):
            est.update(_loop(f"{seg}_{i}", seg, "mid_link", ts, 10))
            est.update(_loop(f"{seg}_{i}", seg, "stop_line", ts, 6))
    snap = est.snapshot(300.0)
    # stop line: 6/30 s = 720 veh/h per lane (what Webster's baseline would see); mid-link: 10/30 s = 1200
    assert snap.lane_served_veh_h[f"{seg}_0"] == pytest.approx(720.0)
    assert snap.lane_demand_veh_h[f"{seg}_0"] == pytest.approx(1200.0)
    assert snap.approach_demand_veh_h[seg] == pytest.approx(2400.0)
    # and the state is JSON-able and restorable
    state = json.loads(json.dumps(est.to_state()))
    est2 = DemandEstimator(one)
    est2.load_state(state)
    assert est2.state["approach_demand"][seg] == pytest.approx(2400.0)


def test_demand_from_queue_growth_without_mid_link_loops(one: SignalNetwork) -> None:
    """No mid-link loops: served flow plus the growth of the camera queue."""
    est = DemandEstimator(one)
    seg = "bottom0A0"
    for k in range(10):
        ts = f"2025-01-06T07:{k // 2:02d}:{(k % 2) * 30:02d}Z"
        for i in (0, 1):
            est.update(_loop(f"{seg}_{i}", seg, "stop_line", ts, 5))
    for m in range(5):
        est.update(_camera(seg, f"2025-01-06T07:{m + 1:02d}:00Z", 4))
    est.snapshot(300.0)
    for k in range(10):
        ts = f"2025-01-06T07:{5 + k // 2:02d}:{(k % 2) * 30:02d}Z"
        for i in (0, 1):
            est.update(_loop(f"{seg}_{i}", seg, "stop_line", ts, 5))
    for m in range(5):
        est.update(_camera(seg, f"2025-01-06T07:{6 + m:02d}:00Z", 14))
    snap = est.snapshot(600.0)
    # served 2 x 5/30 s = 1200 veh/h; mean queue 4 -> 14 over 300 s: +10 veh = +120 veh/h; demand 1320,
    # smoothed with the first period's 1200: 1200 + (1 - e^-2) x 120 = 1303.8
    assert snap.approach_demand_veh_h[seg] == pytest.approx(1200 + (1 - math.exp(-2)) * 120, rel=1e-6)
    assert snap.heavy_share[seg] == pytest.approx(0.2)


def test_signal_clock_installs_at_next_phase0() -> None:
    clk = SignalClock([42.0, 3.0, 42.0, 3.0], 0.0)
    assert clk.next_phase0_s(300) == 360
    assert clk.send(300, [9.0, 3.0, 13.0, 3.0]) == 360
    clk.advance(359)
    assert clk.cycle_s == 90
    clk.advance(360)
    assert clk.cycle_s == 28 and clk.anchor_s == 360
    assert clk.next_phase0_s(600) == 360 + 9 * 28  # 612
    assert SignalClock.from_dict(json.loads(json.dumps(clk.to_dict()))) == clk


def test_max_pressure_splits(one: SignalNetwork) -> None:
    ix = one.intersections["A0"]
    q_up = {f"{s}_{i}": 2.0 for s in NS for i in (0, 1)}
    q_up.update({f"{s}_{i}": 6.0 for s in EW for i in (0, 1)})
    greens, p = max_pressure_greens(ix, q_up, {}, one.segment_lanes, 46.0, SignalConstraints())
    # pressures 4 lanes x 1800 x 2 = 14400 and 4 x 1800 x 6 = 43200: greens 40 x 1/4 and 40 x 3/4
    assert p == pytest.approx([14400.0, 43200.0])
    assert greens == [10, 30]


def test_recommendation_id_is_stable() -> None:
    assert recommendation_id("C2", 600.0) == recommendation_id("C2", 600)
    assert recommendation_id("C2", 600.0) != recommendation_id("C2", 900.0)
    assert len(recommendation_id("C2", 600.0)) == 16


def _snapshot(net: SignalNetwork, ns: float, ew: float, t: float = 600.0) -> DemandSnapshot:
    """Every N-S lane (served by green phase 0) at ``ns`` veh/h, every E-W lane at ``ew``."""
    q: dict[str, float] = {}
    for ix in net.intersections.values():
        for ln in ix.lanes:
            q[ln.lane_id] = ns if 0 in ln.serving else ew
    return DemandSnapshot(t, q, {}, {}, {}, set(), {})


def test_recommend_respects_constraints_and_reports() -> None:
    G = grid_city(3, 3)
    net = SignalNetwork.from_graph(G)
    snap = _snapshot(net, 200.0, 500.0)
    clocks = {t: SignalClock.for_intersection(ix) for t, ix in net.intersections.items()}
    cons = SignalConstraints()
    recs, diag = recommend(net, snap, clocks, 600.0, cons, PolicyConfig())
    assert set(recs) == set(net.intersections)
    cycles = {r.cycle_s for r in recs.values()}
    assert diag["mode"] == "common" and len(cycles) == 1  # one common cycle: coordination is kept
    for tid, r in recs.items():
        ix = net.intersections[tid]
        assert not check_greens(ix, list(r.green_s), cons)
        assert r.recommendation_id == recommendation_id(tid, 600.0)
        assert set(r.expected) == set(ix.approaches)
        for v in r.expected.values():
            assert {"delay_before_s", "delay_after_s", "vc_before", "vc_after"} <= set(v)
        assert 0.0 <= r.confidence <= 1.0 and r.reason
        assert r.plan_spec() == {"green_s": list(r.green_s)}
        json.dumps(r.to_dict())
        # E-W carries more: its green is longer
        assert r.green_s[1] > r.green_s[0]
    # bounded change from the 42/42 plan, waived only when the switch cannot strand a queue
    if not diag["bounded_change_waived"]:
        for tid, r in recs.items():
            assert not check_greens(net.intersections[tid], list(r.green_s), cons, [42, 42])


def test_recommend_keeps_bounded_change_when_queues_would_strand() -> None:
    net = SignalNetwork.from_graph(grid_city(2, 2))
    snap = _snapshot(net, 700.0, 700.0)  # heavy: a short green would strand the queue left by the 42 s red
    clocks = {t: SignalClock.for_intersection(ix) for t, ix in net.intersections.items()}
    cons = SignalConstraints()
    recs, diag = recommend(net, snap, clocks, 600.0, cons)
    assert not diag["bounded_change_waived"]
    for tid, r in recs.items():
        assert not check_greens(net.intersections[tid], list(r.green_s), cons, [42, 42])


def test_stdio_controller_protocol(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from ops.controller import ControllerError, resolve_network, run_stdio
    from roadnet import dump_trafficnet

    path = tmp_path / "network.json"
    path.write_text(json.dumps(dump_trafficnet(grid_city(2, 2))))
    lines = []
    for k in range(10):
        ts = f"2025-01-06T07:{k // 2:02d}:{(k % 2) * 30:02d}Z"
        for seg in ("left0A0", "bottom0A0"):
            for i in (0, 1):
                lines.append(json.dumps(_loop(f"{seg}_{i}", seg, "mid_link", ts, 3)))
                lines.append(json.dumps(_loop(f"{seg}_{i}", seg, "stop_line", ts, 3)))
    lines.append("not json")
    lines.append(json.dumps({"type": "plan_request", "ts": "2025-01-06T07:05:00Z", "t_s": 300}))
    lines.append(json.dumps({"type": "plan_request", "ts": "2025-01-06T07:10:00Z", "t_s": 600}))
    out = io.StringIO()
    monkeypatch.delenv("CITYBRAIN_CONTROLLER_LOG", raising=False)
    run_stdio(path, stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out)
    answers = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(answers) == 2  # exactly one line per plan request, nothing else on stdout
    net = SignalNetwork.from_graph(grid_city(2, 2))
    for plan in answers:
        assert set(plan) == set(net.intersections)
        for tid, spec in plan.items():
            assert not check_greens(net.intersections[tid], spec["green_s"], SignalConstraints())
    # network resolution: explicit path, then CITYBRAIN_NETWORK, then $SUMO_SCENARIO/network.json, then
    # ./scenario/network.json; a source that is set but missing is an error (no silent fallback)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYBRAIN_NETWORK", raising=False)
    monkeypatch.delenv("SUMO_SCENARIO", raising=False)
    with pytest.raises(ControllerError, match="no network"):
        resolve_network(None)
    (tmp_path / "scenario").mkdir()
    (tmp_path / "scenario" / "network.json").write_text("{}")
    assert resolve_network(None) == Path("scenario") / "network.json"
    monkeypatch.setenv("SUMO_SCENARIO", str(tmp_path))
    assert resolve_network(None) == path
    monkeypatch.setenv("CITYBRAIN_NETWORK", str(tmp_path / "missing.json"))
    with pytest.raises(ControllerError, match="CITYBRAIN_NETWORK"):
        resolve_network(None)
    assert resolve_network(path) == path


def test_turning_proportions_balanced_against_exit_counts(one: SignalNetwork) -> None:
    from models.signals import IntersectionModel, LaneModel, turning_proportions

    ix = one.intersections["A0"]
    # one lane with a through exit X (prior 1.0) and a left exit Y (prior 0.3)
    lane = LaneModel("a_0", "a", (0,), 1800.0, ("X", "Y"), ("s", "l"))
    one_lane = IntersectionModel("T", "T", ix.phase_durations_s, [0, 2], [3.0, 3.0], [lane], {"a": ["a_0"]}, [0, 0])
    # no exit counts: the prior, 1/1.3 and 0.3/1.3
    p = turning_proportions(one_lane, {"a_0": 600.0})
    assert p["a_0"]["X"] == pytest.approx(1 / 1.3) and p["a_0"]["Y"] == pytest.approx(0.3 / 1.3)
    # exits counted 300 / 300 veh/h: balanced to 0.5 / 0.5
    p = turning_proportions(one_lane, {"a_0": 600.0}, {"X": 300.0, "Y": 300.0})
    assert p["a_0"]["X"] == pytest.approx(0.5, abs=1e-6)


def test_progression_on_a_common_cycle() -> None:
    from models.signals import evaluate_plans

    # three signals in a row, 300 m apart at 50 km/h: 21.6 s from stop line to stop line (+2 s to get going).
    # With all phase-0 starts aligned, a 22 s cycle sends A0's eastbound departures into B0's next green
    # (share of arrivals on green above the green ratio); a 44 s cycle sends them into the red (below it).
    net = SignalNetwork.from_graph(grid_city(1, 3))
    east = {"left0A0": 600.0, "A0B0": 600.0, "B0C0": 600.0}
    q = {ln.lane_id: east.get(ln.segment_id, 0.0) / 2 for ix in net.intersections.values() for ln in ix.lanes}
    res = {}
    for C in (22, 44):
        g = (C - 6) // 2
        durs = {t: ix.durations([g, C - 6 - g]) for t, ix in net.intersections.items()}
        ev = evaluate_plans(net, durs, dict.fromkeys(durs, 0.0), q, None, PolicyConfig())
        i = next(i for i, (_, ln) in enumerate(ev.rows) if ln.lane_id == "A0B0_0")
        assert ev.coordinated
        res[C] = (float(ev.p_green[i]), (C - 6 - g) / C, float(ev.d_uniform_s[i]))
    (p22, lam22, d22), (p44, lam44, d44) = res[22], res[44]
    assert p22 > lam22 + 0.1
    assert p44 < lam44 - 0.1
    assert d22 < d44 / 1.5
    # different cycles: no profile, HCM random arrivals (share on green = green ratio)
    durs = {t: ix.durations([8, 8]) for t, ix in net.intersections.items()}
    durs["C0"] = net.intersections["C0"].durations([9, 8])
    ev = evaluate_plans(net, durs, dict.fromkeys(durs, 0.0), q)
    assert not ev.coordinated


def test_heavy_vehicles_lower_saturation_flow(one: SignalNetwork) -> None:
    # 20 % heavy vehicles at E_T = 2: f_HV = 1 / (1 + 0.2 x 1) = 0.833
    net = one.with_heavy_vehicles({"left0A0": 0.2})
    sat = {ln.lane_id: ln.sat_flow_veh_h for ln in net.intersections["A0"].lanes}
    assert sat["left0A0_0"] == pytest.approx(1800 / 1.2)
    assert sat["top0A0_0"] == pytest.approx(1800)
