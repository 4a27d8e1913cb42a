"""Ground truth of ``sensors_sim``: it matches the simulation state and the SUMO harness's formats and scorers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import roadnet
from sensors_sim import JsonlPublisher, Scenario, Simulator, simulate
from sensors_sim.testing import tiny_graph
from sensors_sim.truth import GroundTruth, los

START = datetime(2025, 1, 6, 7, 0, tzinfo=UTC)
T0 = START.timestamp()
HARNESS = Path(__file__).resolve().parents[2].parent / "shared/eval/sumo"
GT_SAMPLE = HARNESS / "samples/ground_truth_normal_sample.jsonl"
INC_SAMPLE = HARNESS / "samples/incidents_truth.json"
GT_KEYS = [
    "segment_id",
    "ts_start",
    "ts_end",
    "interval_s",
    "speed_kmh",
    "free_flow_kmh",
    "speed_ratio",
    "density_veh_km",
    "flow_veh_h",
    "entered",
    "occupancy",
    "waiting_s",
    "time_loss_s",
    "sampled_veh_s",
    "los",
    "congested",
]


def test_ground_truth_matches_the_state() -> None:
    sim = Simulator(tiny_graph(), START, seed=2, scenario=Scenario.from_dict({"demand": {"scale": 1.5}}))
    m, net = sim.model, sim.model.net
    gt = GroundTruth(m)
    ns = net.n_segments
    veh_s = np.zeros(ns)
    for minute in range(1, 6):
        seg_n0 = np.bincount(net.cell_seg, weights=m.n, minlength=ns)
        veh_s[:] = 0.0
        for s in range(1, 61):
            veh_s += np.bincount(net.cell_seg, weights=m.n, minlength=ns)  # the state at the start of each second
            m.step(T0 + 60 * (minute - 1) + s)
            gt.observe(m)
        seg_n1 = np.bincount(net.cell_seg, weights=m.n, minlength=ns)
        recs = gt.emit(T0 + 60 * minute)
        raw = gt.raw
        # vehicles on each segment change by exactly what entered minus what left
        assert seg_n1 - seg_n0 == pytest.approx(raw["entered"] - raw["left"], abs=1e-9)
        assert raw["veh_s"] == pytest.approx(veh_s)
        for i, r in enumerate(recs):
            assert r["segment_id"] == net.segment_ids[i]
            assert r["ts_end"] == datetime.fromtimestamp(T0 + 60 * minute, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            length_km = net.length_m[i] / 1000
            assert r["density_veh_km"] == pytest.approx(veh_s[i] / 60 / length_km, abs=0.006)
            assert r["sampled_veh_s"] == pytest.approx(veh_s[i], abs=0.06)
            assert r["flow_veh_h"] == pytest.approx(raw["left"][i] * 60, abs=0.06)
            assert r["speed_kmh"] == pytest.approx(raw["veh_m"][i] / raw["veh_s"][i] * 3.6, abs=0.006)
            assert 0 < r["speed_kmh"] <= 50.0 + 1e-9
            assert r["speed_ratio"] == round(r["speed_kmh"] / 50.0, 3)
            assert r["los"] == los(r["speed_ratio"])
            assert r["congested"] == (r["speed_ratio"] < 0.5 and veh_s[i] / 60 / length_km >= 10 * net.lanes[i])
    rec = {r["segment_id"]: r for r in recs}
    # the unsignalised exit flows freely; the signalised approaches lose time at the red
    assert rec["XE"]["speed_ratio"] > 0.9 and rec["XE"]["waiting_s"] == 0.0
    assert rec["WX"]["speed_ratio"] < 0.8 and rec["WX"]["waiting_s"] > 0 and rec["WX"]["time_loss_s"] > 0


def test_ground_truth_format_is_the_harness_format() -> None:
    recs: list[dict[str, Any]] = []
    sim = Simulator(tiny_graph(), START, on_truth=recs.extend)
    for _ in range(4):
        sim.advance()
    assert len(recs) == 2 * 3
    for r in recs:
        assert list(r) == GT_KEYS
    if GT_SAMPLE.exists():
        sample = orjson.loads(GT_SAMPLE.read_bytes().splitlines()[0])
        assert list(sample) == GT_KEYS
        assert {k: type(v) for k, v in recs[0].items()} == {k: type(v) for k, v in sample.items()}


def test_simulate_writes_truth_files(tmp_path: Path) -> None:
    sc = Scenario.from_dict(
        {
            "incidents": [
                {"segment_id": "WX", "lane_index": 1, "start_s": 120, "duration_s": 60, "kind": "blocked_lane"},
                {
                    "segment_id": "NX",
                    "lane_index": None,
                    "start_s": 150,
                    "duration_s": 900,
                    "kind": "slowdown",
                    "speed_kmh": 9,
                },
                {"segment_id": "XE", "lane_index": 0, "start_s": 900, "duration_s": 60, "kind": "blocked_lane"},
            ],
            "faults": [{"device_id": "cam_NX", "kind": "malformed"}],
        }
    )
    with JsonlPublisher(tmp_path / "events.jsonl") as pub:
        n = simulate(tiny_graph(), pub, start=START, duration_s=600, speed=0, scenario=sc, truth_dir=tmp_path / "t")
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == n == 9 * 20 + 2 * 10
    gt = [orjson.loads(x) for x in (tmp_path / "t/ground_truth_edges.jsonl").read_bytes().splitlines()]
    assert len(gt) == 3 * 10 and gt[-1]["ts_end"] == "2025-01-06T07:10:00Z"
    incidents = json.loads((tmp_path / "t/incidents.json").read_text())
    assert [(i["incident_id"], i["status"], i["start_s"], i["end_s"]) for i in incidents] == [
        ("INC1", "done", 120.0, 180.0),
        ("INC2", "active", 150.0, 1050.0),  # still in effect at the end: its planned end
    ]  # INC3 never started
    assert incidents[0]["lane"] == "WX_1" and incidents[0]["start_ts"] == "2025-01-06T07:02:00Z"
    assert incidents[0]["end_ts"] == "2025-01-06T07:03:00Z" and incidents[0]["pos_m"] == 140.0
    assert incidents[1]["lane"] is None and incidents[1]["speed_kmh"] == 9.0 and incidents[1]["pos_m"] is None
    if INC_SAMPLE.exists():
        harness_keys = set(json.loads(INC_SAMPLE.read_text())[0]) - {"vehicle_id", "stop_reached_s"}
        assert harness_keys <= set(incidents[0])
    faults = [orjson.loads(x) for x in (tmp_path / "t/device_faults.jsonl").read_bytes().splitlines()]
    assert [(f["device_id"], f["kind"], f["rate"]) for f in faults] == [("cam_NX", "malformed", 1.0)]


@pytest.mark.skipif(not (HARNESS / "score_states.py").exists(), reason="SUMO harness not available")
def test_harness_state_scorer_reads_the_truth(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("harness_score_states", HARNESS / "score_states.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    recs: list[dict[str, Any]] = []
    sim = Simulator(roadnet.grid_city(2, 2), START, on_truth=recs.extend)
    for _ in range(20):
        sim.advance()
    path = tmp_path / "gt.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    perfect = [
        {"segment_id": r["segment_id"], "ts": r["ts_end"], "speed_kmh": r["speed_kmh"], "congested": r["congested"]}
        for r in recs
    ]
    score = mod.score(perfect, str(path))
    assert score["speed_mae_kmh"] == 0.0 and score["coverage"] == 1.0
    assert score["counts"]["matched"] == len(recs) == 10 * 24  # 24 segments, 10 minutes


@pytest.mark.skipif(not (HARNESS / "scenario/network.json").exists(), reason="SUMO harness not available")
def test_harness_incident_scorer_reads_the_incidents(tmp_path: Path) -> None:
    G = roadnet.load_network(HARNESS / "scenario/network.json")
    sc = Scenario.from_dict(
        {
            "incidents": [
                {"segment_id": "B2C2", "lane_index": 1, "start_s": 300, "duration_s": 300, "kind": "blocked_lane"}
            ]
        }
    )
    with JsonlPublisher(tmp_path / "e.jsonl") as pub:
        simulate(G, pub, start=START, duration_s=600, speed=0, scenario=sc, truth_dir=tmp_path / "inc")
    (tmp_path / "alarms.jsonl").write_text('{"ts": "2025-01-06T07:06:00Z", "segment_id": "B2C2"}\n')
    out = subprocess.run(
        [
            sys.executable,
            str(HARNESS / "score_incidents.py"),
            "--alarms",
            str(tmp_path / "alarms.jsonl"),
            "--truth",
            str(tmp_path / "inc/incidents.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"SUMO_OUT": str(tmp_path / "sumo_out"), "PATH": "/usr/bin:/bin"},  # the harness's scorer, as is
    )
    rep = json.loads(out.stdout)["incident_run"]
    assert rep["detected"] == 1 and rep["mean_time_to_detect_s"] == 60.0 and rep["false_alarm_episodes"] == 0
