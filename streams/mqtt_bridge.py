"""The MQTT bridge: device topics → validation → Kafka ``events`` (keyed by segment) or ``dead-letter``.

- paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``), QoS 1, persistent session (``clean_session=False`` and a
  fixed client id), so QoS 1 messages published while the bridge is away are delivered when it returns.
- Subscribes to ``{topic_root}/{city}/loop/+`` and ``{topic_root}/{city}/camera/+``.
- Acknowledges each MQTT message only once the record it produced is settled (``streams.delivery``: Kafka
  acknowledged it, or refused it for good and its dead letter is settled) — manual acks, in arrival order as
  MQTT requires — so a crash between the two re-delivers instead of losing. No produce error ends the bridge:
  a record Kafka cannot take now is sent again with backoff, one it refuses (too large) is dead-lettered.
- paho's network thread hands messages to the asyncio loop through a bounded queue; when Kafka is slow the
  queue fills, paho's thread blocks and TCP back-pressure reaches the MQTT broker.

Metrics (``/metrics`` on the bridge's port) share names with the Kafka ingest agent's:
``citybrain_events_received_total{source="mqtt"}``, ``citybrain_events_valid_total``,
``citybrain_events_invalid_total``; ``citybrain_bridge_send_errors_total{reason}`` counts the records Kafka did
not take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from ops.settings import Settings
from streams.delivery import Delivery, Fallback, OutRecord
from streams.metrics import BridgeMetrics, IngestMetrics
from streams.records import (
    BUNDLE_MAX,
    DeviceInfo,
    InvalidEvent,
    bundle_events,
    dead_letter,
    decode_device_payload,
    encode_event,
)
from streams.topics import KeyPartitions, ensure_topics, kafka_client_kwargs

log = logging.getLogger(__name__)
QUEUE_MAX = 10_000
#: MQTT messages taken but not yet acked (their records in flight) past which intake waits.
PENDING_MAX = 2000


@dataclass
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float


#: A message taken from MQTT and the future of the record that carries it (settled: ack it).
_Pending = tuple[asyncio.Future[None], _Msg]


class MqttBridge:
    """Runs the bridge until :meth:`stop` is called (or the task is cancelled)."""

    def __init__(
        self,
        settings: Settings,
        devices: dict[str, DeviceInfo],
        *,
        bootstrap: str,
        mqtt_host: str,
        mqtt_port: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.devices = devices
        self.bootstrap = bootstrap
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.registry = registry or CollectorRegistry()
        self.metrics = IngestMetrics.create(self.registry)
        self.bridge_metrics = BridgeMetrics.create(self.registry)
        self._n_parts = 0
        self._q: queue.Queue[_Msg] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None
        self.forwarded = 0
        self._partition_of = KeyPartitions()
        self.dead_lettered = 0
        m = settings.mqtt
        self._prefix = f"{m.topic_root}/{settings.city}/"

    # -- paho side (network thread) ---------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error(
                "MQTT connect refused by %s:%s: %s (check mqtt.username / mqtt.password); retrying with backoff",
                self.mqtt_host,
                self.mqtt_port,
                rc,
            )
            return
        qos = self.settings.mqtt.qos
        client.subscribe([(self._prefix + "loop/+", qos), (self._prefix + "camera/+", qos)])
        self._connected.set()
        log.info(
            "MQTT connected to %s:%s (session present: %s), subscribed to %s{loop,camera}/+",
            self.mqtt_host,
            self.mqtt_port,
            flags.session_present,
            self._prefix,
        )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); paho reconnects with backoff", rc)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around (re)connecting and swallows the error: log it,
        # or a TLS or network failure is a silent retry loop.
        exc = sys.exc_info()[1]
        hint = " (check mqtt.tls_ca_file / mqtt.host)" if isinstance(exc, ssl.SSLError) else ""
        log.error(
            "MQTT connection to %s:%s failed: %s%s; retrying with backoff", self.mqtt_host, self.mqtt_port, exc, hint
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item = _Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time())
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _make_client(self) -> mqtt.Client:
        m = self.settings.mqtt
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=m.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if m.username:
            client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
        if m.tls:
            client.tls_set(ca_certs=str(m.tls_ca_file) if m.tls_ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(m.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        return client

    # -- asyncio side -----------------------------------------------------------------------------------
    def _route(self, topic: str) -> tuple[str | None, str | None]:
        if not topic.startswith(self._prefix):
            return None, None
        parts = topic[len(self._prefix) :].split("/")
        if len(parts) != 2:
            return None, None
        return parts[0], parts[1]

    async def run(self) -> None:
        """Connect to Kafka and MQTT and forward until stopped."""
        s = self.settings
        names = [s.topics.name("events"), s.topics.name("dead_letter")]
        await ensure_topics(self.bootstrap, names, s)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            max_batch_size=s.kafka.producer_max_batch_size,
            **kafka_client_kwargs(s),
        )
        await producer.start()
        client = self._make_client()
        self._client = client
        client.connect_async(self.mqtt_host, self.mqtt_port, keepalive=s.mqtt.keepalive_s)
        client.loop_start()
        try:
            await self._forward(producer, client)
        finally:
            self._stop.set()
            client.disconnect()
            client.loop_stop()
            await producer.stop()

    async def _forward(self, producer: AIOKafkaProducer, client: mqtt.Client) -> None:
        delivery = Delivery(producer, self.bridge_metrics.send_errors)
        # (settled future, message) in MQTT arrival order; a message is acked once its record is settled
        pending: list[_Pending] = []
        try:
            while not self._stop.is_set():
                batch: list[_Msg] = []
                with contextlib.suppress(queue.Empty):
                    while len(batch) < 500:
                        batch.append(self._q.get_nowait())
                if not batch:
                    await self._ack_done(pending, client, wait=True)
                    await asyncio.sleep(0.005)
                    continue
                sent = await self._send_batch(delivery, producer, batch)
                # MQTT acks go out in arrival order: order the futures by the batch position of their messages
                order = {id(m): n for n, m in enumerate(batch)}
                pending.extend(sorted(((f, m) for f, msgs in sent for m in msgs), key=lambda p: order[id(p[1])]))
                await self._ack_done(pending, client, wait=False)
                while len(pending) > PENDING_MAX and not self._stop.is_set():  # Kafka slow or away: hold intake
                    await self._ack_done(pending, client, wait=True)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ack_done(pending, client, wait=True), timeout=5.0)
            for fut, _ in pending:  # not settled: left un-acked, the broker redelivers them to the next session
                fut.cancel()

    async def _send_batch(
        self, delivery: Delivery, producer: AIOKafkaProducer, batch: list[_Msg]
    ) -> list[tuple[asyncio.Future[None], list[_Msg]]]:
        """Validate a batch and send it: valid readings as one bundle per partition
        (streams.records.bundle_events), rejected payloads as dead letters. Returns each record's settled
        future with the MQTT messages it carries."""
        s = self.settings
        events_topic = s.topics.name("events")
        n_parts = await self._n_partitions(producer, events_topic)
        by_part: dict[int, list[tuple[bytes, _Msg]]] = {}
        sent: list[tuple[asyncio.Future[None], list[_Msg]]] = []
        for msg in batch:
            self.metrics.received.labels("mqtt").inc()
            kind, dev = self._route(msg.topic)
            try:
                ev = decode_device_payload(
                    msg.payload, max_bytes=s.mqtt.max_payload_bytes, devices=self.devices, topic_kind=kind, topic_id=dev
                )
            except InvalidEvent as exc:
                self.metrics.invalid.labels(exc.reason_class).inc()
                dl = self._dead_letter(exc.reason_class, exc.reason, msg)
                sent.append((await delivery.send(dl, None), [msg]))
            else:
                self.metrics.valid.labels(ev["type"]).inc()
                part = self._partition_of(ev["segment_id"].encode(), n_parts)
                by_part.setdefault(part, []).append((encode_event(ev, msg.received_at), msg))
                self.forwarded += 1
        for part, items in by_part.items():
            for i, bundle in enumerate(bundle_events([e for e, _ in items])):
                msgs = [m for _, m in items[i * BUNDLE_MAX : (i + 1) * BUNDLE_MAX]]
                rec = OutRecord(events_topic, bundle, partition=part)
                sent.append((await delivery.send(rec, self._refused_fallback(msgs)), msgs))
        return sent

    def _dead_letter(self, reason_class: str, reason: str, msg: _Msg) -> OutRecord:
        self.dead_lettered += 1
        dl = dead_letter(reason_class, reason, "mqtt", msg.topic, msg.payload)
        return OutRecord(self.settings.topics.name("dead_letter"), dl.dumps(), key=dl.dead_letter_id.encode())

    def _refused_fallback(self, msgs: list[_Msg]) -> Fallback:
        """The dead letters of the readings in an ``events`` record that Kafka refused."""

        def fallback(exc: BaseException) -> list[OutRecord]:
            self.forwarded -= len(msgs)
            self.metrics.invalid.labels("kafka_refused").inc(len(msgs))
            reason = f"Kafka refused the events record: {exc!r:.200}"
            return [self._dead_letter("kafka_refused", reason, m) for m in msgs]

        return fallback

    async def _n_partitions(self, producer: AIOKafkaProducer, topic: str) -> int:
        """Partitions of ``topic``; the last known count while Kafka cannot say (unavailable), and until it first
        says, asking again each second (the batch in hand waits, un-acked)."""
        while True:
            try:
                self._n_parts = len(await producer.partitions_for(topic))
                return self._n_parts
            except KafkaError as exc:
                if self._n_parts:
                    log.warning("partitions of %s unknown (%r); using the last count, %d", topic, exc, self._n_parts)
                    return self._n_parts
                if self._stop.is_set():
                    raise
                log.warning("partitions of %s unknown (%r); asking again in 1 s", topic, exc)
                await asyncio.sleep(1.0)

    async def _ack_done(self, pending: list[_Pending], client: mqtt.Client, wait: bool) -> None:
        """Ack, in arrival order, the MQTT messages whose records are settled; with ``wait``, first wait up to
        1 s for the records in flight. A record still in flight holds back the acks of every later message
        (MQTT 3.1.1 §4.6: PUBACKs in the order the PUBLISH packets came)."""
        if wait and pending:
            await asyncio.wait({f for f, _ in pending}, timeout=1.0)
        n = 0
        for fut, msg in pending:
            if not fut.done():
                break
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
            n += 1
        del pending[:n]

    def stop(self) -> None:
        self._stop.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()
