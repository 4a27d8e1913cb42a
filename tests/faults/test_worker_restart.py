"""A worker SIGKILLed mid-stream and restarted: no window lost, redeliveries recognised, tables recovered."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ops.runtime import Stack
from tests.integration.conftest import Brokers, consume_until, unique_settings

from .conftest import MINUTES, SEGMENTS, stream

pytestmark = pytest.mark.faults


def test_worker_sigkill_mid_stream(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    s = unique_settings(brokers)
    events = stream()
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        worker = st.start_worker()
        bridge = st.start_bridge()
        st.wait_healthy(bridge)
        st.wait_healthy(worker)
        web_port = worker.web_port  # type: ignore[attr-defined]
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="fault-devices")
        client.connect(s.mqtt.host, s.mqtt.port)
        client.loop_start()
        killed = threading.Event()
        infos = []
        for i, ev in enumerate(events):
            infos.append(
                client.publish(f"{s.mqtt.topic_root}/{s.city}/loop/{ev['detector_id']}", orjson.dumps(ev), qos=1)
            )
            time.sleep(0.004)  # ~250 events/s: the worker is busy when it dies
            if i == len(events) // 2:
                worker.signal(signal.SIGKILL)
                worker.proc.wait(10)
                killed.set()
                t_kill = time.monotonic()
                worker = st.start_worker(name="worker-restarted", web_port=web_port)
        for info in infos:
            info.wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        st.wait_healthy(worker, timeout_s=120)
        recovery_s = time.monotonic() - t_kill
        expected = {
            f"{seg}@{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(1_736_146_800 + 60 * m))}"
            for seg in SEGMENTS
            for m in range(1, MINUTES + 1)
        }
        bootstrap = s.kafka.brokers.removeprefix("kafka://")
        try:
            states = consume_until(
                bootstrap,
                s.topics.name("segment_state"),
                lambda rs: expected <= {r["state_id"] for r in rs},
                timeout_s=120,
            )
        except AssertionError:
            got = {
                r["state_id"]
                for r in consume_until(bootstrap, s.topics.name("segment_state"), lambda rs: True, timeout_s=5)
            }
            dead = consume_until(bootstrap, s.topics.name("dead_letter"), lambda rs: True, timeout_s=5)
            raise AssertionError(
                f"windows lost: {sorted(expected - got)}; dead letters: {[d['reason_class'] for d in dead][:20]}"
            ) from None
        time.sleep(3)  # let any re-emission after the restart arrive too
        states = consume_until(bootstrap, s.topics.name("segment_state"), lambda rs: True, timeout_s=5)
        dead = consume_until(bootstrap, s.topics.name("dead_letter"), lambda rs: True, timeout_s=5)

    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in states:
        if r["n_readings"] > 0:
            by_id.setdefault(r["state_id"], []).append(r)
    assert expected <= set(by_id), f"windows lost: {sorted(expected - set(by_id))[:5]}"
    for sid, recs in by_id.items():  # a window re-emitted after the restart carries the same readings and speed
        assert len({(r["n_readings"], r["speed_kmh"]) for r in recs}) == 1, sid
    reasons = [d["reason_class"] for d in dead]
    assert set(reasons) <= {"duplicate"}, reasons  # redeliveries recognised, nothing late
    applied = sum(recs[0]["n_readings"] for sid, recs in by_id.items() if sid in expected)
    duplicates = reasons.count("duplicate")
    assert applied == len(events)  # every reading in exactly one window: nothing lost, nothing counted twice
    record(
        fault="worker SIGKILL mid-stream, restarted",
        events=len(events),
        lost=len(events) - applied,
        duplicate_outputs=sum(len(v) - 1 for v in by_id.values()),
        redelivered_readings=duplicates,
        recovery_s=round(recovery_s, 1),
    )
    assert killed.is_set()
