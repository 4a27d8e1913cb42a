"""MQTT outages: the bridge away (its persistent session keeps QoS 1 messages) and the broker restarted."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ops.runtime import Stack
from tests.integration.conftest import Brokers, consume_until, unique_settings

from .conftest import devices, publish, stream, wait_published

pytestmark = pytest.mark.faults


def applied_readings(s: Any, expected_total: int) -> int:
    bootstrap = s.kafka.brokers.removeprefix("kafka://")
    seen: dict[str, int] = {}

    def done(rs: list[dict[str, Any]]) -> bool:
        for r in rs:
            if r["n_readings"] > 0:
                seen[r["state_id"]] = r["n_readings"]
        return sum(seen.values()) >= expected_total

    consume_until(bootstrap, s.topics.name("segment_state"), done, timeout_s=90)
    return sum(seen.values())


@pytest.mark.skipif(
    os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka",
    reason="the embedded amqtt marks every session anonymous while anonymous access is on and drops them at "
    "disconnect; mosquitto (CI's real-engine suite, production) keeps persistent sessions",
)
def test_bridge_away_persistent_session_keeps_messages(
    brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    s = unique_settings(brokers)
    events = stream()
    half = len(events) // 2
    with Stack(s, tmp_path) as st:
        _worker, bridge = st.start_pipeline()
        c = devices(s.mqtt.host, s.mqtt.port, "outage-devices-a")
        for info in publish(c, s, events[:half]):
            info.wait_for_publish(10)
        bridge.stop()  # SIGTERM: the bridge drains and leaves; its session stays on the broker
        t_down = time.monotonic()
        for info in publish(c, s, events[half:]):  # acknowledged by the broker while nobody consumes
            info.wait_for_publish(10)
        bridge = st.start_bridge()
        st.wait_healthy(bridge)
        recovery_s = time.monotonic() - t_down
        c.disconnect()
        c.loop_stop()
        got = applied_readings(s, len(events))
    assert got == len(events)
    record(
        fault="MQTT bridge stopped while devices publish (QoS 1, persistent session)",
        events=len(events),
        lost=len(events) - got,
        duplicate_outputs=0,
        recovery_s=round(recovery_s, 1),
    )


@pytest.mark.skipif(
    os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka", reason="needs mosquitto's persistence (amqtt has none)"
)
def test_mqtt_broker_restart(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    from ops.real_brokers import MosquittoBroker

    mq = MosquittoBroker(persistence=True, log_dir=tmp_path).start()
    try:
        s = unique_settings(brokers, mqtt={"host": mq.host, "port": mq.port})
        events = stream()
        third = len(events) // 3
        with Stack(s, tmp_path) as st:
            _worker, bridge = st.start_pipeline()
            c = devices(mq.host, mq.port, "outage-devices-b")
            for info in publish(c, s, events[:third]):
                info.wait_for_publish(10)
            mq.stop()  # broker down: sessions saved to its persistence file
            t_down = time.monotonic()
            queued = publish(c, s, events[third : 2 * third])  # queued in the device client meanwhile
            time.sleep(2)
            mq.start()
            wait_published(queued, 30)
            wait_published(publish(c, s, events[2 * third :]), 30)
            st.wait_healthy(bridge)
            recovery_s = time.monotonic() - t_down
            c.disconnect()
            c.loop_stop()
            got = applied_readings(s, len(events))
        assert got == len(events)
        record(
            fault="MQTT broker restarted mid-stream (mosquitto, persistence)",
            events=len(events),
            lost=len(events) - got,
            duplicate_outputs=0,
            recovery_s=round(recovery_s, 1),
        )
    finally:
        mq.cleanup()
