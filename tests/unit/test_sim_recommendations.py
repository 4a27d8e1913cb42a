"""Closed loop: citybrain's signal-recommendation records change the simulated city's green splits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from models.signals import Recommendation, recommendation_id
from sensors_sim import JsonlPublisher, Simulator, simulate
from sensors_sim.recommendations import PlanInbox, parse_recommendation, simulator_plans
from sensors_sim.testing import tiny_graph

START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)
T0 = START.timestamp()


def _record(tls_id: str, green_s: tuple[int, ...], t_s: float = T0) -> bytes:
    """The bytes the worker's signal planner publishes (``streams/agents/signals.py``)."""
    rec = Recommendation(
        recommendation_id=recommendation_id(tls_id, t_s),
        tls_id=tls_id,
        period_start_s=t_s,
        install_at_s=t_s + 60,
        cycle_s=float(sum(green_s) + 6),
        green_s=green_s,
        offset_s=None,
        expected={"WX": {"delay_before_s": 30.0, "delay_after_s": 20.0, "vc_before": 0.9, "vc_after": 0.7}},
        reason="test",
        confidence=0.8,
    )
    d = rec.to_dict() | {"delay_before_s": 30.0, "delay_after_s": 20.0}
    return orjson.dumps(d)


def test_recommendation_record_changes_green_splits_at_the_next_cycle() -> None:
    sim = Simulator(tiny_graph(), START, seed=1)
    wx = sim.model.net.index["WX"]
    inbox = PlanInbox()
    apply = simulator_plans(sim, inbox)
    ts, _ = sim.advance()  # t = 30 s: mid-cycle (cycle 60 s from offset 0)
    assert inbox.put(_record("X", (40, 14)))
    apply(ts.timestamp())
    assert inbox.stats.applied == 1 and inbox.stats.rejected == 0
    assert sim.model.signals.plan("X")["green_s"] == [27.0, 27.0]  # not before the cycle boundary
    sim.advance()  # to t = 60 s: phase 0 starts, the plan is installed
    sim.advance()  # to t = 90 s
    assert sim.model.signals.plan("X")["green_s"] == [40.0, 14.0]
    assert sim.model.signals.plan_changes[-1] == (T0 + 60, "X", [40.0, 3.0, 14.0, 3.0])
    green = [bool(sim.model.signals.green(T0 + 60 + k)[wx]) for k in range(60)]
    assert green == [True] * 40 + [False] * 20


def test_unknown_lights_and_invalid_phases_are_rejected_with_reasons(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(tiny_graph(), START, seed=1)
    inbox = PlanInbox()
    apply = simulator_plans(sim, inbox)
    assert inbox.put(_record("nowhere", (30, 30)))
    assert inbox.put(_record("X", (20, 20, 20)))  # three greens for two green phases
    assert not inbox.put(b"{not json")
    assert not inbox.put(orjson.dumps({"tls_id": "X", "green_s": [30, -4]}))
    assert not inbox.put(orjson.dumps({"green_s": [30, 30]}))
    with caplog.at_level("WARNING", logger="sensors_sim.recommendations"):
        apply(T0)
    s = inbox.stats
    assert (s.received, s.applied, s.rejected) == (5, 0, 5)
    reasons = " | ".join(s.reasons)
    assert "unknown traffic light 'nowhere'" in reasons
    assert "X: 2 green phases, got 3 values" in reasons
    assert "not JSON" in reasons and "finite seconds" in reasons and "no tls_id" in reasons
    assert "unknown traffic light" in caplog.text
    assert sim.model.signals._pending == {}  # nothing scheduled


def test_latest_recommendation_per_light_wins() -> None:
    inbox = PlanInbox()
    inbox.put(_record("X", (40, 14)))
    inbox.put(_record("X", (20, 34)))
    assert inbox.drain() == {"X": {"green_s": [20.0, 34.0]}}
    assert inbox.stats.superseded == 1 and inbox.drain() == {}


def test_parse_recommendation_reads_the_planner_record() -> None:
    tls, plan, rid = parse_recommendation(_record("X", (33, 21)))
    assert (tls, plan, rid) == ("X", {"green_s": [33.0, 21.0]}, recommendation_id("X", T0))


def test_simulate_closed_loop_applies_recommendations(tmp_path: Path) -> None:
    G = tiny_graph()
    sim = Simulator(G, START, seed=1)
    inbox = PlanInbox()
    apply = simulator_plans(sim, inbox)
    ticks: list[float] = []

    def plans(t_s: float) -> None:
        ticks.append(t_s)
        if len(ticks) == 3:  # a record arrives while the run goes on
            inbox.put(_record("X", (45, 9), t_s))
        apply(t_s)

    with JsonlPublisher(tmp_path / "e.jsonl") as pub:
        simulate(G, pub, start=START, duration_s=300, speed=0, plans=plans, simulator=sim)
    assert inbox.stats.applied == 1
    assert sim.model.signals.plan_changes == [(T0 + 120, "X", [45.0, 3.0, 9.0, 3.0])]
