"""The partition watchdog on real brokers: a worker that stops fetching an assigned partition resumes it.

The whole worker pipeline runs in this process (as in ``test_lag.py``). Its ``events`` partitions are paused in
Faust's consumer — what the faust-streaming #629 defect leaves behind after a rebalance: assigned, never fetched.
Readings produced meanwhile are validated into ``events`` but never applied, until the watchdog (here with a
4 s stall limit) finds the partitions stalled, resumes and re-seeks them: then every reading is applied once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from ops.brokers import free_port
from ops.runtime import load_network
from streams import stall
from streams.app import build_app
from streams.topics import bootstrap_of, ensure_topics

from .conftest import Brokers, unique_settings
from .test_lag import reading, wait_until

pytestmark = pytest.mark.integration
N = 6


async def test_watchdog_resumes_a_partition_the_consumer_stopped_fetching(
    brokers: Brokers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall, "INTERVAL_S", 0.5)
    monkeypatch.setattr(stall, "STALL_S", 4.0)  # above Tansu's fetch wait (≈ 1–2 s)
    settings = unique_settings(brokers, web_port=free_port(), data_dir=tmp_path)
    await ensure_topics(bootstrap_of(settings.kafka.brokers), settings.topics.all_names(), settings)
    registry = CollectorRegistry()
    pipe = build_app(settings, load_network(None), registry=registry)
    app = pipe.app
    events = settings.topics.name("events")

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return float(registry.get_sample_value(name, labels or {}) or 0.0)

    def applied() -> float:
        return value("citybrain_events_applied_total", {"kind": "loop"})

    app.loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(bootstrap_servers=brokers.bootstrap)
    await app.start()
    try:
        await wait_until(
            "the events partitions assigned",
            lambda: len([tp for tp in app.consumer.assignment() if tp.topic == events]) == settings.kafka.partitions,
        )
        await wait_until("the worker out of recovery", lambda: not app.rebalancing and not app.in_recovery)
        events_tps = {tp for tp in app.consumer.assignment() if tp.topic == events}
        app.consumer.pause_partitions(events_tps)  # assigned but not fetched, like faust-streaming #629
        await producer.start()
        for i in range(N // 2):
            for lane in (0, 1):
                await producer.send_and_wait(settings.topics.name("ingest"), reading(lane, f"2025-01-06T07:3{i}:30Z"))
        await wait_until(
            "the readings validated into events", lambda: value("citybrain_events_valid_total", {"kind": "loop"}) == N
        )
        assert applied() == 0  # nothing read from the paused partitions yet
        await wait_until(
            "the watchdog resuming the stalled partition", lambda: value("citybrain_partition_stalls_total") >= 1
        )
        await wait_until(f"{N} readings applied", lambda: applied() >= N, timeout_s=30)
        await asyncio.sleep(1.0)
        assert applied() == N  # each once: resumed where it stopped, nothing skipped or repeated
        # the partition holding the readings is fetched again; the empty ones were never stalled (nothing waiting)
        consumer: Any = app.consumer
        fetched = {tp for tp in events_tps if tp not in consumer._paused_partitions}
        assert len(fetched) == 1 and value("citybrain_partition_stalls_total") == 1
    finally:
        await producer.stop()
        await app.stop()
