"""Issue #15: a device's clock running ahead, and a feed gone quiet, through the window agent in memory.

Like ``test_agents_in_memory``: Faust's ``agent.test_context()`` drives the ``segment-windows`` agent without a
broker, and ``Pipeline.send_raw`` (the boundary to a Kafka producer) is replaced by a recorder. The same
faults run on real brokers in ``tests/faults/test_clock_and_stale.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from streams.records import parse_ts
from tests.unit.test_agents_in_memory import capture_sends, pipe  # noqa: F401 (fixture)

SEG = "A0A1"
LOOPS = [f"loop_{role}_{SEG}_{lane}" for role in ("mid", "stop") for lane in (0, 1)]
T0 = parse_ts("2025-01-06T07:00:00Z")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def reading(det: str, ts_s: float, count: int = 4) -> dict[str, Any]:
    lane = int(det[-1])
    return {
        "type": "loop",
        "detector_id": det,
        "segment_id": SEG,
        "lane": f"{SEG}_{lane}",
        "lane_index": lane,
        "role": "mid_link" if "_mid_" in det else "stop_line",
        "ts": _iso(ts_s),
        "ts_s": ts_s,
        "interval_s": 30,
        "count": count + lane,
        "occupancy": 0.05 + 0.01 * lane,
        "speed_kmh": 40.0 + lane,
        "received_at": time.time(),
    }


def step(n: int, devices: list[str] = LOOPS) -> bytes:
    """One bundle: every device's reading for the 30-s step ``n``."""
    return orjson.dumps([reading(d, T0 + 30 * n, count=3 + n % 3) for d in devices])


async def drive(pipe: Any, messages: list[bytes], done: Any) -> None:  # noqa: F811
    agent = pipe.app.agents["segment-windows"]
    async with agent.test_context() as ctx:
        for m in messages:
            await ctx.put(m)
            await asyncio.sleep(0.06)  # one batch per step, as a live feed arrives
        for _ in range(100):
            if done():
                break
            await asyncio.sleep(0.05)


class Sent:
    def __init__(self, pipe: Any, sent: list[tuple[str, Any, Any]]) -> None:  # noqa: F811
        self.pipe, self.sent = pipe, sent

    def of(self, topic: str) -> list[dict[str, Any]]:
        name = self.pipe.settings.topics.name(topic)
        return [orjson.loads(v) for t, _, v in self.sent if t == name]


