"""The traffic model of ``sensors_sim``: conservation, spill-back, signals and plans, turning ratios, incidents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import roadnet
from sensors_sim import JsonlPublisher, Scenario, Simulator, TrafficModel, simulate
from sensors_sim.network import compile_network, turn_direction
from sensors_sim.scenario import DemandSpec, IncidentSpec
from sensors_sim.testing import corridor_graph, tiny_graph

START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)
T0 = START.timestamp()
SUMO_NET = Path(__file__).resolve().parents[2].parent / "shared/eval/sumo/scenario/network.json"
QUIET: dict[str, Any] = {"spread": 0.0, "noise_sigma": 0.0, "exit_share": 0.0, "interior_veh_h_per_lane_km": 0.0}


def test_vehicles_are_conserved_exactly() -> None:
    G = roadnet.grid_city(3, 3)
    incidents = (
        IncidentSpec("I1", "A1B1", None, 100, 400, "blocked_lane"),  # a closed road
        IncidentSpec("I2", "B1C1", 0, 50, 600, "blocked_lane"),
        IncidentSpec("I3", "B0B1", 1, 0, 900, "slowdown", speed_kmh=8.0),
    )
    m = TrafficModel(G, T0 + 0.4, seed=2, demand=DemandSpec(scale=2.0), incidents=incidents)
    v0 = m.vehicles()
    t = m.t_s
    for _ in range(900):
        t = float(np.floor(t) + 1.0)  # the first step is 0.6 s long
        m.step(t)
        assert m.vehicles() - v0 == pytest.approx(m.inflow_veh - m.outflow_veh, abs=1e-8)
    assert m.inflow_veh > 500 and m.outflow_veh > 500
    assert (m.n >= -1e-12).all() and (m.n <= m.jam + 1e-9).all() and (m.q >= -1e-12).all()


def _corridor_run(incidents: tuple[IncidentSpec, ...], minutes: int = 15) -> tuple[Simulator, list[dict[str, Any]]]:
    G = corridor_graph(3, 300.0, 2)
    sc = Scenario.from_dict({"demand": {**QUIET, "segment_veh_h": {"P0P1": 2400.0}, "profile": [[0, 1.0]]}})
    sc = Scenario(demand=sc.demand, incidents=incidents)
    truth: list[dict[str, Any]] = []
    sim = Simulator(G, START, seed=1, scenario=sc, on_truth=truth.extend)
    for _ in range(minutes * 2):
        sim.advance()
    return sim, truth


def test_blocked_lane_builds_a_queue_upstream() -> None:
    block = (IncidentSpec("B", "P2P3", 1, 60, 3600, "blocked_lane", pos_m=200.0),)
    _, base_truth = _corridor_run(())
    inc, inc_truth = _corridor_run(block)

    def last(truth: list[dict[str, Any]], seg: str) -> dict[str, Any]:
        return next(r for r in reversed(truth) if r["segment_id"] == seg)

    # Without the incident the corridor flows freely.
    assert last(base_truth, "P1P2")["speed_ratio"] > 0.9 and last(base_truth, "P2P3")["speed_ratio"] > 0.9
    # With it, the queue has filled the blocked segment up to the stalled car and spilled back upstream.
    m, net = inc.model, inc.model.net
    i = net.index["P2P3"]
    cells = np.arange(net.first_cell[i], net.last_cell[i] + 1)
    upstream = cells[net.cell_start_m[cells] + net.cell_len_m[cells] <= 200.0]
    assert (m.n[upstream] / m.jam[upstream]).min() > 0.5
    assert last(inc_truth, "P1P2")["density_veh_km"] > 4 * last(base_truth, "P1P2")["density_veh_km"]
    assert last(inc_truth, "P1P2")["speed_kmh"] < 0.5 * last(base_truth, "P1P2")["speed_kmh"]
    assert last(inc_truth, "P1P2")["congested"] and last(inc_truth, "P1P2")["los"] == "F"
    # Downstream of the block: the reduced capacity, 2 lanes x (the fundamental diagram's peak at the 20 km/h
    # passing speed: 150 x 18 x 20 / 38 = 1421 veh/h/lane) x 1/2 open x 0.8 merging = 1137 veh/h.
    assert last(inc_truth, "P2P3")["flow_veh_h"] == pytest.approx(2 * 150 * 18 * 20 / 38 * 0.5 * 0.8, rel=0.02)
    assert inc.incident_records()[0]["status"] == "active"


def test_blocked_lane_empties_its_lane_at_the_loops() -> None:
    block = (IncidentSpec("B", "P1P2", 1, 0, 3600, "blocked_lane", pos_m=100.0),)
    sim, _ = _corridor_run(block, minutes=5)
    events = [e for _ in range(10) for e in sim.advance()[1] if isinstance(e, dict)]
    count = {lane: sum(e["count"] for e in events if e.get("lane") == lane) for lane in ("P1P2_0", "P1P2_1")}
    assert count["P1P2_1"] == 0 < count["P1P2_0"]  # the mid-link loop at 150 m is past the stalled car


def test_slowdown_lowers_speed() -> None:
    slow = (IncidentSpec("S", "P1P2", None, 0, 3600, "slowdown", speed_kmh=10.0),)
    _, truth = _corridor_run(slow, minutes=6)
    rec = next(r for r in reversed(truth) if r["segment_id"] == "P1P2")
    assert 8.0 < rec["speed_kmh"] <= 10.0 + 1e-6
    lane_slow = (IncidentSpec("S", "P1P2", 0, 0, 3600, "slowdown", speed_kmh=10.0),)
    sim, _ = _corridor_run(lane_slow, minutes=3)
    ev = [e for _ in range(6) for e in sim.advance()[1] if isinstance(e, dict) and e["segment_id"] == "P1P2"]
    v = {ln: np.mean([e["speed_kmh"] for e in ev if e["lane"] == ln and e["speed_kmh"]]) for ln in ("P1P2_0", "P1P2_1")}
    assert v["P1P2_0"] < 15.0 < 40.0 < v["P1P2_1"]


def test_stop_line_loops_count_nothing_during_red() -> None:
    # Light X: WX green [0, 27) s of each minute, NX green [30, 57) s; loops report every 30 s.
    sim = Simulator(tiny_graph(), START, seed=3)
    events = [e for _ in range(40) for e in sim.advance()[1] if isinstance(e, dict)]
    stop = [e for e in events if e["type"] == "loop" and e["role"] == "stop_line"]
    for seg, red_second in (("WX", 0), ("NX", 30)):  # interval ending at :00 covers [:30, :00), at :30 [:00, :30)
        red = [e for e in stop if e["segment_id"] == seg and int(e["ts"][17:19]) == red_second]
        green = [e for e in stop if e["segment_id"] == seg and int(e["ts"][17:19]) != red_second]
        assert len(red) == len(green) == 40
        assert sum(e["count"] for e in red) == 0
        assert all(e["speed_kmh"] is None for e in red)
        assert sum(e["count"] for e in green) > 60
        assert np.mean([e["occupancy"] for e in red]) > np.mean([e["occupancy"] for e in green])


def test_set_plan_starts_at_the_next_cycle() -> None:
    m = TrafficModel(tiny_graph(), T0, demand=DemandSpec(**QUIET))
    wx = m.net.index["WX"]
    for s in range(1, 31):
        m.step(T0 + s)
    assert m.set_plan("X", [40, 14]) == [40.0, 3.0, 14.0, 3.0]
    assert not m.signals.green(T0 + 40)[wx]  # still the old plan: WX red in [30, 60)
    for s in range(31, 62):  # the plan is installed by the step that starts at the cycle start, t = 60 s
        m.step(T0 + s)
    green = [bool(m.signals.green(T0 + 60 + k)[wx]) for k in range(60)]
    assert green == [True] * 40 + [False] * 20
    assert m.signals.plan("X")["cycle_s"] == 60.0
    # immediate: the new cycle starts now
    m.set_plan("X", cycle_s=90, splits=[2, 1], immediate=True)
    assert m.signals.plan("X")["green_s"] == [56.0, 28.0] and m.signals.plan("X")["t0_s"] == m.t_s
    assert m.signals.green(m.t_s + 55)[wx] and not m.signals.green(m.t_s + 56)[wx]


def test_plan_limits_and_errors() -> None:
    m = TrafficModel(tiny_graph(), T0)
    assert m.set_plan("X", [2, 50]) == [5.0, 3.0, 50.0, 3.0]
    assert m.set_plan("X", [150, 150])[0] + m.signals.check_plan("X", {"green_s": [150, 150]})[2] <= 180 - 6
    assert len(m.signals.warnings) == 3
    for bad in ({"green_s": [10]}, {"splits": [1, 1], "cycle_s": 4}, {"foo": 1}, {"green_s": [float("nan"), 1]}):
        with pytest.raises(ValueError):
            m.signals.check_plan("X", bad)
    with pytest.raises(ValueError, match="unknown traffic light"):
        m.set_plan("Y", [10, 10])


def test_closed_loop_plans_are_applied(tmp_path: Path) -> None:
    G = tiny_graph()
    sim = Simulator(G, START, seed=1)
    calls: list[float] = []

    def plans(t_s: float) -> dict[str, dict[str, Any]] | None:
        calls.append(t_s)
        return {"X": {"green_s": [45, 9]}, "nowhere": {"green_s": [1]}} if len(calls) == 2 else None

    with JsonlPublisher(tmp_path / "e.jsonl") as pub:
        simulate(G, pub, start=START, duration_s=300, speed=0, plans=plans, simulator=sim)
    assert calls[0] == T0 + 30 and len(calls) == 10
    assert sim.model.signals.plan("X")["green_s"] == [45.0, 9.0]
    t_change, tls, durations = sim.model.signals.plan_changes[-1]
    assert (t_change, tls, durations) == (T0 + 60, "X", [45.0, 3.0, 9.0, 3.0])  # next phase 0: at t = 60 s
    assert sim.apply_plans({"nowhere": {"green_s": [1]}}) != []


def test_scheduled_signal_override_from_scenario() -> None:
    sc = Scenario.from_dict({"signals": {"X": {"green_s": [20, 34], "at_s": 90}}})
    sim = Simulator(tiny_graph(), START, scenario=sc)
    for _ in range(6):
        sim.advance()
    assert [c[0] - T0 for c in sim.model.signals.plan_changes] == [120.0]


def test_turn_directions() -> None:
    assert turn_direction(90, 90) == "s"
    assert turn_direction(90, 180) == "r"  # heading east, then south
    assert turn_direction(90, 0) == "l"
    assert turn_direction(90, 270) == "t"
    assert turn_direction(None, 0) == "s"


def test_turning_ratios_from_lane_turns() -> None:
    net = compile_network(roadnet.grid_city(3, 3), exit_share=0.1)
    assert net.turn_source["A1B1"] == "turns"
    mv = np.flatnonzero(net.mov_seg == net.index["A1B1"])
    beta = {("x" if net.mov_to[m] < 0 else net.segment_ids[net.mov_to[m]]): net.mov_beta[m] for m in mv}
    # lane 0 = right + straight, lane 1 = straight + left; no U-turn back to A1; 10 % leave the network
    assert beta == pytest.approx({"B1C1": 0.45, "B1B0": 0.225, "B1B2": 0.225, "x": 0.1})
    assert net.turn_source["A1left1"] == "sink"
    total = np.bincount(net.mov_seg, weights=net.mov_beta)
    assert total == pytest.approx(np.ones(net.n_segments))
    pair_total = np.bincount(net.pair_mov, weights=net.pair_w)
    assert pair_total == pytest.approx(np.ones(len(net.mov_seg)))


def test_turning_ratios_without_turns_follow_capacity() -> None:
    G = roadnet.grid_city(3, 3)
    for _, _, d in G.edges(data=True):
        for ln in d["lane_detail"]:
            ln["turns"] = []
    G.edges["B1", "C1", "B1C1"]["capacity_veh_h"] *= 2
    net = compile_network(G)
    assert net.turn_source["A1B1"] == "capacity"
    mv = np.flatnonzero(net.mov_seg == net.index["A1B1"])
    beta = {net.segment_ids[net.mov_to[m]]: net.mov_beta[m] for m in mv}
    assert beta == pytest.approx({"B1C1": 0.5, "B1B0": 0.25, "B1B2": 0.25})


@pytest.mark.skipif(not SUMO_NET.exists(), reason="SUMO harness scenario not available")
def test_turning_ratios_from_sumo_links() -> None:
    G = roadnet.load_network(SUMO_NET)
    net = compile_network(G)
    assert net.turn_source["A2B2"] == "links"
    mv = np.flatnonzero(net.mov_seg == net.index["A2B2"])
    beta = {net.segment_ids[net.mov_to[m]]: (net.mov_beta[m], net.mov_dir[m]) for m in mv}
    assert beta == {"B2B1": (0.25, "r"), "B2C2": (0.5, "s"), "B2B3": (0.25, "l")}
    # the left turn uses lane 1 only
    m_left = next(m for m in mv if net.mov_dir[m] == "l")
    lanes = [net.lane_ids[ln] for ln in net.pair_lane[net.pair_mov == m_left]]
    assert lanes == ["A2B2_1"]


def test_warm_start_and_time_of_day() -> None:
    G = roadnet.grid_city(2, 2)
    night = TrafficModel(G, datetime(2025, 1, 6, 2, 0, tzinfo=UTC).timestamp())
    peak = TrafficModel(G, datetime(2025, 1, 6, 8, 0, tzinfo=UTC).timestamp())
    empty = TrafficModel(G, T0, warm_start=False)
    assert empty.vehicles() == 0.0
    assert 0 < night.vehicles() < 0.5 * peak.vehicles()


def test_step_rejects_bad_times() -> None:
    m = TrafficModel(tiny_graph(), T0)
    with pytest.raises(ValueError):
        m.step(T0 + 1.5)
    with pytest.raises(ValueError):
        m.step(T0)
    with pytest.raises(ValueError, match="lanes"):
        TrafficModel(tiny_graph(), T0, incidents=(IncidentSpec("I", "XE", 3, 0, 10, "blocked_lane"),))
    _ = timedelta


def test_turning_ratio_overrides() -> None:
    G = roadnet.grid_city(3, 3)
    net = compile_network(G, exit_share=0.1, turning_ratios={"A1B1": {"B1C1": 3, "B1B2": 1}, "B1C1": {"exit": 1}})
    assert net.turn_source["A1B1"] == "scenario"
    mv = np.flatnonzero(net.mov_seg == net.index["A1B1"])
    assert {net.segment_ids[net.mov_to[m]]: net.mov_beta[m] for m in mv} == pytest.approx({"B1C1": 0.75, "B1B2": 0.25})
    mv = np.flatnonzero(net.mov_seg == net.index["B1C1"])
    assert net.mov_to[mv].tolist() == [-1]
    for bad in ({"A1B1": {"C1C2": 1}}, {"A1B1": {"B1C1": 0}}, {"A1B1": {"B1C1": -1}}):
        with pytest.raises(ValueError, match="turning_ratios"):
            compile_network(G, turning_ratios=bad)
    sc = Scenario.from_dict({"turning_ratios": {"A1B1": {"B1C1": 1}}})
    assert Simulator(G, START, scenario=sc).model.net.turn_source["A1B1"] == "scenario"


def test_simulator_set_plan_forms() -> None:
    sim = Simulator(tiny_graph(), START)
    assert sim.set_plan("X", [30, 24]) == [30.0, 3.0, 24.0, 3.0]
    assert sim.set_plan("X", {"cycle_s": 66, "splits": [1, 1]}) == [30.0, 3.0, 30.0, 3.0]
    assert sim.set_plan("X", cycle_s=46, splits=[3, 1], immediate=True) == [30.0, 3.0, 10.0, 3.0]
    assert sim.model.signals.plan("X")["cycle_s"] == 46.0
