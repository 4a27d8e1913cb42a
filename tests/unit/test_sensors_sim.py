"""Unit tests of the device simulator (``sensors_sim``): schema, timing, determinism, publishing, scenarios."""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import orjson
import pytest

import roadnet
from sensors_sim import (
    JsonlPublisher,
    RawEvent,
    Scenario,
    Simulator,
    device_topic,
    iter_ticks,
    load_scenario,
    simulate,
    status_topic,
)
from sensors_sim.events import Event
from sensors_sim.testing import tiny_graph
from streams.records import validate_event

START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

LOOP_FIELDS: dict[str, Any] = {
    "type": str,
    "detector_id": str,
    "segment_id": str,
    "lane": str,
    "lane_index": int,
    "role": str,
    "ts": str,
    "interval_s": int,
    "count": int,
    "occupancy": float,
    "speed_kmh": (float, type(None)),
}
CAMERA_FIELDS: dict[str, Any] = {
    "type": str,
    "camera_id": str,
    "segment_id": str,
    "lanes": int,
    "ts": str,
    "interval_s": int,
    "counts": dict,
    "count_total": int,
    "queue_len_veh": int,
    "queue_max_veh": int,
    "occupancy": float,
    "speed_kmh": (float, type(None)),
}


@pytest.fixture
def tiny() -> nx.MultiDiGraph:
    return tiny_graph()


