"""Devices → MQTT → bridge → Kafka → worker → segment-state, on real brokers (see conftest for which).

The segments used (A1left1, D2right2, …) of the generated demo city have two lanes, 300 m and a 50 km/h limit, and
lead out of the city (no signal at their end), so the estimate is the loops' own physics, computable by hand.
"""

from __future__ import annotations

import base64

import orjson
import pytest

from .conftest import RunningStack, consume_until, health, metric_value, mqtt_publish, produce_raw

pytestmark = pytest.mark.integration


def loop_event(det: str, seg: str, lane_index: int, ts: str, count: int, occ: float, speed: float | None) -> dict:
    return {
        "type": "loop",
        "detector_id": det,
        "segment_id": seg,
        "lane": f"{seg}_{lane_index}",
        "lane_index": lane_index,
        "role": "mid_link",
        "ts": ts,
        "interval_s": 30,
        "count": count,
        "occupancy": occ,
        "speed_kmh": speed,
    }


def topic_for(running: RunningStack, ev: dict) -> str:
    s = running.settings
    dev = ev.get("detector_id") or ev.get("camera_id")
    return f"{s.mqtt.topic_root}/{s.city}/{ev['type']}/{dev}"


def test_health_endpoints(running: RunningStack) -> None:
    status, body = health(running.worker_url)
    assert status == 200 and body["status"] == "ok" and body["assigned_partitions"] > 0
    status, body = health(running.bridge_url)
    assert status == 200 and body["status"] == "ok"


def test_hand_made_loop_events_give_exact_segment_state(running: RunningStack) -> None:
    seg = "A1left1"
    events = [
        loop_event("loop_mid_A1left1_0", seg, 0, "2025-01-06T07:30:30Z", 5, 0.08, 40.0),
        loop_event("loop_mid_A1left1_1", seg, 1, "2025-01-06T07:30:30Z", 4, 0.05, 50.0),
        loop_event("loop_mid_A1left1_0", seg, 0, "2025-01-06T07:31:00Z", 3, 0.06, 30.0),
        loop_event("loop_mid_A1left1_1", seg, 1, "2025-01-06T07:31:00Z", 2, 0.04, 45.0),
    ]
    applied_before = metric_value(running.worker_url, "citybrain_events_applied_total", {"kind": "loop"})
    mqtt_publish(
        running.settings.mqtt.host,
        running.settings.mqtt.port,
        [(topic_for(running, ev), orjson.dumps(ev)) for ev in events],
    )
    topic = running.settings.topics.name("segment_state")
    records = consume_until(
        running.settings.kafka.brokers.removeprefix("kafka://"),
        topic,
        lambda rs: any(r["state_id"] == f"{seg}@2025-01-06T07:31:00Z" for r in rs),
    )
    (state,) = [r for r in records if r["state_id"] == f"{seg}@2025-01-06T07:31:00Z"]
    assert state["state_id"] == "A1left1@2025-01-06T07:31:00Z"
    assert state["ts"] == "2025-01-06T07:31:00Z" and state["window_start"] == "2025-01-06T07:30:00Z"
    # by hand: lane 0 8 veh/60 s = 480 veh/h, lane 1 6 veh/60 s = 360 veh/h → mean 420 x 2 lanes
    assert state["flow_veh_h"] == 840.0
    # lane 0 (0.08 + 0.06)/2 = 0.07, lane 1 (0.05 + 0.04)/2 = 0.045 → 0.0575
    assert state["occupancy"] == pytest.approx(0.0575)
    # 14 vehicles / (5/40 + 4/50 + 3/30 + 2/45) h/km = 40.064 km/h
    assert state["speed_kmh"] == pytest.approx(40.064, abs=1e-3)
    assert state["speed_ratio"] == pytest.approx(0.8013, abs=1e-4)
    assert state["los"] == "B" and state["congested"] is False
    # vehicles on the road from occupancy: 0.0575 x 1000 m / 5.5 m effective vehicle length x 2 lanes
    assert state["density_veh_km"] == pytest.approx(20.909, abs=1e-3)
    assert state["travel_time_s"] == pytest.approx(300 / (40.064 / 3.6), abs=0.01)
    assert state["n_readings"] == 4 and state["closed_by"] == "idle"
    applied_after = metric_value(running.worker_url, "citybrain_events_applied_total", {"kind": "loop"})
    assert applied_after - applied_before == 4
    assert metric_value(running.worker_url, "citybrain_processing_latency_seconds_count") >= 4


