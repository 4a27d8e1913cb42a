"""Device faults of ``sensors_sim``: each configured fault appears in the stream as configured; raw payloads."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensors_sim import MqttPublisher, RawEvent, Scenario, Simulator, apply_faults
from sensors_sim.events import Event, parse_iso
from sensors_sim.faults import MALFORMED_VARIANTS, Fault, FaultInjector, malformed_payload
from sensors_sim.testing import tiny_graph
from streams.records import InvalidEvent, validate_event

START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)
T0 = START.timestamp()
FAULTS: list[dict[str, Any]] = [
    {"device_id": "loop_mid_WX_0", "kind": "silent"},
    {"device_id": "loop_mid_WX_1", "kind": "stuck"},
    {"device_id": "loop_mid_NX_0", "kind": "zero"},
    {"device_id": "loop_mid_NX_1", "kind": "duplicate"},
    {"device_id": "loop_stop_WX_0", "kind": "late", "delay_s": 95},
    {"device_id": "loop_stop_WX_1", "kind": "out_of_order"},
    {"device_id": "loop_stop_NX_0", "kind": "clock_skew", "skew_s": 300},
    {"device_id": "loop_stop_NX_1", "kind": "silent", "from_s": 300, "to_s": 600},
    {"device_id": "loop_mid_XE_0", "kind": "duplicate", "rate": 0.5},
    {"device_id": "cam_WX", "kind": "malformed"},
]
TICKS = 40  # 20 simulated minutes


def _run(faults: list[dict[str, Any]], seed: int = 1) -> tuple[Simulator, list[tuple[float, Event]]]:
    sim = Simulator(tiny_graph(), START, seed=seed, scenario=Scenario.from_dict({"faults": faults}))
    sent: list[tuple[float, Event]] = []
    for _ in range(TICKS):
        ts, events = sim.advance()
        sent.extend((ts.timestamp(), e) for e in events)
    return sim, sent


@pytest.fixture(scope="module")
def run() -> tuple[Simulator, list[tuple[float, Event]]]:
    return _run(FAULTS)


def _of(sent: list[tuple[float, Event]], device: str) -> list[tuple[float, dict[str, Any]]]:
    return [(t, e) for t, e in sent if isinstance(e, dict) and device in (e.get("detector_id"), e.get("camera_id"))]


def _ts(e: dict[str, Any]) -> float:
    return parse_iso(e["ts"])


def test_healthy_devices_are_untouched(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    healthy = _of(sent, "loop_mid_XE_0")  # a duplicate at rate 0.5: mixes
    mid = _of(sent, "cam_NX")
    assert [_ts(e) for _, e in mid] == [T0 + 60 * k for k in range(1, 21)]
    assert all(_ts(e) == t for t, e in mid)
    assert 20 < len(healthy) < 80


def test_silent(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    sim, sent = run
    assert _of(sent, "loop_mid_WX_0") == []
    windowed = [_ts(e) - T0 for _, e in _of(sent, "loop_stop_NX_1")]
    assert windowed == [30.0 * k for k in range(1, TICKS + 1) if not 300 < 30 * k <= 600]
    assert sim.injector.affected["silent"] == TICKS + 10


def test_stuck(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    msgs = [e for _, e in _of(sent, "loop_mid_WX_1")]
    assert len(msgs) == TICKS
    assert len({(e["count"], e["occupancy"], e["speed_kmh"]) for e in msgs}) == 1
    assert len({e["ts"] for e in msgs}) == TICKS


def test_zero_while_traffic_flows(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    zero = [e for _, e in _of(sent, "loop_mid_NX_0")]
    assert len(zero) == TICKS
    assert all(e["count"] == 0 and e["occupancy"] == 0.0 and e["speed_kmh"] is None for e in zero)
    neighbour = [e for _, e in _of(sent, "loop_mid_NX_1")]  # the other lane of the same road
    assert sum(e["count"] for e in neighbour) > 50


def test_duplicate(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    dup = [e for _, e in _of(sent, "loop_mid_NX_1")]
    assert len(dup) == 2 * TICKS
    assert all(dup[2 * k] == dup[2 * k + 1] for k in range(TICKS))
    some = [e["ts"] for _, e in _of(sent, "loop_mid_XE_0")]
    assert len(set(some)) == TICKS and TICKS < len(some) < 2 * TICKS  # rate 0.5


def test_late(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    sim, sent = run
    late = _of(sent, "loop_stop_WX_0")
    assert late and all(_ts(e) + 95 <= t < _ts(e) + 95 + 30 for t, e in late)
    held = [e for e in sim.flush() if isinstance(e, dict) and e.get("detector_id") == "loop_stop_WX_0"]
    assert len(late) + len(held) == TICKS
    assert [_ts(e) for _, e in late] + [_ts(e) for e in held] == [T0 + 30 * k for k in range(1, TICKS + 1)]


def test_out_of_order(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    ts = [_ts(e) - T0 for _, e in _of(sent, "loop_stop_WX_1")]
    assert ts[:4] == [60.0, 30.0, 120.0, 90.0]
    assert ts != sorted(ts) and sorted(ts) == [30.0 * k for k in range(1, TICKS + 1)]


def test_clock_skew(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    skewed = _of(sent, "loop_stop_NX_0")
    assert len(skewed) == TICKS and all(_ts(e) == t + 300 for t, e in skewed)


def test_malformed(run: tuple[Simulator, list[tuple[float, Event]]]) -> None:
    _, sent = run
    raw = [e for _, e in sent if isinstance(e, RawEvent)]
    assert len(raw) == TICKS // 2 and all(r.device_id == "cam_WX" and r.type == "camera" for r in raw)
    assert _of(sent, "cam_WX") == []
    for r in raw:
        assert b"\n" not in r.payload
        with pytest.raises((InvalidEvent, orjson.JSONDecodeError)):
            validate_event(orjson.loads(r.payload))
    assert len({r.payload[:12] for r in raw}) > 1  # the variants take turns


def test_every_malformed_variant_is_rejected() -> None:
    good = {
        "type": "loop",
        "detector_id": "d1",
        "segment_id": "s1",
        "lane": "s1_0",
        "lane_index": 0,
        "role": "mid_link",
        "ts": "2025-01-06T07:30:00Z",
        "interval_s": 30,
        "count": 3,
        "occupancy": 0.05,
        "speed_kmh": 44.0,
    }
    validate_event(good)
    for k in range(len(MALFORMED_VARIANTS)):
        with pytest.raises((InvalidEvent, orjson.JSONDecodeError)):
            validate_event(orjson.loads(malformed_payload(good, k)))


def test_fault_list_and_fraction() -> None:
    sim, _ = _run([{"fraction": 0.25, "kinds": ["silent", "late"], "device_type": "loop", "seed": 2}])
    assert sorted(f.kind for f in sim.faults.values()) == ["late", "silent"]  # round(0.25 x 9 loops)
    assert all(sim.devices.types[d] == "loop" for d in sim.faults)
    sim, _ = _run(FAULTS)
    recs = {r["device_id"]: r for r in sim.fault_records()}
    assert set(recs) == {f["device_id"] for f in FAULTS}
    assert recs["loop_stop_WX_0"] == {
        "device_id": "loop_stop_WX_0",
        "type": "loop",
        "segment_id": "WX",
        "kind": "late",
        "from_s": None,
        "to_s": None,
        "from_ts": None,
        "to_ts": None,
        "delay_s": 95.0,
    }
    assert recs["loop_stop_NX_1"]["from_ts"] == "2025-01-06T07:35:00Z"
    with pytest.raises(ValueError, match="unknown device"):
        Simulator(tiny_graph(), START, scenario=Scenario.from_dict({"faults": [{"device_id": "x", "kind": "zero"}]}))


def test_same_seed_same_faulty_stream() -> None:
    def dump(sent: list[tuple[float, Event]]) -> list[Any]:
        return [(t, e.payload if isinstance(e, RawEvent) else e) for t, e in sent]

    assert dump(_run(FAULTS, seed=4)[1]) == dump(_run(FAULTS, seed=4)[1])


def test_apply_faults_on_a_stream() -> None:
    def stream() -> Iterator[dict[str, Any]]:
        for k in range(1, 7):
            for d in ("a", "b", "c"):
                ts = f"2025-01-06T07:30:{k * 5:02d}Z"
                yield {"type": "loop", "detector_id": d, "ts": ts, "interval_s": 5, "count": k}

    out = list(apply_faults(stream(), {"a": "silent", "b": "stuck", "c": Fault("late", delay_s=10)}))
    assert [e["count"] for e in out if e["detector_id"] == "b"] == [1] * 6
    assert not [e for e in out if e["detector_id"] == "a"]
    assert [e["count"] for e in out if e["detector_id"] == "c"] == [1, 2, 3, 4, 5, 6]
    order = [(e["detector_id"], e["ts"][-3:]) for e in out]
    assert order.index(("c", "05Z")) == order.index(("b", "15Z")) + 1  # released after the readings 10 s later
    with pytest.raises(ValueError, match="malformed"):
        list(apply_faults(stream(), {"a": "malformed"}))
    assert FaultInjector({}).process(0.0, [{"x": 1}]) == [{"x": 1}]


# ------------------------------------------------------------------------------------------------- MQTT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.skip("mosquitto not installed")
    port = _free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _subscribe(port: int, topic: str, expect: int) -> tuple[list[tuple[str, bytes, bool]], threading.Event, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes, bool]] = []
    done = threading.Event()
    ready = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        if len(got) >= expect:
            done.set()

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    assert ready.wait(5)
    return got, done, c


def _wait_for(got: list[tuple[str, bytes, bool]], item: tuple[str, bytes, bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while item not in got and time.monotonic() < deadline:
        time.sleep(0.02)
    return item in got


def test_mqtt_raw_payloads_status_and_will(mosquitto: int) -> None:
    port = mosquitto
    pub = MqttPublisher("127.0.0.1", port, "demo", client_id="sim-test", timeout_s=5)
    pub.announce([("loop", "l1"), ("camera", "c1")])
    pub.publish({"type": "loop", "detector_id": "l1", "segment_id": "s", "ts": "2025-01-06T07:30:00Z"})
    pub.publish(RawEvent("camera", "c1", "s", b"ERR;c1;E42"))
    pub.flush()
    # A late subscriber sees the retained statuses; the readings themselves are not retained.
    got, done, sub = _subscribe(port, "city/demo/#", 3)
    assert done.wait(5)
    assert sorted(got) == [
        ("city/demo/camera/c1/status", b'{"status":"online"}', True),
        ("city/demo/loop/l1/status", b'{"status":"online"}', True),
        ("city/demo/sim/sim-test/status", b'{"status":"online"}', True),
    ]
    pub.publish(RawEvent("camera", "c1", "s", b"ERR;c1;E42"))
    pub.flush()
    assert _wait_for(got, ("city/demo/camera/c1", b"ERR;c1;E42", False))
    # The client dies without a DISCONNECT: the broker publishes its will.
    pub._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    assert _wait_for(got, ("city/demo/sim/sim-test/status", b'{"status":"offline"}', False))
    pub._client.disconnect()
    pub._client.loop_stop()
    sub.disconnect()
    sub.loop_stop()


def test_mqtt_clean_close_marks_devices_offline(mosquitto: int) -> None:
    pub = MqttPublisher("127.0.0.1", mosquitto, "demo", client_id="sim-2", timeout_s=5)
    pub.announce([("loop", "l9")])
    pub.close()
    got, done, sub = _subscribe(mosquitto, "city/demo/+/+/status", 2)
    assert done.wait(5)
    assert sorted(got) == [
        ("city/demo/loop/l9/status", b'{"status":"offline"}', True),
        ("city/demo/sim/sim-2/status", b'{"status":"offline"}', True),
    ]
    sub.disconnect()
    sub.loop_stop()
