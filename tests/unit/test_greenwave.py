"""Emergency green wave (models.greenwave): the vehicle's arrival windows fall inside the greens it is given,
minimum greens and yellows hold in the temporary plans, the route follows the current travel times."""

from __future__ import annotations

import time

import networkx as nx
import pytest

from models.greenwave import PhaseSpan, fastest_route, plan_green_wave
from models.signals import SignalClock, SignalConstraints
from roadnet import grid_city


@pytest.fixture(scope="module")
def city() -> nx.MultiDiGraph:
    return grid_city(4, 5)  # 20 signals, 300 m blocks, 50 km/h (21.6 s per block), plan 42/3/42/3


def _check_plan(G: nx.MultiDiGraph, plan_actions: list, cons: SignalConstraints, departure: float) -> None:
    for a in plan_actions:
        assert a.action in ("none", "extend", "early")
        w0, w1 = a.window_s
        g0, g1 = a.green_s
        # the whole arrival window is inside the green the vehicle is given
        assert g0 <= w0 + 1e-9 and w1 <= g1 + 1e-9
        assert w0 <= a.arrival_s <= w1
        rec = G.graph["traffic_lights"][a.tls_id]
        for sp in a.temporary_plan:
            assert isinstance(sp, PhaseSpan)
            dur = sp.end_s - sp.start_s
            if sp.kind != "green":  # yellow / all-red keep their duration
                assert dur == pytest.approx(rec["phases"][sp.position]["duration_s"])
            elif sp.position not in a.serving_phases:  # truncated greens keep their minimum (or had started)
                assert dur >= cons.min_green_s - 1e-9 or sp.start_s < departure
        if a.temporary_plan:  # the served green is the last span of the temporary plan
            last = a.temporary_plan[-1]
            assert last.position in a.serving_phases
            assert (last.start_s, last.end_s) == pytest.approx(a.green_s)


@pytest.mark.parametrize("departure", [0.0, 11.0, 29.5, 47.0, 80.0])
def test_arrivals_inside_the_greens(city: nx.MultiDiGraph, departure: float) -> None:
    cons = SignalConstraints()
    plan = plan_green_wave(city, "bottom0", "top4", departure, constraints=cons)
    assert plan.route[0] == "bottom0A0" and plan.route[-1] == "E3top4"
    assert plan.all_green
    assert len(plan.actions) == sum(1 for n in plan.nodes if city.nodes[n]["tls_id"])
    _check_plan(city, plan.actions, cons, departure)
    # no waiting: the arrival is the sum of the segment travel times
    free = sum(city.edges[city.graph["segment_index"][s] + (s,)]["free_flow_travel_time_s"] for s in plan.route)
    assert plan.arrival_s == pytest.approx(departure + free)


def test_arrival_times_follow_the_route(city: nx.MultiDiGraph) -> None:
    plan = plan_green_wave(city, "left1", "right1", 100.0)
    t = 100.0
    idx = city.graph["segment_index"]
    arrivals = []
    for s in plan.route:
        t += city.edges[idx[s] + (s,)]["free_flow_travel_time_s"]
        if city.nodes[idx[s][1]]["tls_id"]:
            arrivals.append(t)
    assert [a.arrival_s for a in plan.actions] == pytest.approx(arrivals)


def test_red_arrival_is_served_by_extension_or_early_start(city: nx.MultiDiGraph) -> None:
    # every signal runs 42 s N-S, 3 s yellow, 42 s E-W, 3 s yellow from t = 0. Eastbound from left0 the
    # vehicle reaches A0 after 21.6 s, inside N-S green [0, 42): its E-W green must start early.
    cons = SignalConstraints()
    plan = plan_green_wave(city, "left0", "right0", 0.0, constraints=cons)
    first = plan.actions[0]
    assert first.tls_id == "A0" and first.action == "early"
    # N-S green truncated to its end at max(min green 5 s, needed): E-W starts by the window start
    ns, yellow, ew = first.temporary_plan
    assert ns.position == 0 and yellow.kind == "yellow" and ew.position == 2
    assert ew.start_s <= first.window_s[0] + 1e-9
    assert ns.end_s - ns.start_s >= 5.0
    _check_plan(city, plan.actions, cons, 0.0)


def test_hold_when_green_just_ended(city: nx.MultiDiGraph) -> None:
    # the E-W green of A0 runs [45, 87); a vehicle leaving left0 at 67 s reaches A0 at 88.6 s (window ends
    # 88.6 + 4 + 2.16 = 94.8 s): holding E-W green ~8 s beats cutting the next N-S green
    plan = plan_green_wave(city, "left0", "right0", 67.0)
    first = plan.actions[0]
    assert first.action == "extend"
    assert first.green_s[0] == pytest.approx(45.0) and first.green_s[1] == pytest.approx(first.window_s[1])
    assert first.change_s == pytest.approx(first.window_s[1] - 87.0)


def test_minimum_green_can_force_a_wait(city: nx.MultiDiGraph) -> None:
    # A0's N-S green runs [15, 57) (its E-W green ended at 12 s); with a 30 s minimum it cannot end before
    # 45 s, + 3 s yellow: E-W from 48 s. The vehicle leaves left0 at 20 s and reaches A0 at 41.6 s: it waits
    # 6.4 s, and every later arrival is 6.4 s later.
    cons = SignalConstraints(min_green_s=30.0)
    clocks = {"A0": SignalClock([42.0, 3.0, 42.0, 3.0], 15.0)}
    plan = plan_green_wave(city, "left0", "right0", 20.0, clocks=clocks, constraints=cons)
    first = plan.actions[0]
    assert first.action == "wait"
    assert first.green_s[0] == pytest.approx(48.0)
    assert first.wait_s == pytest.approx(48.0 - 41.6, abs=0.01)
    assert not plan.all_green
    assert plan.actions[1].arrival_s == pytest.approx(48.0 + 21.6, abs=0.01)
    ns = first.temporary_plan[0]
    assert ns.position == 0 and ns.end_s - ns.start_s == pytest.approx(30.0)


def test_route_uses_current_travel_times(city: nx.MultiDiGraph) -> None:
    segs, _nodes, _times = fastest_route(city, "A0", "C0")
    assert segs == ["A0B0", "B0C0"]
    slow = {"A0B0": 500.0}
    segs2, _, times2 = fastest_route(city, "A0", "C0", slow)
    assert "A0B0" not in segs2 and sum(times2) < 500.0
    plan = plan_green_wave(city, "A0", "C0", 0.0, travel_times=slow)
    assert plan.route == segs2


def test_unknown_node_raises(city: nx.MultiDiGraph) -> None:
    with pytest.raises(nx.NodeNotFound):
        plan_green_wave(city, "nowhere", "A0", 0.0)


def test_thousand_intersections_under_a_second() -> None:
    G = grid_city(40, 25)  # 1,000 signalised intersections (grid_city allows at most 26 columns)
    t0 = time.perf_counter()
    plan = plan_green_wave(G, "bottom0", "top24", 30.0)
    elapsed = time.perf_counter() - t0
    assert len(plan.actions) >= 60
    assert elapsed < 1.0
    _check_plan(G, [a for a in plan.actions if a.action != "wait"], SignalConstraints(), 30.0)
