"""Smoke test of the production brokers that CI's "real-engine" suite starts (``ops/real_brokers.py``).

Runs only with ``CITYBRAIN_TEST_ENGINE=kafka``: it needs Java 17+, Maven (the Kafka jars are fetched into
``.cache/kafka`` on first use) and Debian's ``mosquitto`` package.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ops.real_brokers import ApacheKafkaBroker, MosquittoBroker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka",
        reason="real brokers (Apache Kafka, mosquitto) run only with CITYBRAIN_TEST_ENGINE=kafka",
    ),
]


@pytest.fixture(scope="module")
def kafka() -> Iterator[ApacheKafkaBroker]:
    with ApacheKafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as broker:
        yield broker


async def test_kafka_produce_then_consume_in_a_group(kafka: ApacheKafkaBroker) -> None:
    topic = f"smoke-{uuid.uuid4().hex}"  # auto-created with num.partitions=4
    sent = [f"value-{i}".encode() for i in range(10)]

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(sent):
            # one key, so one partition, so the order is kept
            md = await producer.send_and_wait(topic, value, key=b"k", headers=[("i", str(i).encode())])
            assert md.topic == topic
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"smoke-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                got.extend(r.value for r in records if r.value is not None)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == sent


async def test_kafka_broker_reports_itself_in_metadata(kafka: ApacheKafkaBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        brokers = producer.client.cluster.brokers()
    finally:
        await producer.stop()
    assert [(b.nodeId, b.host, b.port) for b in brokers] == [(1, kafka.host, kafka.port)]
    assert kafka.url == f"kafka://127.0.0.1:{kafka.port}"


def test_mosquitto_qos1_roundtrip(mosquitto: MosquittoBroker) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = f"citybrain/smoke/{uuid.uuid4().hex}"
    payload = b'{"detector": "d1", "flow": 12}'
    subscribed = threading.Event()
    received: list[mqtt.MQTTMessage] = []
    got = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        assert not reason_code.is_failure, reason_code
        client.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reason_codes: list[Any], _p: Any) -> None:
        assert all(not rc.is_failure for rc in reason_codes), reason_codes
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(msg)
        got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK from mosquitto"
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        try:
            info = pub.publish(topic, payload, qos=1)
            info.wait_for_publish(10)  # returns once the PUBACK came back
            assert info.is_published()
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert got.wait(10), "message not delivered"
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [(m.topic, m.payload, m.qos) for m in received] == [(topic, payload, 1)]


def test_kafka_stops_gracefully_on_sigterm() -> None:
    broker = ApacheKafkaBroker().start()
    try:
        proc = broker.proc
        assert proc is not None
        t0 = time.monotonic()
        broker.stop()
        took = time.monotonic() - t0
        assert proc.returncode in (0, 143), proc.returncode  # 143: the JVM's exit after SIGTERM's hooks ran
        assert took < 20, f"stop took {took:.1f} s"
        log = broker.log_path.read_text(errors="replace")
        assert "Transition from SHUTTING_DOWN to SHUTDOWN" in log
    finally:
        broker.cleanup()
    assert not broker.log_path.exists()  # the log lives in the temporary directory by default


def test_mosquitto_stops_and_cleans_up() -> None:
    broker = MosquittoBroker().start()
    proc = broker.proc
    assert proc is not None and broker.running
    broker.cleanup()
    assert proc.poll() is not None
    assert not broker.running
    assert not broker.config_path.exists()