def _events(G: nx.MultiDiGraph, duration_s: float, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ts, events in iter_ticks(G, kw.pop("start", START), **kw):
        if ts > START + timedelta(seconds=duration_s):
            break
        for ev in events:
            assert isinstance(ev, dict)
            out.append(ev)
    return out


def check_schema(ev: dict[str, Any]) -> None:
    """Exact schema-v1 fields and types, and citybrain's own validator accepts it unchanged."""
    fields = LOOP_FIELDS if ev["type"] == "loop" else CAMERA_FIELDS
    assert set(ev) == set(fields), ev
    for key, typ in fields.items():
        assert isinstance(ev[key], typ), (key, ev)
        assert not isinstance(ev[key], bool), (key, ev)
    assert TS_RE.match(ev["ts"])
    assert 0.0 <= ev["occupancy"] <= 1.0
    if ev["speed_kmh"] is not None:
        assert math.isfinite(ev["speed_kmh"]) and 0.0 <= ev["speed_kmh"] < 150.0
    if ev["type"] == "loop":
        assert ev["role"] in ("mid_link", "stop_line")
        assert ev["count"] >= 0 and ev["lane_index"] >= 0
        assert (ev["speed_kmh"] is None) == (ev["count"] == 0), ev
    else:
        assert list(ev["counts"]) == ["car", "truck", "bus"]
        assert ev["count_total"] == sum(ev["counts"].values())
        assert 0 <= ev["queue_len_veh"] <= ev["queue_max_veh"] <= 15 * ev["lanes"]
    norm = validate_event(orjson.loads(orjson.dumps(ev)))
    assert {k: v for k, v in norm.items() if k != "ts_s"} == ev


def test_events_are_schema_exact(tiny: nx.MultiDiGraph) -> None:
    events = _events(tiny, 1800)
    assert {e["type"] for e in events} == {"loop", "camera"}
    for ev in events:
        check_schema(ev)
    loops = [e for e in events if e["type"] == "loop"]
    assert {e["interval_s"] for e in loops} == {30}
    assert {e["interval_s"] for e in events if e["type"] == "camera"} == {60}
    rec = tiny.graph["detectors"]["loop_stop_WX_1"]
    ev = next(e for e in loops if e["detector_id"] == "loop_stop_WX_1")
    assert (ev["segment_id"], ev["lane"], ev["lane_index"], ev["role"]) == (
        rec["segment_id"],
        rec["lane"],
        rec["lane_index"],
        rec["role"],
    )
    assert sum(e["count"] for e in loops) > 100  # traffic flows
    assert any(e["queue_max_veh"] > 0 for e in events if e["type"] == "camera")  # queues at the red


def test_timestamps_aligned_and_ordered(tiny: nx.MultiDiGraph) -> None:
    events = _events(tiny, 600)
    ts = [datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for e in events]
    assert ts == sorted(ts)
    assert ts[0] == START + timedelta(seconds=30)
    for e, t in zip(events, ts, strict=True):
        assert int(t.timestamp()) % e["interval_s"] == 0
    for t in sorted(set(ts)):
        kinds = [e["type"] for e, tt in zip(events, ts, strict=True) if tt == t]
        assert kinds == sorted(kinds, key=lambda k: k != "loop")  # loops before cameras


def test_unaligned_start_reports_only_full_intervals(tiny: nx.MultiDiGraph) -> None:
    ticks = iter_ticks(tiny, START + timedelta(seconds=17.5))
    first_ts, first = next(ticks)
    assert first_ts == START + timedelta(seconds=30) and first == []  # [07:30:00, 07:30:30) began too early
    second_ts, second = next(ticks)
    assert second_ts == START + timedelta(seconds=60)
    assert [e["type"] for e in second if isinstance(e, dict)] == ["loop"] * 9  # 60 s cameras: partial too


def test_same_seed_same_events_and_truth(tiny: nx.MultiDiGraph) -> None:
    def run(seed: int) -> tuple[bytes, bytes]:
        truth: list[dict[str, Any]] = []
        sim = Simulator(tiny, START, seed=seed, on_truth=truth.extend)
        events = [e for _ in range(30) for e in sim.advance()[1]]
        return orjson.dumps(events), orjson.dumps(truth)

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_scenario_seed_is_the_default_seed(tiny: nx.MultiDiGraph) -> None:
    a = _events(tiny, 300, scenario=Scenario(seed=11))
    b = _events(tiny, 300, seed=11)
    c = _events(tiny, 300, seed=3, scenario=Scenario(seed=11))
    assert a == b != c


def test_jsonl_publisher_writes_what_simulate_produced(tiny: nx.MultiDiGraph, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    progress: list[tuple[int, datetime]] = []
    with JsonlPublisher(path) as pub:
        n = simulate(
            tiny,
            pub,
            start=START,
            duration_s=300,
            speed=0,
            seed=5,
            on_progress=lambda k, ts: progress.append((k, ts)),
        )
    # 9 loops every 30 s (10 ticks) + 2 cameras every 60 s (5 ticks).
    assert n == 9 * 10 + 2 * 5
    lines = path.read_bytes().splitlines()
    assert len(lines) == n
    assert [orjson.loads(line) for line in lines] == _events(tiny, 300, seed=5)
    assert progress[-1] == (n, START + timedelta(seconds=300))
    assert len(progress) == 10


def test_jsonl_publisher_writes_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    with JsonlPublisher(path) as pub:
        pub.publish({"type": "loop", "detector_id": "d", "segment_id": "s"})
        pub.publish(RawEvent("loop", "d", "s", b'{"type":"loop","ts":'))
    assert path.read_bytes() == b'{"type":"loop","detector_id":"d","segment_id":"s"}\n{"type":"loop","ts":\n'


def test_simulate_paces_and_stops(tiny: nx.MultiDiGraph, tmp_path: Path) -> None:
    with JsonlPublisher(tmp_path / "a.jsonl") as pub:
        t0 = time.monotonic()
        n = simulate(tiny, pub, start=START, duration_s=120, speed=600.0)
        assert 0.18 <= time.monotonic() - t0 < 2.0  # 120 simulated s at 600x = 0.2 wall s
    assert n == 9 * 4 + 2 * 2

    stop = threading.Event()

    def progress(k: int, ts: datetime) -> None:
        if ts >= START + timedelta(seconds=90):
            stop.set()

    with JsonlPublisher(tmp_path / "b.jsonl") as pub:
        n = simulate(tiny, pub, start=START, duration_s=None, speed=0, on_progress=progress, stop=stop)
    assert n == 9 * 3 + 2 * 1


def test_simulate_announces_devices(tiny: nx.MultiDiGraph) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.devices: list[tuple[str, str]] = []
            self.events: list[Event] = []

        def announce(self, devices: list[tuple[str, str]]) -> None:
            self.devices.extend(devices)

        def publish(self, event: Event) -> None:
            self.events.append(event)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    rec = Recorder()
    simulate(tiny, rec, start=START, duration_s=60, speed=0)
    assert sorted(d for _, d in rec.devices) == sorted(tiny.graph["detectors"])
    assert {t for t, _ in rec.devices} == {"loop", "camera"}
    assert len(rec.events) == 9 * 2 + 2


def test_grid_city_runs() -> None:
    G = roadnet.grid_city(rows=2, cols=2)
    events = _events(G, 600, seed=1)
    n_loops = sum(1 for r in G.graph["detectors"].values() if r["kind"] == "loop")
    n_cams = len(G.graph["detectors"]) - n_loops
    assert len(events) == n_loops * 20 + n_cams * 10
    for ev in events:
        check_schema(ev)


def test_device_and_status_topics() -> None:
    loop = {"type": "loop", "detector_id": "loop_mid_A0A1_0"}
    cam = {"type": "camera", "camera_id": "cam_A0A1"}
    assert device_topic(loop, "demo") == "city/demo/loop/loop_mid_A0A1_0"
    assert device_topic(cam, "demo", topic_root="x") == "x/demo/camera/cam_A0A1"
    assert device_topic(RawEvent("camera", "cam_A0A1", "A0A1", b"x"), "demo") == "city/demo/camera/cam_A0A1"
    assert status_topic("loop", "l1", "demo") == "city/demo/loop/l1/status"
    assert status_topic("sim", "client-1", "demo", "r") == "r/demo/sim/client-1/status"


def test_scenario_file(tmp_path: Path) -> None:
    doc = {
        "seed": 4,
        "demand": {"scale": 1.5, "profile": [[7, 0.5], [8, 1.0], [9, 0.5]], "exit_share": 0.0},
        "incidents": [
            {"segment_id": "WX", "lane_index": 1, "start_s": 60, "duration_s": 120, "kind": "blocked_lane"},
            {"edge": "NX", "lane_index": None, "start_s": 0, "duration_s": 60, "kind": "slowdown", "speed_ms": 2.0},
        ],
        "faults": [{"fraction": 0.5, "kinds": ["zero"]}, {"device_id": "loop_mid_WX_0", "kind": "late", "delay_s": 90}],
        "signals": {"X": {"green_s": [40, 14]}},
    }
    path = tmp_path / "s.json"
    path.write_bytes(orjson.dumps(doc))
    sc = load_scenario(path)
    assert sc.seed == 4 and sc.demand.scale == 1.5 and sc.demand.exit_share == 0.0
    assert sc.demand.factor(START.timestamp()) == pytest.approx(1.5 * 0.75)  # 07:30 between 0.5 and 1.0
    assert [i.incident_id for i in sc.incidents] == ["INC1", "INC2"]
    assert sc.incidents[1].segment_id == "NX" and sc.incidents[1].speed_kmh == pytest.approx(7.2)
    sim = Simulator(tiny_graph(), START, scenario=sc)
    assert sim.faults["loop_mid_WX_0"].kind == "late" and sim.faults["loop_mid_WX_0"].delay_s == 90
    assert sum(f.kind == "zero" for f in sim.faults.values()) in (5, 6)  # half of 11; later rules win
    assert sim.model.signals.plan("X")["green_s"] == [40.0, 14.0]

    for bad in (
        {"demand": {"scael": 1}},
        {"incidents": [{"segment_id": "WX", "start_s": 0, "duration_s": 1, "kind": "fire"}]},
        {"faults": [{"device_id": "x", "kind": "sleepy"}]},
        {"bogus": 1},
    ):
        with pytest.raises(ValueError):
            Scenario.from_dict(bad)
    bad_inc = {
        "incidents": [{"segment_id": "ZZ", "lane_index": 0, "start_s": 0, "duration_s": 1, "kind": "blocked_lane"}]
    }
    with pytest.raises(ValueError, match="unknown segment"):
        Simulator(tiny_graph(), START, scenario=Scenario.from_dict(bad_inc))
