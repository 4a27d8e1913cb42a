"""Closed loop on the real brokers: a signal recommendation produced to Kafka reaches the simulated light.

The subscriber has no consumer group and starts at the latest offset: a record published before it started is
not applied; records published after it is ready are, at the light's next cycle start; a record for an unknown
light is rejected and counted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sensors_sim.recommendations import RecommendationSubscriber, simulator_plans
from sensors_sim.run import Simulator
from sensors_sim.testing import tiny_graph
from streams.topics import ensure_topics
from tests.integration.conftest import Brokers, unique_settings

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)


def _produce(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(topic, orjson.dumps(r), key=str(r.get("tls_id", "")).encode())
        finally:
            await producer.stop()

    asyncio.run(run())


def test_recommendations_from_kafka_change_the_simulated_light(brokers: Brokers) -> None:
    settings = unique_settings(brokers)
    topic = settings.topics.name("recommendations")
    asyncio.run(ensure_topics(brokers.bootstrap, [topic], settings))
    _produce(brokers.bootstrap, topic, [{"tls_id": "X", "green_s": [10, 44], "recommendation_id": "old"}])

    sim = Simulator(tiny_graph(), START, seed=1)
    with RecommendationSubscriber(brokers.bootstrap, topic) as sub:
        assert sub.wait_ready(30), "the subscriber never got the topic's partitions"
        _produce(
            brokers.bootstrap,
            topic,
            [
                {"tls_id": "X", "green_s": [40, 14], "recommendation_id": "new"},
                {"tls_id": "nowhere", "green_s": [30, 30], "recommendation_id": "lost"},
            ],
        )
        deadline = time.monotonic() + 30
        while sub.inbox.stats.received < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        apply = simulator_plans(sim, sub.inbox)
        ts, _ = sim.advance()  # t = 30 s, mid-cycle
        apply(ts.timestamp())
    stats = sub.inbox.stats
    assert (stats.received, stats.applied, stats.rejected) == (2, 1, 1)  # the record from before is not read
    assert "unknown traffic light 'nowhere'" in stats.reasons[0]
    sim.advance()  # to t = 60 s: the cycle ends
    sim.advance()  # the next cycle, from t = 60 s, runs the new plan
    assert sim.model.signals.plan("X")["green_s"] == [40.0, 14.0]
    assert sim.model.signals.plan_changes == [(START.timestamp() + 60, "X", [40.0, 3.0, 14.0, 3.0])]
