"""bench.corpus_report: the corpus page from score_corpus.py reports (keys as score_corpus.py writes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.corpus_report import (
    detection_cell,
    load_results,
    pair_results,
    plot_points,
    render_page,
    result_name,
    seed_role,
    seed_set,
)
from bench.eval_corpus import parse_seeds


def block(detected: int, incidents: int, mean: float | None, median: float | None) -> dict[str, Any]:
    return {
        "incidents": incidents,
        "detected": detected,
        "detection_rate": round(detected / incidents, 3),
        "detection_rate_ci95": [0.1, 0.9],
        "mean_time_to_detect_s": mean,
        "median_time_to_detect_s": median,
    }


def report(system: str, loop_s: int, cam_s: int, seeds: list[int], detected: int, fa_normal: float) -> dict[str, Any]:
    inc = block(detected, 6, 120.0, 90.0)
    inc.update(
        false_alarm_episodes_incident_run=3,
        false_alarms_per_detector_hour_incident_run=0.01,
        false_alarm_episodes_normal_run=4,
        false_alarms_per_detector_hour_normal_run=fa_normal,
        sensor_faults={
            "faults": 2,
            "faults_alarmed": 1,
            "false_alarm_episodes_on_faulty_segments": 2,
            "same_window_normal_run_episodes": 0,
            "per_kind": {
                "frozen": {"faults": 1, "alarmed": 1, "episodes": 2},
                "silent": {"faults": 1, "alarmed": 0, "episodes": 0},
            },
        },
        per_category={"slowdown": block(1, 4, 300.0, 300.0), "blocked_lane_mid": block(1, 2, 60.0, 60.0)},
        per_family={"grid": block(detected, 6, 120.0, 90.0)},
    )
    states = {run: {"speed_mae_kmh": 2.26, "congested_f1": 0.947} for run in ("normal", "incident")}
    setting = {"system": system, "loop_s": loop_s, "cam_s": cam_s, "seeds": seeds, "failed": []}
    return {"incidents": inc, "states": states, "setting": setting}


def test_seed_names_and_roles() -> None:
    assert seed_set([3, 1, 2]) == "1-3"
    assert seed_set([1, 5]) == "1_5"
    assert seed_set([7]) == "7"
    assert seed_role([1, 99]) == "training"
    assert seed_role([100, 129]) == "held out"
    assert seed_role([99, 100]) == "mixed"
    assert result_name("citybrain", 30, 60, [100, 101]) == "30-60_100-101_citybrain.json"
    assert parse_seeds("1 2 5-7") == [1, 2, 5, 6, 7]
    assert parse_seeds("100-102,4") == [100, 101, 102, 4]


def test_detection_cell_gives_count_rate_and_interval() -> None:
    assert detection_cell(block(18, 36, 300.0, 214.0)) == "18/36 = 0.50 (0.10–0.90)"
    assert detection_cell(None) == "–"


def test_results_pair_systems_by_interval_and_seeds_coarse_first() -> None:
    results = [
        report("citybrain", 10, 10, [1, 2], 3, 0.02),
        report("baseline", 30, 60, [100, 101], 5, 0.2),
        report("citybrain", 30, 60, [100, 101], 4, 0.03),
        report("citybrain", 30, 60, [1, 2], 2, 0.03),
    ]
    keys = [k for k, _ in pair_results(results)]
    assert keys == [(30, 60, (1, 2)), (30, 60, (100, 101)), (10, 10, (1, 2))]
    assert set(pair_results(results)[1][1]) == {"citybrain", "baseline"}


def test_page_puts_both_systems_side_by_side_per_category_and_fault_kind() -> None:
    held_out = [100, 101]
    page = render_page([report("citybrain", 30, 60, held_out, 4, 0.03), report("baseline", 30, 60, held_out, 5, 0.2)])
    lines = page.splitlines()
    slow = next(ln for ln in lines if "| slowdown |" in ln)
    assert slow.startswith("| 30 s / 60 s | 100-101 (held out) | slowdown | 1/4 = 0.25")
    assert slow.count("300 / 300 s") == 2  # citybrain and baseline columns
    overall = [ln for ln in lines if ln.startswith("| 30 s / 60 s") and "(replay)" in ln]
    assert len(overall) == 1 and "0.0300 (4)" in overall[0] and "1/2 (2; 0)" in overall[0]
    assert "| frozen | 1 | 1 (2) | 1 (2) |" in page


def test_plot_points_use_normal_run_false_alarms(tmp_path: Path) -> None:
    for r in (report("citybrain", 30, 60, [1, 2], 2, 0.03), {"no": "setting"}):
        (tmp_path / f"{len(list(tmp_path.iterdir()))}.json").write_text(json.dumps(r))
    results = load_results(tmp_path)
    assert len(results) == 1
    (p,) = plot_points(results)
    assert (p["system"], p["fa_per_det_h"], p["ttd_median_s"], p["role"]) == ("citybrain", 0.03, 90.0, "training")


def test_explain_helpers_follow_the_harness_rules() -> None:
    from bench.corpus_explain import episodes, lane_share, matches, upstream_of

    edges = [
        {"id": "a_b", "from": "a", "to": "b"},
        {"id": "b_a", "from": "b", "to": "a"},
        {"id": "c_b", "from": "c", "to": "b"},
        {"id": "b_d", "from": "b", "to": "d"},
    ]
    up = upstream_of(edges)
    assert up["b_d"] == {"a_b", "c_b"} and up["b_a"] == {"c_b"}  # not its own U-turn twin
    inc = {"segment_id": "b_d", "start_s": 100.0, "end_s": 400.0}
    assert matches(1000 + 150, "a_b", inc, 1000, up, 300)
    assert matches(1000 + 700, "b_d", inc, 1000, up, 300) and not matches(1000 + 701, "b_d", inc, 1000, up, 300)
    assert not matches(1000 + 99, "b_d", inc, 1000, up, 300) and not matches(1000 + 150, "b_a", inc, 1000, up, 300)
    al = [{"segment_id": "x", "_t": t} for t in (0, 200, 450, 800)] + [{"segment_id": "y", "_t": 210}]
    assert [len(e) for e in episodes(al, 300)] == [3, 1, 1]  # 0-200-450 chain, 800 is 350 s after 450
    loops = [
        {"_t": t, "lane": ln, "count": c}
        for t, ln, c in [(30, "L0", 4), (30, "L1", 0), (60, "L0", 2), (60, "L1", 2), (90, "L0", 0), (90, "L1", 0)]
    ]
    share, zeros, steps = lane_share(loops, "L1", 0, 90)
    assert (share, zeros, steps) == (0.25, 1, 3)  # 2 of 8 vehicles; at 90 s nobody counted: no zero step


def test_incident_position_against_the_mid_loop() -> None:
    from bench.corpus_explain import relative_to_loop

    assert relative_to_loop({"pos_m": 80.0}, 127.0) == "upstream (127 m)"
    assert relative_to_loop({"pos_m": 200.0}, 127.0) == "downstream (127 m)"
    assert relative_to_loop({"pos_m": None, "from_pos_m": 100.0, "to_pos_m": 150.0}, 127.0) == "covers (127 m)"
    assert relative_to_loop({"pos_m": 80.0}, None) == "–"
