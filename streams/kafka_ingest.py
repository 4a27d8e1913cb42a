"""Validation of device events produced straight to Kafka (topic ``ingest``), run by the bridge process.

With ``kafka_ingest = "bridge"`` the worker does not consume ``ingest`` (its Faust agent ``validate-ingest``
is not registered); each ``citybrain bridge`` runs this instead: a plain aiokafka consumer in the group
``{app_id}-ingest`` that validates each record like an MQTT message, forwards valid events to ``events`` as one
bundle per partition (``streams.records.bundle_events``, keyed like the segment) and invalid ones to
``dead-letter`` with the reason, and commits a batch's offsets only once everything the batch produced is
settled (``streams.delivery``: acknowledged by Kafka, or refused for good and dead-lettered; no produce error
ends it) — at least once: a crash re-validates, and the worker's windows recognise a redelivered reading as a
``duplicate``. More bridges share the ``ingest`` partitions through Kafka's consumer group.

Why: in the worker, Faust's per-message consumer machinery costs ≈ 35 % of its CPU on this path (a task pair per
message, channel queues); here a batch of records costs one ``getmany`` and the worker only reads bundles.

Metrics (on the bridge's ``/metrics``): ``citybrain_events_received_total{source="kafka"}``,
``citybrain_events_valid_total``, ``citybrain_events_invalid_total`` (as the agent's), and
``citybrain_consumer_lag_messages{topic}`` for the ``ingest`` partitions this bridge holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Gauge

from ops.settings import Settings
from streams.delivery import Delivery, Fallback, OutRecord
from streams.metrics import IngestMetrics
from streams.records import DeviceInfo, dead_letter, unbundle_events, validate_batch
from streams.topics import KeyPartitions, kafka_client_kwargs

log = logging.getLogger(__name__)
BATCH_MAX = 2000


class KafkaIngest:
    """Consume ``ingest``, validate, forward; see the module docstring.

    Parameters
    ----------
    settings
        Effective settings (topics, Kafka security, payload size limit).
    devices
        Device id → what the road graph says about it (``streams.app.device_index``).
    metrics
        The bridge's ingest metrics (shared with the MQTT side).
    lag
        Gauge ``citybrain_consumer_lag_messages{topic}`` in the bridge's registry.
    bootstrap
        Kafka bootstrap servers.
    send_errors
        ``citybrain_bridge_send_errors_total{reason}`` (``streams.delivery``: no produce error ends the bridge).
    """

    def __init__(
        self,
        settings: Settings,
        devices: dict[str, DeviceInfo],
        metrics: IngestMetrics,
        lag: Gauge,
        bootstrap: str,
        send_errors: Counter,
    ):
        self.settings = settings
        self.devices = devices
        self.metrics = metrics
        self.lag = lag
        self.bootstrap = bootstrap
        self.forwarded = 0
        self.dead_lettered = 0
        self.commit_failures = 0
        self._committed: dict[Any, int] = {}
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._partition_of = KeyPartitions()
        self._send_errors = send_errors
        self._delivery: Delivery

    def stop(self) -> None:
        self._stop.set()

    async def run(self, producer: AIOKafkaProducer) -> None:
        """Consume until :meth:`stop`; the batch in hand is finished and committed first."""
        self._delivery = Delivery(producer, self._send_errors)
        s = self.settings
        ingest_topic = s.topics.name("ingest")
        consumer = AIOKafkaConsumer(
            ingest_topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **kafka_client_kwargs(s),
        )
        await consumer.start()
        self.ready.set()
        log.info("validating device events from Kafka topic %s (group %s-ingest)", ingest_topic, s.app_id)
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=BATCH_MAX)
                if batches:
                    offsets = await self._forward(producer, batches)
                    try:
                        await consumer.commit(offsets)
                        self._committed.update(offsets)
                    except (CommitFailedError, KafkaError) as exc:  # rebalanced meanwhile: the new owner redoes it
                        self.commit_failures += 1
                        log.warning("ingest offsets not committed (%r); those records will be validated again", exc)
                await self._observe_lag(consumer, ingest_topic)
        finally:
            await consumer.stop()

    async def _forward(self, producer: AIOKafkaProducer, batches: dict[Any, list[Any]]) -> dict[Any, int]:
        s = self.settings
        events_topic, dl_topic, ingest_topic = (s.topics.name(n) for n in ("events", "dead_letter", "ingest"))
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        # received = when the device's record reached Kafka (its timestamp), for the latency metrics
        out = validate_batch(
            (
                (0, rec.value if isinstance(rec.value, bytes) else bytes(rec.value or b""), rec.timestamp / 1000.0)
                for records in batches.values()
                for rec in records
            ),
            max_bytes=s.mqtt.max_payload_bytes,
            devices=self.devices,
            source="kafka",
            source_topic=ingest_topic,
            n_partitions=len(await producer.partitions_for(events_topic)),
            partition_of=self._partition_of,
        )
        futs = []
        for _, dl in out.dead_letters:
            dl_rec = OutRecord(dl_topic, dl.dumps(), key=dl.dead_letter_id.encode())
            futs.append(await self._delivery.send(dl_rec, None))
        for _, part, bundle in out.bundles:
            rec = OutRecord(events_topic, bundle, partition=part)
            futs.append(await self._delivery.send(rec, self._refused_fallback(bundle)))
        self.metrics.received.labels("kafka").inc(sum(len(records) for records in batches.values()))
        self.metrics.count(out)
        self.dead_lettered += len(out.dead_letters)
        self.forwarded += sum(out.valid.values())
        if futs:
            await asyncio.gather(*futs)
        return offsets

    def _refused_fallback(self, bundle: bytes) -> Fallback:
        """An ``events`` bundle Kafka refused for good becomes one dead letter holding it (capped like all)."""

        def fallback(exc: BaseException) -> list[OutRecord]:
            n = len(unbundle_events(bundle))
            self.forwarded -= n
            self.dead_lettered += 1
            self.metrics.invalid.labels("kafka_refused").inc(n)
            s = self.settings
            reason = f"Kafka refused the events record of {n} readings: {exc!r:.200}"
            dl = dead_letter("kafka_refused", reason, "kafka", s.topics.name("events"), bundle)
            return [OutRecord(s.topics.name("dead_letter"), dl.dumps(), key=dl.dead_letter_id.encode())]

        return fallback

    async def _observe_lag(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        """Messages on this bridge's ``ingest`` partitions not committed yet (highwater − committed, as the
        worker's gauge), summed."""
        total = 0
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            done = self._committed.get(tp)
            try:
                total += max(0, hw - (done if done is not None else await consumer.position(tp)))
            except (KafkaError, AssertionError, TypeError):  # revoked meanwhile
                continue
        self.lag.labels(topic).set(total)