def test_malformed_payloads_go_to_dead_letter_with_reason(running: RunningStack) -> None:
    s = running.settings
    good = loop_event("loop_mid_B1C1_0", "B1C1", 0, "2025-01-06T07:40:30Z", 2, 0.03, 45.0)
    not_json = b'{"type": "loop", "detector_id": '
    bad_occ = orjson.dumps({**good, "occupancy": 1.7})
    unknown = orjson.dumps({**good, "detector_id": "loop_nowhere"})
    invalid_before = metric_value(running.bridge_url, "citybrain_events_invalid_total", {"reason": "schema"})
    mqtt_publish(
        s.mqtt.host,
        s.mqtt.port,
        [
            (topic_for(running, good), not_json),
            (topic_for(running, good), bad_occ),
            (f"{s.mqtt.topic_root}/{s.city}/loop/loop_nowhere", unknown),
        ],
    )
    records = consume_until(
        s.kafka.brokers.removeprefix("kafka://"), s.topics.name("dead_letter"), lambda rs: len(rs) >= 3
    )
    by_class = {r["reason_class"]: r for r in records}
    assert base64.b64decode(by_class["not_json"]["payload_b64"]) == not_json
    assert "occupancy" in by_class["schema"]["reason"] and "1.7" in by_class["schema"]["reason"]
    assert base64.b64decode(by_class["schema"]["payload_b64"]) == bad_occ
    assert "loop_nowhere" in by_class["unknown_device"]["reason"]
    assert all(r["source"] == "mqtt" for r in records)
    invalid_after = metric_value(running.bridge_url, "citybrain_events_invalid_total", {"reason": "schema"})
    assert invalid_after - invalid_before == 1


def test_devices_producing_to_kafka_get_the_same_validation(running: RunningStack) -> None:
    s = running.settings
    bootstrap = s.kafka.brokers.removeprefix("kafka://")
    good = [
        loop_event("loop_mid_D2right2_0", "D2right2", 0, "2025-01-06T08:00:30Z", 6, 0.1, 36.0),
        loop_event("loop_mid_D2right2_0", "D2right2", 0, "2025-01-06T08:01:00Z", 6, 0.1, 36.0),
    ]
    bad = orjson.dumps({**good[0], "count": -3})

    produce_raw(bootstrap, s.topics.name("ingest"), [*(orjson.dumps(ev) for ev in good), bad])
    states = consume_until(
        bootstrap,
        s.topics.name("segment_state"),
        lambda rs: any(r["state_id"] == "D2right2@2025-01-06T08:01:00Z" for r in rs),
    )
    (state,) = [r for r in states if r["state_id"] == "D2right2@2025-01-06T08:01:00Z"]
    # one lane of two observed: 12 veh / 60 s = 720 veh/h on lane 0, filled for lane 1 → 1440 veh/h
    assert state["flow_veh_h"] == 1440.0 and state["n_readings"] == 2
    # earlier windows of this segment were filled from a vague prior (no readings): the filter follows the loops
    assert state["speed_kmh"] == pytest.approx(36.0, abs=0.01)
    dead = consume_until(bootstrap, s.topics.name("dead_letter"), lambda rs: any(r["source"] == "kafka" for r in rs))
    (dl,) = [r for r in dead if r["source"] == "kafka"]
    assert dl["reason_class"] == "schema" and "count" in dl["reason"]
    assert base64.b64decode(dl["payload_b64"]) == bad


