"""Hostile input at the MQTT bridge (issue #15, defect 1): one oversized message mid-stream, and the demo's
supervisor restarting a bridge that died anyway.

Before the fix, the dead-letter record of an 800,000-byte payload held the payload base64-encoded (1.07 MB), over
Kafka's (and aiokafka's) 1 MiB message limit: the produce failed with ``MessageSizeTooLargeError``, the exception
left the bridge's forward loop and the process exited; nothing restarted it.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.runtime import Stack
from streams.records import DEAD_LETTER_EXCERPT_BYTES
from tests.integration.conftest import Brokers, unique_settings

from .conftest import (
    account,
    devices,
    expected_windows,
    health_of,
    publish,
    read_topic,
    stream,
    wait_for,
    wait_published,
)

pytestmark = pytest.mark.faults

BIG = b"x" * 800_000


def test_oversized_mqtt_message_is_dead_lettered_capped_and_the_bridge_goes_on(
    brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    s = unique_settings(brokers)
    events = stream()
    half = len(events) // 2
    with Stack(s, tmp_path) as st:
        worker, bridge = st.start_pipeline()
        pid = bridge.proc.pid
        c = devices(s.mqtt.host, s.mqtt.port, "hostile-devices-a")
        try:
            wait_published(publish(c, s, events[:half]), 30)
            t_bad = time.monotonic()
            big = c.publish(f"{s.mqtt.topic_root}/{s.city}/loop/loop_mid_A0left0_0", BIG, qos=1)
            wait_published([big], 30)
            wait_published(publish(c, s, events[half:]), 30)
            # recovered = every reading published after the oversized message forwarded by the same bridge
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and bridge.alive():
                h = health_of(bridge)
                if h.get("forwarded", 0) >= len(events) and h.get("dead_lettered", 0) >= 1:
                    break
                time.sleep(0.2)
            recovery_s = time.monotonic() - t_bad
            assert bridge.alive(), f"the bridge exited ({bridge.proc.returncode}); log:\n{bridge.tail()}"
            assert bridge.proc.pid == pid
            h = health_of(bridge)
            assert h["status"] == "ok" and h["forwarded"] == len(events) and h["dead_lettered"] == 1, h
        finally:
            c.disconnect()
            c.loop_stop()
        acc = account(s, len(events) + 1, expected_windows())  # the oversized message is an input too
        dead = read_topic(s, "dead_letter", timeout_s=20, idle_s=1)
        assert worker.alive() and health_of(worker).get("status") == "ok", worker.tail()
    too_large = [d for d in dead if d["reason_class"] == "too_large"]
    assert len(too_large) == 1, [d["reason_class"] for d in dead]
    dl = too_large[0]
    assert dl["payload_size_bytes"] == len(BIG) and dl["payload_truncated"] is True
    assert base64.b64decode(dl["payload_b64"]) == BIG[:DEAD_LETTER_EXCERPT_BYTES]
    assert dl["payload_sha256"] == hashlib.sha256(BIG).hexdigest()
    assert acc.lost == 0 and acc.duplicate_outputs == 0
    assert acc.applied == len(events)
    record(
        fault="oversized MQTT message (800 kB) mid-stream",
        events=len(events) + 1,
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        recovery_s=round(recovery_s, 1),
        operator_sees='bridge stays up (/health ok); `citybrain_events_invalid_total{reason="too_large"}` +1; '
        "a capped dead-letter record (64 KiB excerpt, size, SHA-256)",
    )


def test_killed_bridge_is_restarted_by_the_demo_supervisor(
    brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    """``citybrain demo`` supervises its bridge (``Stack.supervise_bridge``); here it is SIGKILLed mid-stream.

    mosquitto keeps the bridge's persistent session, so readings published while it is down are delivered to the
    restarted bridge; amqtt drops sessions (see test_mqtt_outage.py), so there the rest is published after it is
    back."""
    s = unique_settings(brokers)
    events = stream()
    half = len(events) // 2
    keeps_session = brokers.engine == "kafka"
    with Stack(s, tmp_path) as st:
        worker, bridge = st.start_pipeline()
        lines: list[str] = []
        sup = st.supervise_bridge(report=lines.append, first_backoff_s=1.0)
        c = devices(s.mqtt.host, s.mqtt.port, "hostile-devices-b")
        try:
            wait_published(publish(c, s, events[:half]), 30)
            wait_for(lambda: health_of(bridge).get("forwarded", 0) >= half, 30, "the first half forwarded")
            time.sleep(1.0)  # its acks out (amqtt would drop un-acked messages with the session)
            bridge.signal(signal.SIGKILL)
            t_kill = time.monotonic()
            if keeps_session:
                wait_published(publish(c, s, events[half:]), 30)  # taken by the broker while no bridge runs
            wait_for(lambda: sup.restarts == 1 and health_of(sup.child).get("status") == "ok", 60, "the restart")
            recovery_s = time.monotonic() - t_kill
            if not keeps_session:
                wait_published(publish(c, s, events[half:]), 30)
        finally:
            c.disconnect()
            c.loop_stop()
        acc = account(s, len(events), expected_windows())
        assert worker.alive()
    assert st.bridge is sup.child and sup.child is not bridge
    assert any("exited with status -9; restarting" in line for line in lines), lines
    assert acc.lost == 0 and acc.duplicate_outputs == 0
    record(
        fault="MQTT bridge SIGKILLed mid-stream, restarted by the demo's supervisor"
        + ("" if keeps_session else " (rest published after the restart: amqtt drops sessions)"),
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        recovery_s=round(recovery_s, 1),
        operator_sees="demo prints the exit and the restart; alert CitybrainBridgeDown (up == 0) if it stays down",
    )
