"""A webhook receiver down for a while during a stream of alerts, then back (issue #15, defect 6).

The receiver is a real HTTP server verifying Standard Webhooks signatures; the worker delivers from the
``webhook-deliveries`` topic. While the receiver is down (connection refused) alerts keep coming and queue up;
once it is back the backlog must arrive within the retry cap plus a margin — every alert exactly once, in the
order it was queued — and the operator must have seen the endpoint go down and come back (one log line each,
``citybrain_webhook_endpoint_up``), not one line per failed attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.runtime import Stack
from tests.integration.conftest import Brokers, metric_value, unique_settings
from tests.integration.webhook_receiver import SECRET, ThreadedReceiver

from .conftest import read_topic, wait_for

pytestmark = pytest.mark.faults

# Longer than the old fixed schedule's first two waits with their jitter (5 s + 30 s, ± 20 %: at most 42 s), so
# on that code the next attempt came at least 96 s later (120 s - 20 %), far past the margin below.
OUTAGE_S = 45.0
RETRY_CAP_S = 3.0  # a failing endpoint is probed at least this often
MARGIN_S = 30.0  # for the backlog itself to drain on a loaded 2-core machine; the issue asks for 60 s
INCIDENTS = 4


def alert(n: int) -> dict[str, Any]:
    """The ``n``-th alert: updates of ``INCIDENTS`` incidents in turn (``inc-{k}:{version}``)."""
    inc, version = n % INCIDENTS, n // INCIDENTS + 1
    return {
        "event_id": f"inc-{inc}:{version}",
        "type": "incident.new" if version == 1 else "incident.updated",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subject": f"inc-{inc}",
        "data": {"incident_id": f"inc-{inc}", "segment_id": "B2C2", "severity": "major", "version": version},
    }


def produce(s: Any, bootstrap: str, alerts: list[dict[str, Any]], spacing_s: float = 0.0) -> None:
    """Send ``alerts`` to the ``alerts`` topic (key = subject), ``spacing_s`` apart."""

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            for a in alerts:
                await p.send_and_wait(s.topics.name("alerts"), orjson.dumps(a), key=a["subject"].encode())
                await asyncio.sleep(spacing_s)
        finally:
            await p.stop()

    asyncio.run(run())


def log_lines(path: Path, needle: str) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if needle in line]


def test_webhook_receiver_down_then_back(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    rx = ThreadedReceiver()
    rx.start()
    received = rx.receiver
    try:
        hook = {"name": "ops", "url": received.url, "secret": SECRET, "event_types": ["incident.*"]}
        s = unique_settings(
            brokers,
            webhooks={
                "endpoints": [hook],
                "allow_private_targets": True,
                "retry_initial_s": 0.5,
                "retry_max_s": RETRY_CAP_S,
            },
        )
        before, during, after = 8, int(OUTAGE_S * 2), 8
        alerts = [alert(n) for n in range(before + during + after)]
        with Stack(s, tmp_path) as stack:
            worker = stack.start_worker()
            stack.wait_healthy(worker)
            url = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
            produce(s, brokers.bootstrap, alerts[:before])
            wait_for(lambda: len(received.unique_ids()) >= before, 60, "the alerts before the outage")

            rx.stop()  # connection refused from now on
            produce(s, brokers.bootstrap, alerts[before : before + during], spacing_s=OUTAGE_S / during)
            assert metric_value(url, "citybrain_webhook_endpoint_up", {"endpoint": "ops"}) == 0
            rx.start()
            t_up = time.monotonic()
            produce(s, brokers.bootstrap, alerts[before + during :])
            deadline = t_up + RETRY_CAP_S + MARGIN_S
            while len(received.unique_ids()) < len(alerts) and time.monotonic() < deadline:
                time.sleep(0.25)
            recovery_s = time.monotonic() - t_up
            assert len(received.unique_ids()) == len(alerts), (
                f"{len(received.unique_ids())} of {len(alerts)} alerts delivered {recovery_s:.0f} s after the "
                "receiver came back"
            )
            time.sleep(2.0)  # let a wrongly repeated delivery show up
            queued = read_topic(s, "webhook_deliveries", lambda rs: len(rs) >= len(alerts), idle_s=1.0)
            dead = read_topic(s, "webhook_dead_letter", timeout_s=20, idle_s=1.0)
            up_after = metric_value(url, "citybrain_webhook_endpoint_up", {"endpoint": "ops"})
            failed_attempts = metric_value(url, "citybrain_webhook_attempts_total", {"outcome": "retry"})
            delivered = metric_value(url, "citybrain_webhook_deliveries_total", {"result": "delivered"})
        log = Path(worker.log_path)
        ids = [r.webhook_id for r in received.received]
        assert sorted(ids) == sorted(a["event_id"] for a in alerts)  # none lost, none delivered twice
        assert ids == [q["alert"]["event_id"] for q in queued]  # in the order queued for the endpoint
        assert dead == []
        assert up_after == 1 and delivered == len(alerts) and failed_attempts >= 2
        went_down = log_lines(log, "webhook endpoint ops failing")
        came_back = log_lines(log, "webhook endpoint ops recovered")
        assert len(went_down) == 1 and "ClientConnectorError" in went_down[0], went_down
        assert len(came_back) == 1, came_back
    finally:
        rx.close()
    record(
        fault=f"webhook receiver down {OUTAGE_S:.0f} s during a stream of alerts (retry cap {RETRY_CAP_S:g} s)",
        events=len(alerts),
        lost=len(alerts) - len(set(ids)),
        duplicate_outputs=len(ids) - len(set(ids)),
        recovery_s=round(recovery_s, 1),
        operator_sees=(
            'citybrain_webhook_endpoint_up{endpoint="ops"} 0 while down, 1 after; one warning "'
            + went_down[0][went_down[0].index("webhook endpoint") :].split(";")[0][:80]
            + '…", one "'
            + came_back[0][came_back[0].index("webhook endpoint") :].split(";")[0]
            + '"; each failed attempt counted in citybrain_webhook_attempts_total{outcome="retry"}'
        ),
    )
