"""``kafka_ingest = "bridge"``: the bridge, not the worker, validates device events produced straight to Kafka.

Devices produce to ``ingest``; the bridge's aiokafka consumer group ``{app_id}-ingest`` validates and forwards
to ``events`` / ``dead-letter`` and commits; the worker has no ``validate-ingest`` agent and only reads
bundles. On real brokers (see conftest for which).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ops.runtime import Stack
from streams.topics import bootstrap_of

from .conftest import Brokers, RunningStack, consume_until, metric_value, produce_raw, unique_settings
from .test_pipeline import loop_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bridge_validates(brokers: Brokers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = unique_settings(brokers, kafka_ingest="bridge")
    with Stack(settings, tmp_path_factory.mktemp("kafka-ingest-logs")) as stack:
        worker, bridge = stack.start_pipeline()
        yield RunningStack(stack, stack.settings, worker, bridge)


def committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic`` (read without joining the group)."""

    async def run() -> int:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            parts = c.partitions_for_topic(topic) or set()
            if not parts:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(topic) or set()
            offs = [await c.committed(TopicPartition(topic, p)) for p in sorted(parts)]
        finally:
            await c.stop()
        return sum(o for o in offs if o is not None and o >= 0)

    return asyncio.run(run())


def test_the_bridge_validates_kafka_devices_and_the_worker_reads_only_bundles(bridge_validates: RunningStack) -> None:
    s = bridge_validates.settings
    bootstrap = bootstrap_of(s.kafka.brokers)
    good = [
        loop_event("loop_mid_D2right2_0", "D2right2", 0, ts, 6, 0.1, 36.0)
        for ts in ("2025-01-06T08:00:30Z", "2025-01-06T08:01:00Z")
    ]
    bad = [orjson.dumps({**good[0], "count": -3}), b"\xff not json"]

    produce_raw(bootstrap, s.topics.name("ingest"), [*(orjson.dumps(ev) for ev in good), *bad])
    window = "D2right2@2025-01-06T08:01:00Z"
    states = consume_until(
        bootstrap, s.topics.name("segment_state"), lambda rs: any(r["state_id"] == window for r in rs)
    )
    (state,) = [r for r in states if r["state_id"] == window]
    assert state["n_readings"] == 2 and state["flow_veh_h"] == 1440.0  # 12 veh / 60 s on one lane of two, filled
    dead = consume_until(
        bootstrap, s.topics.name("dead_letter"), lambda rs: len([r for r in rs if r["source"] == "kafka"]) >= 2
    )
    got = sorted((r["reason_class"], base64.b64decode(r["payload_b64"])) for r in dead if r["source"] == "kafka")
    assert [c for c, _ in got] == ["not_json", "schema"] and sorted(p for _, p in got) == sorted(bad)
    bridge, worker = bridge_validates.bridge_url, bridge_validates.worker_url
    assert metric_value(bridge, "citybrain_events_received_total", {"source": "kafka"}) == len(good) + len(bad)
    for reason in ("not_json", "schema"):
        assert metric_value(bridge, "citybrain_events_invalid_total", {"reason": reason}) == 1
    assert metric_value(worker, "citybrain_events_received_total", {"source": "kafka"}) == 0  # no agent on ingest
    # the batch's offsets are committed once its records are acknowledged: nothing left to re-validate
    group = f"{s.app_id}-ingest"
    deadline = time.monotonic() + 20
    while committed(bootstrap, group, s.topics.name("ingest")) < len(good) + len(bad) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert committed(bootstrap, group, s.topics.name("ingest")) == len(good) + len(bad)
    assert metric_value(bridge, "citybrain_consumer_lag_messages", {"topic": s.topics.name("ingest")}) == 0


def test_settings_name_who_validates(tmp_path: Path) -> None:
    from ops.settings import Settings

    assert Settings().kafka_ingest == "worker"  # one process is enough to start; bridges scale
    with pytest.raises(ValueError):
        Settings(kafka_ingest="elsewhere")  # type: ignore[arg-type]
