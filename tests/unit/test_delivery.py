"""The bridge's send path (issue #15): no produce error ends the bridge, and MQTT acks wait for settled records.

Kafka is replaced here by ``FakeProducer``, a stand-in at the producer boundary: a real broker cannot be made to
refuse or time out one chosen record on demand. The real-broker case (an 800 kB MQTT message) is
``tests/faults/test_bridge_hostile.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from prometheus_client import CollectorRegistry

from ops.settings import Settings
from streams import delivery as delivery_mod
from streams.delivery import Delivery, OutRecord
from streams.metrics import BridgeMetrics
from streams.mqtt_bridge import MqttBridge, _Msg
from streams.records import DeviceInfo

Decide = Callable[[str, bytes, int], BaseException | None]


class FakeProducer:
    """Records every send; ``decide(topic, value, attempt)`` returns the error for that send or None (taken).

    Errors of type MessageSizeTooLargeError are raised by ``send`` itself (as aiokafka does past
    ``max_request_size``); others fail the returned future (as a broker's answer does)."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.sent: list[tuple[str, bytes, int]] = []
        self.attempts: dict[bytes, int] = {}

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
        n = self.attempts[value] = self.attempts.get(value, 0) + 1
        err = self.decide(topic, value, n)
        if isinstance(err, MessageSizeTooLargeError):
            raise err
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, n))
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


def sends(metrics: BridgeMetrics, reason: str) -> float:
    return metrics.send_errors.labels(reason)._value.get()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_mod, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(delivery_mod, "RETRY_MAX_S", 0.02)


def test_an_unavailable_broker_is_retried_until_it_takes_the_record() -> None:
    async def run() -> tuple[FakeProducer, BridgeMetrics]:
        errors = {1: KafkaTimeoutError(), 2: NotLeaderForPartitionError()}
        p = FakeProducer(lambda t, v, n: errors.get(n))
        m = BridgeMetrics.create(CollectorRegistry())
        fut = await Delivery(p, m.send_errors).send(OutRecord("events", b"[1]"), lambda e: [])  # type: ignore[arg-type]
        await asyncio.wait_for(fut, 5)
        return p, m

    p, m = asyncio.run(run())
    assert [n for _, _, n in p.sent] == [1, 2, 3]
    assert sends(m, "unavailable") == 2 and sends(m, "refused") == 0


def test_a_refused_record_is_replaced_by_its_dead_letters_and_a_refused_dead_letter_is_counted() -> None:
    def decide(topic: str, value: bytes, n: int) -> BaseException | None:
        return MessageSizeTooLargeError() if value in (b"big", b"dl-2") else None

    async def run() -> tuple[FakeProducer, BridgeMetrics]:
        p = FakeProducer(decide)
        m = BridgeMetrics.create(CollectorRegistry())
        d = Delivery(p, m.send_errors)  # type: ignore[arg-type]
        dls = [OutRecord("dead-letter", b"dl-1"), OutRecord("dead-letter", b"dl-2")]
        fut = await d.send(OutRecord("events", b"big"), lambda e: dls)
        await asyncio.wait_for(fut, 5)  # settled, never raises
        return p, m

    p, m = asyncio.run(run())
    assert [(t, v) for t, v, _ in p.sent] == [("dead-letter", b"dl-1")]
    assert sends(m, "refused") == 1 and sends(m, "dead_letter_refused") == 1


class FakeMqtt:
    """Stands in for paho's client (the MQTT boundary): records the PUBACKs the bridge sends."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


def reading(seg: str, det: str) -> bytes:
    return orjson.dumps(
        {
            "type": "loop", "detector_id": det, "segment_id": seg, "lane": f"{seg}_0", "lane_index": 0,
            "role": "mid_link", "ts": "2025-01-06T07:00:30Z", "interval_s": 30, "count": 3, "occupancy": 0.05,
            "speed_kmh": 40.0,
        }
    )  # fmt: skip


def test_the_bridge_survives_produce_errors_and_acks_every_message_in_arrival_order() -> None:
    """An oversized payload whose dead letter the producer refuses, and an events record that times out once:
    the forward loop goes on, every message is acked once settled, in the order MQTT delivered them."""
    s = Settings(city="c", mqtt={"max_payload_bytes": 1024})
    devices = {f"d{i}": DeviceInfo("loop", f"S{i}", f"S{i}_0") for i in range(3)}
    bridge = MqttBridge(s, devices, bootstrap="unused", mqtt_host="unused", mqtt_port=0)
    topic = f"{s.mqtt.topic_root}/c/loop/"
    msgs = [
        _Msg(topic + "d0", reading("S0", "d0"), 1, 1, time.time()),
        _Msg(topic + "d1", b"x" * 5000, 2, 1, time.time()),
        _Msg(topic + "d1", reading("S1", "d1"), 3, 1, time.time()),
        _Msg(topic + "d2", reading("S2", "d2"), 4, 1, time.time()),
    ]
    first_events: list[bytes] = []

    def decide(t: str, value: bytes, n: int) -> BaseException | None:
        if t.endswith("dead-letter"):
            return MessageSizeTooLargeError()  # even the dead letter is refused
        if not first_events:
            first_events.append(value)
        return KafkaTimeoutError() if value == first_events[0] and n == 1 else None

    producer, client = FakeProducer(decide), FakeMqtt()

    async def run() -> None:
        for m in msgs:
            bridge._q.put(m)
        task = asyncio.create_task(bridge._forward(producer, client))  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while len(client.acked) < len(msgs) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        bridge.stop()
        await asyncio.wait_for(task, 10)  # returns, does not raise

    asyncio.run(run())
    assert client.acked == [1, 2, 3, 4]
    assert producer.attempts[first_events[0]] == 2
    assert bridge.forwarded == 3 and bridge.dead_lettered == 1
    assert sends(bridge.bridge_metrics, "dead_letter_refused") == 1
    assert sends(bridge.bridge_metrics, "unavailable") == 1


def test_readings_of_an_events_record_kafka_refuses_are_dead_lettered_and_acked() -> None:
    s = Settings(city="c")
    bridge = MqttBridge(s, {"d0": DeviceInfo("loop", "S0", "S0_0")}, bootstrap="-", mqtt_host="-", mqtt_port=0)
    msgs = [_Msg(f"{s.mqtt.topic_root}/c/loop/d0", reading("S0", "d0"), 7, 1, time.time())]

    def decide(t: str, value: bytes, n: int) -> BaseException | None:
        return None if t.endswith("dead-letter") else MessageSizeTooLargeError()

    producer, client = FakeProducer(decide), FakeMqtt()

    async def run() -> None:
        bridge._q.put(msgs[0])
        task = asyncio.create_task(bridge._forward(producer, client))  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while not client.acked and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        bridge.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    assert client.acked == [7]
    [(topic, value, _)] = producer.sent
    dl = orjson.loads(value)
    assert topic.endswith("dead-letter") and dl["reason_class"] == "kafka_refused" and dl["source"] == "mqtt"
    assert bridge.forwarded == 0 and bridge.dead_lettered == 1
    assert sends(bridge.bridge_metrics, "refused") == 1
    assert bridge.metrics.invalid.labels("kafka_refused")._value.get() == 1
