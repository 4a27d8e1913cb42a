"""The backbone estimator on hand-computed windows."""

from __future__ import annotations

import pytest

from models.segment_state import estimate_segment_state, is_congested, level_of_service


def loop(lane: str, ts: str, count: int, occ: float, speed: float | None, role: str = "mid_link") -> dict:
    return {
        "type": "loop",
        "detector_id": f"loop_{role}_{lane}",
        "segment_id": "S",
        "lane": lane,
        "lane_index": int(lane[-1]),
        "role": role,
        "ts": ts,
        "interval_s": 30,
        "count": count,
        "occupancy": occ,
        "speed_kmh": speed,
    }


def test_two_lane_window_by_hand() -> None:
    readings = [
        loop("S_0", "t1", 5, 0.08, 40.0),
        loop("S_0", "t2", 3, 0.06, 30.0),
        loop("S_1", "t1", 4, 0.05, 50.0),
        loop("S_1", "t2", 2, 0.04, 45.0),
    ]
    st = estimate_segment_state(readings, length_m=300.0, lanes=2, speed_limit_kmh=50.0)
    # lane 0: 8 veh / 60 s = 480 veh/h; lane 1: 6 / 60 s = 360 veh/h; mean 420 x 2 lanes
    assert st.flow_veh_h == 840.0
    # lane 0: (0.08*30 + 0.06*30) / 60 = 0.07; lane 1: 0.045; mean 0.0575
    assert st.occupancy == pytest.approx(0.0575)
    # harmonic, count-weighted: 14 / (5/40 + 3/30 + 4/50 + 2/45) = 40.0636
    assert st.speed_kmh == pytest.approx(40.064, abs=1e-3)
    assert st.speed_ratio == pytest.approx(0.8013, abs=1e-4)
    assert st.los == "B"
    assert st.density_veh_km == pytest.approx(840 / 40.0636, abs=1e-2)
    assert st.travel_time_s == pytest.approx(300 / (40.0636 / 3.6), abs=0.01)
    assert st.congested is False
    assert st.n_readings == 4 and st.n_detectors == 2
    assert st.sources == ("mid_link",)


def test_standing_queue_over_loop_is_zero_speed_and_congested() -> None:
    readings = [loop("S_0", "t1", 0, 0.9, None), loop("S_0", "t2", 0, 1.0, None)]
    st = estimate_segment_state(readings, length_m=280.0, lanes=1, speed_limit_kmh=50.0)
    assert st.flow_veh_h == 0.0
    assert st.speed_kmh == 0.0
    assert st.los == "F"
    assert st.congested is True


def test_empty_road_has_no_speed() -> None:
    st = estimate_segment_state([loop("S_0", "t1", 0, 0.0, None)], length_m=280.0, lanes=1, speed_limit_kmh=50.0)
    assert st.speed_kmh is None and st.los is None and st.congested is False


def test_camera_only_segment() -> None:
    cam = {
        "type": "camera",
        "camera_id": "cam_S",
        "segment_id": "S",
        "lanes": 2,
        "ts": "t",
        "interval_s": 60,
        "counts": {"car": 9, "truck": 1},
        "count_total": 10,
        "queue_len_veh": 3,
        "queue_max_veh": 8,
        "occupancy": 0.2,
        "speed_kmh": 12.0,
    }
    st = estimate_segment_state([cam], length_m=300.0, lanes=2, speed_limit_kmh=50.0)
    assert st.flow_veh_h == 600.0  # 10 veh in 60 s
    assert st.speed_kmh == 12.0
    assert st.occupancy == 0.2
    assert st.sources == ("camera",)
    assert st.confidence < 1.0


@pytest.mark.parametrize(
    ("ratio", "los"), [(0.9, "A"), (0.86, "A"), (0.85, "B"), (0.6, "C"), (0.45, "D"), (0.35, "E"), (0.3, "F")]
)
def test_los_bands(ratio: float, los: str) -> None:
    assert level_of_service(ratio) == los


def test_congested_needs_density() -> None:
    assert is_congested(0.4, 19.9, lanes=2) is False
    assert is_congested(0.4, 20.0, lanes=2) is True
    assert is_congested(0.5, 50.0, lanes=2) is False
    assert is_congested(None, 50.0, lanes=2) is False