def test_late_and_duplicate_readings_are_dead_lettered_not_dropped(running: RunningStack) -> None:
    s = running.settings
    bootstrap = s.kafka.brokers.removeprefix("kafka://")
    seg = "D1right1"
    first = loop_event("loop_mid_D1right1_0", seg, 0, "2025-01-06T09:00:30Z", 3, 0.04, 44.0)
    mqtt_publish(s.mqtt.host, s.mqtt.port, [(topic_for(running, first), orjson.dumps(first))] * 2)
    consume_until(
        bootstrap,
        s.topics.name("segment_state"),
        lambda rs: any(r["state_id"] == f"{seg}@2025-01-06T09:01:00Z" for r in rs),
    )
    # the window 09:00-09:01 has closed (idle): a straggler for it is late
    late = loop_event("loop_mid_D1right1_1", seg, 1, "2025-01-06T09:00:30Z", 1, 0.01, 40.0)
    mqtt_publish(s.mqtt.host, s.mqtt.port, [(topic_for(running, late), orjson.dumps(late))])
    dead = consume_until(
        bootstrap,
        s.topics.name("dead_letter"),
        lambda rs: {"duplicate", "late"} <= {r["reason_class"] for r in rs if r["source"] == "window"},
    )
    reasons = sorted(r["reason_class"] for r in dead if r["source"] == "window")
    assert reasons == ["duplicate", "late"]
    assert metric_value(running.worker_url, "citybrain_events_rejected_total", {"reason": "late"}) == 1


def test_city_summary_and_live_route_follow_the_states(running: RunningStack) -> None:
    # runs after the exact-values test: its window 07:30-07:31 holds only A1left1 (40.064 km/h, 840 veh/h)
    s = running.settings
    try:
        summaries = consume_until(
            s.kafka.brokers.removeprefix("kafka://"),
            s.topics.name("city_summary"),
            lambda rs: any(r["ts"] == "2025-01-06T07:31:00Z" for r in rs),
        )
    except AssertionError:
        got = consume_until(s.kafka.brokers.removeprefix("kafka://"), s.topics.name("city_summary"), lambda rs: True, 3)
        raise AssertionError(f"no summary for 07:31; got {sorted({r['ts'] for r in got})[:12]}") from None
    (summary,) = [r for r in summaries if r["ts"] == "2025-01-06T07:31:00Z"]
    assert summary["summary_id"] == f"{s.city}@2025-01-06T07:31:00Z"
    assert summary["segments_reporting"] == 1 and summary["segments_total"] == 80
    assert summary["travel_time_index"] == pytest.approx(50 / 40.064, abs=1e-3)  # one segment: limit / speed
    from ops.runtime import http_json

    status, route = http_json(running.worker_url + "/api/route?from=A1&to=left1")
    assert status == 200 and route["segments"] == ["A1left1"]
    # the route prices the segment at its latest state (later windows were filled from priors: no readings)
    _, snap = http_json(running.worker_url + "/api/snapshot")
    (latest,) = [r for r in snap["segments"] if r["segment_id"] == "A1left1"]
    assert route["travel_time_s"] == pytest.approx(300 / (latest["speed_kmh"] / 3.6), abs=0.1)
    status, err = http_json(running.worker_url + "/api/route?from=A1&to=nowhere")
    assert status == 404 and "nowhere" in err["error"]


def test_signal_recommendations_and_green_wave(running: RunningStack) -> None:
    # the earlier tests' readings span 07:30-09:01 of stream time: the leader's planner crossed 5-min periods
    s = running.settings
    recs = consume_until(
        s.kafka.brokers.removeprefix("kafka://"),
        s.topics.name("recommendations"),
        lambda rs: len(rs) >= 16,
        timeout_s=60,
    )
    import roadnet

    lights = roadnet.grid_city().graph["traffic_lights"]
    for r in recs:
        assert r["tls_id"] in lights
        assert all(g >= 5 for g in r["green_s"]) and r["cycle_s"] <= 180
        assert len(r["green_s"]) == sum(1 for p in lights[r["tls_id"]]["phases"] if p["kind"] == "green")
        assert len(r["recommendation_id"]) == 16 and r["reason"]
    by_period: dict[float, set[str]] = {}
    for r in recs:
        by_period.setdefault(r["period_start_s"], set()).add(r["tls_id"])
    assert any(len(v) == len(lights) for v in by_period.values())  # one per signal per period
    from ops.runtime import http_json

    status, wave = http_json(running.worker_url + "/api/greenwave?from=A0&to=D3&depart=1736150000")
    assert status == 200 and wave["route"] and wave["arrival_s"] > wave["departure_s"]
    assert wave["all_green"] is True