async def test_a_device_stamped_with_the_real_time_is_dead_lettered_and_reported(
    pipe: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo's defect: the stream runs ≈ 33 h behind the worker clock; one reading stamped with the real time
    passed the worker-clock check and made every later reading of the segment late."""
    sent: list[tuple[str, Any, Any]] = []
    capture_sends(pipe, monkeypatch, sent)
    out = Sent(pipe, sent)
    future = orjson.dumps([reading(LOOPS[0], float(int(time.time())))])
    msgs = [step(n) for n in range(1, 7)] + [future] + [step(n) for n in range(7, 17)]

    def done() -> bool:
        return len({s["ts"] for s in out.of("segment_state") if s["segment_id"] == SEG}) >= 7

    await drive(pipe, msgs, done)
    states = {s["ts"]: s for s in out.of("segment_state") if s["segment_id"] == SEG}
    dead = out.of("dead_letter")
    assert [d["reason_class"] for d in dead] == ["clock_skew"]
    assert "ahead of the segment's stream time" in dead[0]["reason"] and " s " in dead[0]["reason"]
    # the segment's windows close normally, with every reading of the other devices
    for m in range(1, 8):
        assert states[_iso(T0 + 60 * m)]["n_readings"] == 8, m
        assert states[_iso(T0 + 60 * m)]["closed_by"] == "watermark"
    faults = [a for a in out.of("alerts") if a["type"].startswith("device_fault.") and a["subject"] == LOOPS[0]]
    assert faults[0]["type"] == "device_fault.new" and faults[0]["data"]["status"] == "clock"
    assert faults[0]["data"]["evidence"]["ahead_s"] > 30 * 3600
    # its next plausible reading clears the clock fault
    assert faults[1]["type"] == "device_fault.cleared" and faults[1]["data"]["fault"] == "clock"
    assert pipe.worker_metrics.rejected.labels("clock_skew")._value.get() == 1
    assert pipe.worker_metrics.rejected.labels("late")._value.get() == 0
    assert pipe.worker_metrics.device_faults.labels("clock")._value.get() == 1


async def test_a_device_that_stops_while_its_segment_goes_on_is_reported_silent(
    pipe: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, Any, Any]] = []
    capture_sends(pipe, monkeypatch, sent)
    out = Sent(pipe, sent)
    msgs = [step(n) for n in range(1, 5)] + [step(n, LOOPS[:3]) for n in range(5, 21)]

    def done() -> bool:
        return any(a["subject"] == LOOPS[3] for a in out.of("alerts"))

    await drive(pipe, msgs, done)
    faults = [a for a in out.of("alerts") if a["subject"] == LOOPS[3]]
    assert faults and faults[0]["type"] == "device_fault.new" and faults[0]["data"]["status"] == "silent"
    states = {s["ts"]: s for s in out.of("segment_state") if s["segment_id"] == SEG}
    # the segment goes on: its windows still close on the remaining devices' time
    assert _iso(T0 + 60 * 8) in states and states[_iso(T0 + 60 * 8)]["closed_by"] == "watermark"


def test_health_is_degraded_while_no_event_arrives_and_ok_again_after_one(
    pipe: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stale feed: wall-clock age of the last arrival (stream time stops with the feed, so it cannot tell).

    The Kafka consumer's assignment is faked (no broker in unit tests): a worker owning one partition."""
    from prometheus_client import generate_latest

    from streams.web import health

    monkeypatch.setattr(pipe.app.consumer, "assignment", lambda: {("events", 0)})
    stale_after = pipe.settings.window.stale_after_s
    assert stale_after == pipe.settings.window.idle_close_s  # the default
    now = time.time()
    pipe.feed.started_wall_s = now - stale_after - 5  # nothing arrived since the start
    code, body = health(pipe)
    assert (code, body["status"]) == (200, "degraded")
    assert "no device events arrived" in body["reasons"][0] and body["feed"]["stale"]
    assert b"citybrain_feed_last_arrival_age_seconds " in generate_latest(pipe.registry)
    pipe.feed.arrived(SEG, now - stale_after - 1)  # one arrival, long ago: still stale, one stale segment
    code, body = health(pipe)
    assert body["status"] == "degraded" and body["feed"]["stale_segments"] == 1
    pipe.feed.arrived("A1A0", now)
    code, body = health(pipe)
    assert (code, body["status"], body["reasons"]) == (200, "ok", [])
    assert body["feed"]["last_arrival_age_s"] < 5 and body["feed"]["stale_segments"] == 1
    age = [
        float(line.split()[1])
        for line in generate_latest(pipe.registry).decode().splitlines()
        if line.startswith("citybrain_feed_last_arrival_age_seconds ")
    ]
    assert age and age[0] < 5


async def test_the_window_agent_records_arrivals_and_each_states_last_arrival(
    pipe: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, Any, Any]] = []
    capture_sends(pipe, monkeypatch, sent)
    out = Sent(pipe, sent)
    t_start = time.time()
    await drive(pipe, [step(n) for n in range(1, 6)], lambda: len(out.of("segment_state")) >= 1)
    assert pipe.feed.last_arrival_wall_s is not None and pipe.feed.last_arrival_wall_s >= t_start
    assert set(pipe.feed.segment_arrival_wall_s) == {SEG}
    (first, *_) = out.of("segment_state")
    assert parse_ts(first["last_arrival_at"]) >= int(t_start)


@pytest.mark.skipif(
    __import__("shutil").which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_the_feed_stale_alert_fires_when_no_worker_hears_anything(tmp_path: Any) -> None:
    """``CitybrainFeedStale`` evaluated by promtool on a scrape series: one worker fresh keeps it quiet; both
    silent for over 2 min (+1 min ``for``) fire it."""
    import subprocess
    from pathlib import Path

    import yaml

    rules = Path(__file__).resolve().parents[2] / "ops/prometheus/citybrain-rules.yml"
    (rule,) = [
        r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if r["alert"] == "CitybrainFeedStale"
    ]
    description = rule["annotations"]["description"]
    (tmp_path / "t.yml").write_text(
        f"""rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'citybrain_feed_last_arrival_age_seconds{{instance="w1"}}'
        values: '0+15x40'
      - series: 'citybrain_feed_last_arrival_age_seconds{{instance="w2"}}'
        values: '0 1 2 1 0 1 2 1 0 1 2 1 0+15x28'
    alert_rule_test:
      - eval_time: 4m
        alertname: CitybrainFeedStale
        exp_alerts: []
      - eval_time: 9m
        alertname: CitybrainFeedStale
        exp_alerts:
          - exp_labels: {{severity: critical}}
            exp_annotations:
              summary: "no device events have reached any citybrain worker for 6m 0s"
              description: "{description}"
"""
    )
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
