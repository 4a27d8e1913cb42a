"""Unit tests of the device simulator (``sensors_sim``): schema, timing, determinism, physics, publishing."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import orjson
import pytest

import roadnet
from roadnet.graph import SCHEMA, index_segments
from sensors_sim import JsonlPublisher, TrafficState, device_topic, iter_ticks, simulate
from sensors_sim.traffic import uniform_delay_s

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


def _segment(G: nx.MultiDiGraph, u: str, v: str, length: float, lanes: int, signalised: bool) -> None:
    sid = f"{u}{v}"
    tls_id = "X" if signalised else None
    g_ratio = 0.45 if signalised else 1.0
    det_ids: list[str] = []
    lane_ids = [f"{sid}_{i}" for i in range(lanes)]
    for i, lid in enumerate(lane_ids):
        roles = [("mid_link", f"loop_mid_{lid}", length / 2)]
        if signalised:
            roles.append(("stop_line", f"loop_stop_{lid}", length - 5.0))
        for role, did, pos in roles:
            G.graph["detectors"][did] = {
                "detector_id": did,
                "kind": "loop",
                "segment_id": sid,
                "interval_s": 30,
                "pos_m": pos,
                "dist_to_stop_line_m": length - pos,
                "tls_id": tls_id,
                "lane": lid,
                "lane_index": i,
                "role": role,
            }
            det_ids.append(did)
    if signalised:
        did = f"cam_{sid}"
        G.graph["detectors"][did] = {
            "detector_id": did,
            "kind": "camera",
            "segment_id": sid,
            "interval_s": 60,
            "pos_m": length - 100.0,
            "dist_to_stop_line_m": 100.0,
            "tls_id": tls_id,
            "lanes": lane_ids,
            "zone_length_m": 100.0,
        }
        det_ids.append(did)
    G.add_edge(
        u,
        v,
        key=sid,
        segment_id=sid,
        length_m=length,
        lanes=lanes,
        speed_limit_kmh=50.0,
        capacity_veh_h=lanes * 1800.0 * g_ratio,
        signalised_end=signalised,
        free_flow_travel_time_s=length / (50.0 / 3.6),
        lane_detail=[
            {"lane_id": lid, "index": i, "length_m": length, "speed_limit_kmh": 50.0, "turns": ["s"]}
            for i, lid in enumerate(lane_ids)
        ],
        geometry_xy_m=[[G.nodes[n]["x_m"], G.nodes[n]["y_m"]] for n in (u, v)],
        detector_ids=det_ids,
    )


@pytest.fixture
def tiny() -> nx.MultiDiGraph:
    """W→X and N→X (2 lanes, 200 m, signalised at X), X→E (1 lane, 150 m, free): 9 loops, 2 cameras."""
    G = nx.MultiDiGraph(schema=SCHEMA, name="tiny", crs="local-m", detectors={}, traffic_lights={})
    for n, x, y, kind, tls in [
        ("W", 0.0, 200.0, "dead_end", None),
        ("N", 200.0, 400.0, "dead_end", None),
        ("X", 200.0, 200.0, "traffic_light", "X"),
        ("E", 350.0, 200.0, "dead_end", None),
    ]:
        G.add_node(n, x_m=x, y_m=y, kind=kind, tls_id=tls, fringe=tls is None)
    _segment(G, "W", "X", 200.0, 2, True)
    _segment(G, "N", "X", 200.0, 2, True)
    _segment(G, "X", "E", 150.0, 1, False)
    G.graph["traffic_lights"]["X"] = {
        "tls_id": "X",
        "node": "X",
        "cycle_s": 60.0,
        "offset_s": 0.0,
        "phases": [
            {"index": 0, "duration_s": 27.0, "kind": "green", "green_approaches": ["WX"]},
            {"index": 1, "duration_s": 3.0, "kind": "yellow", "green_approaches": []},
            {"index": 2, "duration_s": 27.0, "kind": "green", "green_approaches": ["NX"]},
            {"index": 3, "duration_s": 3.0, "kind": "yellow", "green_approaches": []},
        ],
        "approaches": [
            {
                "segment_id": sid,
                "lanes": [f"{sid}_0", f"{sid}_1"],
                "green_phases": [gp],
                "fixed_green_ratio": 0.45,
            }
            for sid, gp in (("WX", 0), ("NX", 2))
        ],
    }
    index_segments(G)
    roadnet.validate_graph(G)
    return G


def _events(G: nx.MultiDiGraph, duration_s: float, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ts, events in iter_ticks(G, START, **kw):
        if ts > START + timedelta(seconds=duration_s):
            break
        out.extend(events)
    return out


def _check_schema(ev: dict[str, Any]) -> None:
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
        assert all(isinstance(v, int) and v >= 0 for v in ev["counts"].values())
        assert ev["count_total"] == sum(ev["counts"].values())
        assert 0 <= ev["queue_len_veh"] <= ev["queue_max_veh"] <= 15 * ev["lanes"]


def test_events_are_schema_exact(tiny: nx.MultiDiGraph) -> None:
    events = _events(tiny, 1800)
    assert {e["type"] for e in events} == {"loop", "camera"}
    for ev in events:
        _check_schema(ev)
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
    start = START + timedelta(seconds=17.5)
    ticks = iter_ticks(tiny, start)
    first_ts, first = next(ticks)
    assert first_ts == START + timedelta(seconds=30) and first == []  # [07:30:00, 07:30:30) began too early
    second_ts, second = next(ticks)
    assert second_ts == START + timedelta(seconds=60)
    assert [e["type"] for e in second] == ["loop"] * 9  # the 60 s cameras' first interval was partial too


def test_same_seed_same_events(tiny: nx.MultiDiGraph) -> None:
    a = _events(tiny, 900, seed=7)
    b = _events(tiny, 900, seed=7)
    c = _events(tiny, 900, seed=8)
    assert orjson.dumps(a) == orjson.dumps(b)
    assert orjson.dumps(a) != orjson.dumps(c)


def test_near_capacity_segment_is_slower_and_denser(tiny: nx.MultiDiGraph) -> None:
    state = TrafficState(tiny, START.timestamp(), seed=3, hot_segments=["WX"])
    hot, quiet = state.index["WX"], state.index["NX"]
    assert state.x[hot] > 0.75 > state.x[quiet]
    assert state.speed_kmh[hot] < state.speed_kmh[quiet]
    assert state.density_veh_km[hot] > state.density_veh_km[quiet]
    events = _events(tiny, 3600, seed=3, state=state)

    def mean(seg: str, kind: str, key: str, role: str | None = None) -> float:
        vals = [
            e[key]
            for e in events
            if e["segment_id"] == seg and e["type"] == kind and e.get("role") == role and e[key] is not None
        ]
        return float(np.mean(vals))

    for role in ("mid_link", "stop_line"):
        assert mean("WX", "loop", "occupancy", role) > mean("NX", "loop", "occupancy", role)
    assert mean("WX", "loop", "speed_kmh", "stop_line") < mean("NX", "loop", "speed_kmh", "stop_line")
    assert mean("WX", "loop", "count", "mid_link") > mean("NX", "loop", "count", "mid_link")
    assert mean("WX", "camera", "occupancy") > mean("NX", "camera", "occupancy")
    assert mean("WX", "camera", "speed_kmh") < mean("NX", "camera", "speed_kmh")
    assert mean("WX", "camera", "queue_max_veh") > mean("NX", "camera", "queue_max_veh")


def test_uniform_delay_formula() -> None:
    d = uniform_delay_s(np.array([90.0, 90.0, 90.0]), np.array([0.5, 0.5, 1.0]), np.array([0.5, 2.0, 0.5]))
    assert d[0] == pytest.approx(0.5 * 90 * 0.25 / (1 - 0.25))
    assert d[1] == pytest.approx(0.5 * 90 * 0.25 / (1 - 0.95 * 0.5))  # x capped at 0.95
    assert d[2] == 0.0


def test_signal_plan_drives_stop_line_queue(tiny: nx.MultiDiGraph) -> None:
    state = TrafficState(tiny, START.timestamp(), seed=0)
    lanes = [state.lane_index["WX_0"], state.lane_index["NX_0"]]
    # Phase 0 (WX green) covers [0, 27) s of the cycle; 07:30:00 is a cycle start (offset 0, C = 60 s).
    assert state.green_at(START.timestamp() + 10)[lanes].tolist() == [True, False]
    assert state.green_at(START.timestamp() + 40)[lanes].tolist() == [False, True]
    queue = []
    for s in range(1, 61):
        state.step(START.timestamp() + s)
        queue.append(state.lane_queue_veh[lanes[0]])
    assert max(queue[:27]) < 1e-9 < queue[40] < queue[58]  # WX queues only during its red


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


def test_simulate_paces_and_stops(tiny: nx.MultiDiGraph, tmp_path: Path) -> None:
    import threading
    import time

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


def test_grid_city_runs(tmp_path: Path) -> None:
    G = roadnet.grid_city(rows=2, cols=2)
    events = _events(G, 600, seed=1)
    n_loops = sum(1 for r in G.graph["detectors"].values() if r["kind"] == "loop")
    n_cams = len(G.graph["detectors"]) - n_loops
    assert len(events) == n_loops * 20 + n_cams * 10
    for ev in events:
        _check_schema(ev)
        assert ev["interval_s"] in (30, 60)


def test_device_topic() -> None:
    loop = {"type": "loop", "detector_id": "loop_mid_A0A1_0"}
    cam = {"type": "camera", "camera_id": "cam_A0A1"}
    assert device_topic(loop, "demo") == "city/demo/loop/loop_mid_A0A1_0"
    assert device_topic(cam, "demo", topic_root="x") == "x/demo/camera/cam_A0A1"
