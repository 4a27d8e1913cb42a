"""The congestion estimator and detector health on hand-computed windows.

Segment ``S``: 300 m, 2 lanes, 50 km/h, signalised; mid-link loops at 150 m, stop-line loops 5 m before the
stop line (30 s), a camera over the last 100 m of both lanes (60 s). So the upstream part is 200 m.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from models.congestion import (
    MEASUREMENT_VAR_1VEH_KMH2,
    PROCESS_VAR_KMH2,
    SegmentModel,
    build_segment_model,
    estimate_window,
    segment_models_from_graph,
    uniform_signal_delay_s,
)
from models.detector_health import assess_window, implausible_reason, new_health_state
from roadnet import grid_city

T0 = 1_736_146_800.0  # 2025-01-06T07:00:00Z


def detectors(camera: bool = True) -> list[dict[str, Any]]:
    dets: list[dict[str, Any]] = []
    for lane in (0, 1):
        dets.append(
            {"detector_id": f"mid_{lane}", "kind": "loop", "role": "mid_link", "lane_index": lane, "interval_s": 30}
        )
        dets.append(
            {"detector_id": f"stop_{lane}", "kind": "loop", "role": "stop_line", "lane_index": lane, "interval_s": 30}
        )
    if camera:
        dets.append(
            {"detector_id": "cam", "kind": "camera", "zone_length_m": 100.0, "lanes": ["S_0", "S_1"], "interval_s": 60}
        )
    return dets


def model(camera: bool = True) -> SegmentModel:
    edge = {"length_m": 300.0, "lanes": 2, "speed_limit_kmh": 50.0, "signalised_end": True}
    return build_segment_model("S", edge, detectors(camera), cycle_s=90.0, green_ratio=0.5)


def loop(det: str, t: float, count: int, occ: float, speed: float | None) -> dict[str, Any]:
    role = "mid_link" if det.startswith("mid") else "stop_line"
    return {
        "type": "loop",
        "detector_id": det,
        "segment_id": "S",
        "lane": f"S_{det[-1]}",
        "lane_index": int(det[-1]),
        "role": role,
        "ts_s": t,
        "interval_s": 30,
        "count": count,
        "occupancy": occ,
        "speed_kmh": speed,
    }


def cam(t: float, cars: int, occ: float, speed: float | None, queue: int = 0, trucks: int = 0) -> dict[str, Any]:
    return {
        "type": "camera",
        "camera_id": "cam",
        "segment_id": "S",
        "lanes": 2,
        "ts_s": t,
        "interval_s": 60,
        "counts": {"car": cars, "truck": trucks, "bus": 0},
        "count_total": cars + trucks,
        "queue_len_veh": queue,
        "queue_max_veh": queue,
        "occupancy": occ,
        "speed_kmh": speed,
    }


def window(
    end: float, mid: tuple[tuple[int, float, float | None], ...], stop_occ: float = 0.05, jitter: float = 0.0
) -> list[dict]:
    """Two 30 s readings per loop: ``mid`` gives (count, occupancy, speed) per reading for lanes 0 and 1.

    Stop-line loops count nothing and are occupied ``stop_occ``. ``jitter`` is added to every occupancy (so
    that consecutive windows differ, as real readings do).
    """
    out = []
    for k, t in enumerate((end - 30, end)):
        for lane in (0, 1):
            c, o, v = mid[2 * lane + k]
            out.append(loop(f"mid_{lane}", t, c, o + jitter if c else o, v))
            out.append(loop(f"stop_{lane}", t, 0, stop_occ + jitter, None))
    return out


def test_free_flowing_segment_by_hand() -> None:
    end = T0 + 60
    readings = window(end, ((5, 0.05, 45.0), (5, 0.05, 45.0), (3, 0.03, 50.0), (3, 0.03, 50.0)))
    readings.append(cam(end, 16, 0.03, 40.0))
    st, prior = estimate_window(readings, model(), None)
    lv = (16 * 4.5 + 2 * 5.5) / 18  # class lengths, with 2 vehicles' worth of the 5.5 m default: 4.611 m
    n_a = (0.05 + 0.03) * 200 / lv  # Σ lane occupancy · 200 m / vehicle length = 3.470 vehicles
    v_a = 16 / (10 / 45 + 6 / 50)  # harmonic mean of spot speeds: 46.753 km/h
    n_b = 0.03 * 100 * 2 / lv  # zone occupancy · 100 m · 2 lanes / length = 1.301 vehicles
    v = (n_a * v_a + n_b * 40.0) / (n_a + n_b)  # 44.911 km/h
    assert st.speed_kmh == pytest.approx(v, abs=1e-3)
    assert st.speed_kmh == pytest.approx(44.911, abs=1e-3)
    assert st.density_veh_km == pytest.approx((n_a + n_b) / 0.3, abs=1e-3)  # 15.904 veh/km
    assert st.flow_veh_h == pytest.approx(960.0)  # (10 + 6) veh / 60 s
    assert st.travel_time_s == pytest.approx(300 / (v / 3.6), abs=0.01)
    assert st.los == "A" and st.congested is False
    assert st.sources == ("mid_link", "stop_line", "camera")
    assert st.n_readings == 9 and st.n_detectors == 5
    assert prior["v"] == pytest.approx(v, abs=1e-3) and prior["lv"] == pytest.approx(lv, abs=1e-3)
    json.dumps(prior)  # the carried state is plain JSON


def test_red_phase_queue_is_not_congestion() -> None:
    """One car waits at the red all minute: the speed is low, the segment is not congested."""
    end = T0 + 60
    readings = window(end, ((1, 0.01, 48.0), (0, 0.0, None), (0, 0.0, None), (0, 0.0, None)), stop_occ=0.9)
    readings.append(cam(end, 1, 0.0225, 3.0, queue=1))  # 4.5 m of 2 x 100 m covered
    st, _ = estimate_window(readings, model(), None)
    lv = (4.5 + 2 * 5.5) / 3
    n_a = 0.005 * 200 / lv  # lane 0: 0.01 · 30 s / 60 s
    n_b = 0.0225 * 200 / lv
    assert st.speed_kmh == pytest.approx((n_a * 48 + n_b * 3) / (n_a + n_b), abs=1e-3)  # 11.18 km/h
    assert st.speed_ratio is not None and st.speed_ratio < 0.3
    assert st.density_veh_km == pytest.approx((n_a + n_b) / 0.3, abs=1e-3)  # 3.55 veh/km < 20
    assert st.los == "F"
    assert st.congested is False


def test_queue_filling_the_segment_is_congestion() -> None:
    end = T0 + 60
    readings = window(end, ((4, 0.6, 20.0), (4, 0.6, 20.0), (4, 0.6, 20.0), (4, 0.6, 20.0)), stop_occ=0.8)
    readings.append(cam(end, 10, 0.6, 4.0, queue=26))
    st, _ = estimate_window(readings, model(), None)
    lv = (10 * 4.5 + 2 * 5.5) / 12
    n_a = (0.6 + 0.6) * 200 / lv  # 51.4 vehicles in the upstream 200 m
    n_b = 0.6 * 100 * 2 / lv  # 25.7 vehicles in the zone
    assert st.speed_kmh == pytest.approx((n_a * 20 + n_b * 4) / (n_a + n_b), abs=1e-3)  # 14.67 km/h
    assert st.density_veh_km == pytest.approx((n_a + n_b) / 0.3, abs=0.01)  # 257 veh/km
    assert st.los == "F" and st.congested is True


def test_silent_detector_is_flagged_and_its_lane_filled_from_the_camera() -> None:
    m = model()
    hs = new_health_state()
    for k in range(3):
        end = T0 + 60 * (k + 1)
        mid = ((0, 0, None),) * 2 + ((3, 0.03, 50.0),) * 2
        readings = [r for r in window(end, mid, jitter=0.001 * (2 - k)) if r["detector_id"] != "mid_0"]
        readings.append(cam(end, 16, 0.03 + 0.001 * (2 - k), 40.0 + 2 - k))
        status, excluded = assess_window(readings, m, hs, end)
        # t0 = first window end; silent after 2.5 x 30 s = 75 s without a reading
        assert status["mid_0"] == ("silent" if k == 2 else "ok")
    assert excluded == frozenset({"mid_0"})
    st, _ = estimate_window(readings, m, None, excluded=excluded)
    lv = (16 * 4.5 + 2 * 5.5) / 18
    # lane 1 from its occupancy; lane 0 = the vehicles the camera saw beyond lane 1's, by Little's law
    n_a = 0.03 * 200 / lv + (16 / 60 - 6 / 60) * 200 / (50 / 3.6)
    n_b = 0.03 * 200 / lv
    assert st.speed_kmh == pytest.approx((n_a * 50 + n_b * 40) / (n_a + n_b), abs=1e-3)  # 47.40 km/h
    assert st.flow_veh_h == pytest.approx(960.0)
    # an excluded detector's readings are ignored exactly
    with_dead = [*readings, loop("mid_0", T0 + 180, 9, 0.5, 10.0)]
    st2, _ = estimate_window(with_dead, m, None, excluded=excluded)
    assert st2 == st


def test_stuck_detector_is_flagged_and_recovers() -> None:
    m = model()
    hs = new_health_state()
    statuses = []
    for k in range(3):
        end = T0 + 60 * (k + 1)
        readings = window(end, ((2, 0.04, 47.0),) * 4)  # every loop repeats 2 veh, 0.04, 47.0 km/h
        readings.append(cam(end, 4 + k, 0.02 + 0.01 * k, 30.0 + k))
        status, excluded = assess_window(readings, m, hs, end)
        statuses.append(status["mid_0"])
    assert statuses == ["ok", "stuck", "stuck"]  # the 3rd identical reading arrives in window 2
    assert {"mid_0", "mid_1"} <= excluded and "cam" not in excluded
    end = T0 + 240
    status, _ = assess_window(window(end, ((1, 0.02, 44.0),) * 4), m, hs, end)
    assert status["mid_0"] == "ok"


def test_dead_loop_reporting_zeros_disagrees_with_its_lane() -> None:
    m = model()
    hs = new_health_state()
    seen = []
    for k in range(4):
        end = T0 + 60 * (k + 1)
        readings = window(end, ((0, 0.0, None), (0, 0.0, None), (3, 0.03, 45.0), (2, 0.02, 48.0)), jitter=0.001 * k)
        for r in readings:
            if r["detector_id"] == "stop_0":
                r.update(count=3, occupancy=0.05, speed_kmh=30.0 + k + r["ts_s"] % 60)
        status, _ = assess_window(readings, m, hs, end)
        seen.append(status["mid_0"])
    # the same lane's stop-line loop counted 6 per window: 24 >= 20 vehicles after the 4th window
    assert seen == ["ok", "ok", "ok", "disagrees"]


def test_blocked_lane_is_not_declared_broken_quickly() -> None:
    """Both loops of lane 1 quiet, the camera sees 12 veh/min: evidence 0.5 x 6 = 3 veh per window."""
    m = model()
    hs = new_health_state()
    seen = []
    for k in range(7):
        end = T0 + 60 * (k + 1)
        readings = [
            loop(d, t, c, 0.04 * c, 45.0 + k if c else None)
            for t in (end - 30, end)
            for d, c in (("mid_0", 6), ("stop_0", 6), ("mid_1", 0), ("stop_1", 0))
        ]
        readings.append(cam(end, 12, 0.05, 30.0 + k))
        status, _ = assess_window(readings, m, hs, end)
        seen.append(status["mid_1"])
    assert seen == ["ok"] * 6 + ["disagrees"]  # 7 x 3 = 21 >= 20


def test_implausible_readings() -> None:
    m = model()
    assert implausible_reason(loop("mid_0", T0, 5, 0.0, 50.0), m) == "vehicles counted with no occupancy"
    assert implausible_reason(loop("mid_0", T0, 1, 0.0016, 47.8), m) is None  # entered the interval before
    assert implausible_reason(loop("mid_0", T0, 4, 1.0, 45.0), m) == "fully occupied while vehicles pass at speed"
    assert implausible_reason(loop("mid_0", T0, 40, 0.3, 40.0), m) == "more than one vehicle per second"
    assert implausible_reason(loop("mid_0", T0, 2, 0.02, 250.0), m) == "speed far above the limit"
    assert implausible_reason(cam(T0, 3, 0.0, None), m) == "vehicles entered an empty zone"
    assert implausible_reason(cam(T0, 3, 0.5, 2.0, queue=60), m) == "queue longer than the zone holds"
    assert implausible_reason(loop("stop_0", T0, 0, 1.0, None), m) is None  # standing at the red
    hs = new_health_state()
    readings = [*window(T0 + 60, ((2, 0.03, 45.0),) * 4), cam(T0 + 60, 4, 0.02, 30.0)]
    readings[0] = loop("mid_0", T0 + 30, 5, 0.0, 50.0)
    status, excluded = assess_window(readings, m, hs, T0 + 60)
    assert status["mid_0"] == "implausible" and excluded == frozenset({"mid_0"})


def test_window_with_no_vehicle_reports_the_free_speed() -> None:
    end = T0 + 60
    readings = [*window(end, ((0, 0.0, None),) * 4, stop_occ=0.0), cam(end, 0, 0.0, None)]
    st, prior = estimate_window(readings, model(), None)
    assert st.speed_kmh == 50.0  # no history: the speed limit
    assert st.density_veh_km == 0.0 and st.flow_veh_h == 0.0 and st.congested is False
    assert "prior" in st.sources and st.confidence <= 0.1
    st2, _ = estimate_window(readings, model(), {"v": 20.0, "p": 4.0, "vf": 44.0, "lv": 5.0})
    assert st2.speed_kmh == 44.0  # the carried upstream speed
    st3, _ = estimate_window([], model(), prior)
    assert st3.speed_kmh == 50.0 and st3.n_readings == 0 and st3.confidence == 0.0


def test_filter_blends_with_the_prior_by_vehicles_seen() -> None:
    end = T0 + 60
    readings = window(end, ((5, 0.05, 45.0), (5, 0.05, 45.0), (3, 0.03, 50.0), (3, 0.03, 50.0)))
    readings.append(cam(end, 16, 0.03, 40.0))
    first, _ = estimate_window(readings, model(), None)
    prior = {"v": 30.0, "p": 4.0, "vf": 50.0, "lv": 5.5, "t": end - 60}
    st, new = estimate_window(readings, model(), prior, end_s=end)
    lv = (16 * 4.5 + 2 * 5.5) / (16 + 2)  # the window's classes and the carried 5.5 m
    n_b = 0.03 * 200 / lv
    r_var = MEASUREMENT_VAR_1VEH_KMH2 / (16 + n_b)  # 16 vehicles at the loops + vehicle-windows in the zone
    p_pred = 4.0 + PROCESS_VAR_KMH2
    gain = p_pred / (p_pred + r_var)
    assert first.speed_kmh is not None
    assert st.speed_kmh == pytest.approx(30.0 + gain * (first.speed_kmh - 30.0), abs=1e-3)
    assert new["p"] == pytest.approx((1 - gain) * p_pred, abs=1e-3) and new["t"] == end
    # ten silent windows later the prior counts for less
    _, stale = estimate_window(readings, model(), {**prior, "t": end - 600}, end_s=end)
    assert stale["p"] > new["p"]


def test_no_camera_uses_the_stop_line_queue() -> None:
    m = model(camera=False)
    end = T0 + 60
    readings = window(end, ((4, 0.05, 45.0), (4, 0.05, 45.0), (2, 0.03, 50.0), (2, 0.03, 50.0)), stop_occ=0.4)
    st, _ = estimate_window(readings, m, None)
    n_a = (0.05 + 0.03) * 300 / 5.5  # the whole 300 m, default vehicle length
    v_a = 12 / (8 / 45 + 4 / 50)
    q_a = 12 / 60 / 2  # arrivals, veh/s per lane
    # queue heads standing 40 % of the time, the queue growing behind and draining at 0.5 - q_a veh/s
    n_q = 2 * 0.4 * (1 + q_a * 0.4 * 60 / 2 * 0.5 / (0.5 - q_a))
    assert st.speed_kmh == pytest.approx(n_a * v_a / (n_a + n_q), abs=1e-3)
    assert st.density_veh_km == pytest.approx((n_a + n_q) / 0.3, abs=1e-3)
    assert "stop_queue" in st.sources


def test_uniform_signal_delay() -> None:
    # d = C (1 - g)^2 / (2 (1 - X g)), X = 600 / (0.5 x 1800) = 2/3
    assert uniform_signal_delay_s(600.0, 0.5, 90.0) == pytest.approx(90 * 0.25 / (2 * (1 - 2 / 3 * 0.5)))
    assert uniform_signal_delay_s(5000.0, 0.5, 90.0) == pytest.approx(90 * 0.25 / (2 * 0.5))  # X capped at 1


def test_models_from_the_road_graph() -> None:
    models = segment_models_from_graph(grid_city(rows=2, cols=2))
    sig = [m for m in models.values() if m.signalised_end]
    free = [m for m in models.values() if not m.signalised_end]
    assert sig and free
    m = sig[0]
    assert m.zone_length_m == 100.0 and m.upstream_length_m == pytest.approx(m.length_m - 100.0)
    assert m.cycle_s == 90.0 and m.green_ratio is not None and 0 < m.green_ratio < 1
    assert {d.role for d in m.detectors.values()} == {0, 1, 2}
    assert free[0].zone_length_m is None and free[0].upstream_length_m == free[0].length_m


def test_vehicle_standing_on_a_loop_is_stuck_only_after_five_minutes() -> None:
    m = model()
    hs = new_health_state()
    seen = []
    for k in range(6):
        end = T0 + 60 * (k + 1)
        readings = [loop(d, t, 0, 1.0, None) for t in (end - 30, end) for d in ("stop_0",)]
        readings += [loop("mid_0", t, 1, 0.01 + 0.001 * k + 1e-4 * (t % 60), 40.0) for t in (end - 30, end)]
        status, _ = assess_window(readings, m, hs, end)
        seen.append(status["stop_0"])
    assert seen == ["ok"] * 4 + ["stuck"] * 2  # 10 identical 30 s readings = 300 s
