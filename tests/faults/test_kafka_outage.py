"""The Kafka broker (Apache Kafka) unavailable when the worker and bridge start, then restarted mid-stream."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.runtime import Stack
from tests.integration.conftest import Brokers, unique_settings

from .conftest import account, devices, expected_windows, health_of, publish, stream, wait_for, wait_published

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka", reason="restarts its own Apache Kafka (real engine)"
    ),
]


def test_kafka_down_at_start_then_restarted_mid_stream(
    brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    """Worker and bridge started before Kafka exists wait for it (logging that they retry, with backoff) and
    become healthy once it serves; then the broker is stopped and started again (data kept) while devices keep
    publishing over MQTT. Exact accounting afterwards: every reading is in exactly one emitted window or
    dead-lettered (as a recognised redelivery only), no window is lost or emitted with two contents."""
    from ops.real_brokers import ApacheKafkaBroker

    kafka = ApacheKafkaBroker(log_dir=tmp_path)  # its port is fixed now; nothing listens on it yet
    s = unique_settings(brokers, kafka={"brokers": kafka.url})
    events = stream()
    half, three_q = len(events) // 2, 3 * len(events) // 4
    try:
        with Stack(s, tmp_path) as st:
            st.start_brokers()  # both configured: starts nothing
            worker = st.start_worker()
            bridge = st.start_bridge()

            def logged(child_log: Path, text: str) -> bool:
                return text in child_log.read_text(errors="replace")

            retry = "not reachable; retrying"
            wait_for(lambda: logged(worker.log_path, retry) and logged(bridge.log_path, retry), 60, "retry logs")
            wait_for(lambda: logged(bridge.log_path, "retrying in 1.0 s"), 30, "the bridge's backoff to grow")
            assert worker.alive() and bridge.alive()
            assert not health_of(bridge).get("status") == "ok"

            kafka.start()
            t_up = time.monotonic()
            st.wait_healthy(bridge, timeout_s=120)
            st.wait_healthy(worker, timeout_s=120)
            start_recovery_s = time.monotonic() - t_up

            c = devices(s.mqtt.host, s.mqtt.port, f"kafka-outage-{s.app_id}")
            wait_published(publish(c, s, events[:half]), 30)
            wait_for(lambda: health_of(bridge).get("forwarded", 0) >= half, 60, "the first half forwarded")
            kafka.stop()  # SIGTERM: a controlled broker shutdown, data kept
            t_down = time.monotonic()
            wait_published(publish(c, s, events[half:three_q]), 30)  # MQTT takes them while Kafka is away
            kafka.start()
            t_back = time.monotonic()
            wait_published(publish(c, s, events[three_q:]), 30)
            wait_for(lambda: health_of(bridge).get("forwarded", 0) >= len(events), 120, "everything forwarded")
            st.wait_healthy(worker, timeout_s=120)
            restart_recovery_s = time.monotonic() - t_back
            c.disconnect()
            c.loop_stop()
            acc = account(s, len(events), expected_windows())
            assert worker.alive() and bridge.alive(), "a process died during the broker restart"
            wlog = worker.log_path.read_text(errors="replace")
    finally:
        kafka.cleanup()
    assert set(acc.dead_reasons) <= {"duplicate"}, acc.dead_reasons  # nothing late, nothing invalid
    assert acc.applied == len(events) and acc.lost == 0  # each reading counted once
    assert acc.duplicate_outputs == 0
    assert retry in wlog
    common = {"events": len(events), "lost": acc.lost, "duplicate_outputs": acc.duplicate_outputs}
    record(
        fault="Kafka broker unavailable when worker and bridge start (Apache Kafka)",
        **common,
        recovery_s=round(start_recovery_s, 1),
    )
    record(
        fault="Kafka broker restarted mid-stream (Apache Kafka)",
        **common,
        redelivered_readings=acc.dead_reasons.count("duplicate"),
        re_emitted_windows=acc.re_emitted,
        outage_s=round(t_back - t_down, 1),
        recovery_s=round(restart_recovery_s, 1),
    )
