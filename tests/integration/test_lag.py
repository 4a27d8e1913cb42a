"""Consumer lag on real brokers: the whole worker pipeline in this process, its metrics in an injected registry.

The worker's ingest partitions are paused (Faust stops fetching them, as a stalled worker would); readings
produced meanwhile must show as ``citybrain_consumer_lag_messages{topic=<ingest>}`` equal to their number. Once
resumed, the worker consumes and commits them and the lag of every topic drops back to 0.
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
from prometheus_client import CollectorRegistry

from ops.brokers import free_port
from ops.runtime import load_network
from streams.app import build_app
from streams.topics import bootstrap_of, ensure_topics

from .conftest import Brokers, unique_settings

pytestmark = pytest.mark.integration
SEG = "A1left1"
N = 6


def reading(lane: int, ts: str) -> bytes:
    return orjson.dumps(
        {
            "type": "loop",
            "detector_id": f"loop_mid_{SEG}_{lane}",
            "segment_id": SEG,
            "lane": f"{SEG}_{lane}",
            "lane_index": lane,
            "role": "mid_link",
            "ts": ts,
            "interval_s": 30,
            "count": 4,
            "occupancy": 0.06,
            "speed_kmh": 46.0,
        }
    )


async def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_lag_counts_unconsumed_readings_and_returns_to_zero(brokers: Brokers, tmp_path: Path) -> None:
    settings = unique_settings(brokers, web_port=free_port(), data_dir=tmp_path)
    await ensure_topics(bootstrap_of(settings.kafka.brokers), settings.topics.all_names(), settings)
    registry = CollectorRegistry()
    pipe = build_app(settings, load_network(None), registry=registry)
    app = pipe.app
    ingest = settings.topics.name("ingest")
    topics_seen: set[str] = set()

    def lag(topic: str) -> float | None:
        return registry.get_sample_value("citybrain_consumer_lag_messages", {"topic": topic})

    def all_lags() -> dict[str, float]:
        out: dict[str, float] = {}
        for fam in registry.collect():
            if fam.name == "citybrain_consumer_lag_messages":
                out |= {s.labels["topic"]: s.value for s in fam.samples}
        return out

    app.loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(bootstrap_servers=brokers.bootstrap)
    await app.start()
    try:
        await wait_until(
            "the ingest partitions assigned",
            lambda: len([tp for tp in app.consumer.assignment() if tp.topic == ingest]) == settings.kafka.partitions,
        )
        await wait_until("a first lag measurement of 0", lambda: lag(ingest) == 0)
        ingest_tps = {tp for tp in app.consumer.assignment() if tp.topic == ingest}
        app.consumer.pause_partitions(ingest_tps)

        await producer.start()
        for i in range(N // 2):
            ts = f"2025-01-06T07:3{i}:30Z"
            for lane in (0, 1):
                await producer.send_and_wait(ingest, reading(lane, ts), key=SEG.encode())
        await wait_until(f"ingest lag == {N} while paused", lambda: lag(ingest) == N)
        assert lag(ingest) == N
        topics_seen |= set(all_lags())

        app.consumer.resume_partitions(ingest_tps)
        await wait_until("every topic's lag back to 0", lambda: all(v == 0 for v in all_lags().values()))
        assert lag(ingest) == 0
        # the readings were really consumed (validated into events or dead-lettered), not skipped
        applied: Any = registry.get_sample_value("citybrain_events_received_total", {"source": "kafka"})
        assert applied == N
    finally:
        await producer.stop()
        await app.stop()
    assert ingest in topics_seen and settings.topics.name("events") in topics_seen
