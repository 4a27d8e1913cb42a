"""A worker SIGKILLed mid-stream and restarted: no window lost, redeliveries recognised, tables recovered."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ops.runtime import Stack
from tests.integration.conftest import Brokers, unique_settings

from .conftest import account, expected_windows, stream

pytestmark = pytest.mark.faults


def test_worker_sigkill_mid_stream(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    """The worker SIGKILLed while readings flow and started again: it restores its tables from the changelogs
    and re-reads from the committed offsets; exact accounting (every reading in exactly one window, redeliveries
    dead-lettered as ``duplicate``), no window emitted with two contents."""
    s = unique_settings(brokers)
    events = stream()
    with Stack(s, tmp_path) as st:
        worker, _bridge = st.start_pipeline()
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
        acc = account(s, len(events), expected_windows())

    assert set(acc.dead_reasons) <= {"duplicate"}, acc.dead_reasons  # redeliveries recognised, nothing late
    assert acc.duplicate_outputs == 0  # a window re-emitted after the restart carries the same readings and speed
    assert acc.applied == len(events) and acc.lost == 0  # every reading in exactly one window
    record(
        fault="worker SIGKILL mid-stream, restarted",
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        redelivered_readings=acc.dead_reasons.count("duplicate"),
        re_emitted_windows=acc.re_emitted,
        recovery_s=round(recovery_s, 1),
    )
    assert killed.is_set()
