"""Real brokers for the integration tests, started by fixtures.

Default engine: the embedded Tansu Kafka broker and amqtt (what ``make demo`` runs). With
``CITYBRAIN_TEST_ENGINE=kafka`` (``make test-kafka``, CI): Apache Kafka 4 (KRaft) and mosquitto. Every test
module gets its own app id and topic prefix, so runs never see each other's records.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion

from ops.brokers import AmqttBroker, EmbeddedBroker, TansuBroker
from ops.runtime import ChildProcess, Stack, http_json
from ops.settings import Settings

ENGINE = os.environ.get("CITYBRAIN_TEST_ENGINE", "embedded")


@dataclass
class Brokers:
    kafka_url: str
    bootstrap: str
    mqtt_host: str
    mqtt_port: int
    engine: str


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    log_dir = tmp_path_factory.mktemp("broker-logs")
    kafka: Any
    mq: EmbeddedBroker
    if ENGINE == "kafka":
        from ops.real_brokers import ApacheKafkaBroker, MosquittoBroker

        kafka, mq = ApacheKafkaBroker(log_dir=log_dir), MosquittoBroker(log_dir=log_dir)
    else:
        kafka, mq = TansuBroker(log_dir=log_dir), AmqttBroker(log_dir=log_dir)
    with kafka, mq:
        yield Brokers(kafka.url, kafka.bootstrap, mq.host, mq.port, ENGINE)


def unique_settings(brokers: Brokers, **overrides: Any) -> Settings:
    run = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "app_id": f"cb-test-{run}",
        "topics": {"prefix": f"t{run}."},
        "kafka": {"brokers": brokers.kafka_url, "session_timeout_s": 6.0, "rebalance_timeout_s": 6.0},
        "mqtt": {"host": brokers.mqtt_host, "port": brokers.mqtt_port, "client_id": f"cb-bridge-{run}"},
        # feed_stale_s: a test's pauses between phases are not a silent feed (default: idle_close_s)
        "window": {"idle_close_s": 3.0, "flush_interval_s": 0.2, "feed_stale_s": 60.0},
        "city": "testcity",
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return Settings(**base)


@dataclass
class RunningStack:
    stack: Stack
    settings: Settings
    worker: ChildProcess
    bridge: ChildProcess

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"  # type: ignore[attr-defined]

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge.web_port}"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def running(brokers: Brokers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Worker + bridge on the demo city (no network file), with their own topics."""
    settings = unique_settings(brokers)
    log_dir = tmp_path_factory.mktemp("stack-logs")
    with Stack(settings, log_dir) as stack:
        stack.start_brokers()  # both configured: starts nothing
        worker = stack.start_worker()
        bridge = stack.start_bridge()
        stack.wait_healthy(bridge)
        stack.wait_healthy(worker)
        yield RunningStack(stack, stack.settings, worker, bridge)


def mqtt_publish(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish with QoS 1 and wait for every PUBACK."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"test-dev-{uuid.uuid4().hex[:6]}")
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def produce_raw(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """Produce ``payloads`` to ``topic`` one by one, each acknowledged (devices producing to Kafka)."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for p in payloads:
                await producer.send_and_wait(topic, p)
        finally:
            await producer.stop()

    asyncio.run(run())


def consume_until(
    bootstrap: str,
    topic: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 45.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning until ``predicate(records)`` holds; fail on timeout."""

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:  # an ``events`` message is a bundle (a JSON array) of readings
                        v = orjson.loads(m.value or b"null")
                        records.extend(v if isinstance(v, list) else [v])
                if predicate(records):
                    return records
        finally:
            await consumer.stop()
        raise AssertionError(f"timed out after {timeout_s} s waiting on {topic}; got {len(records)} records")

    return asyncio.run(run())


def metric_value(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Read one sample from a /metrics endpoint (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return 0.0


def health(url: str) -> tuple[int, Any]:
    return http_json(url + "/health")


REPO = Path(__file__).resolve().parents[2]
