"""Agent ``validate-ingest``: device events produced straight to Kafka (topic ``ingest``) get the same
validation as MQTT ones; valid events go to ``events`` keyed by segment, invalid ones to ``dead-letter``.

Events are taken in batches and forwarded as one bundle per partition (``streams.records.bundle_events``); every
record a batch produced is acknowledged by Kafka before the batch's source offsets are, so a crash re-validates
(at least once) and never loses a reading.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from streams.records import validate_batch
from streams.topics import KeyPartitions

if TYPE_CHECKING:
    from streams.app import Pipeline

BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05


def register(pipe: Pipeline) -> None:
    app, topics, metrics, settings = pipe.app, pipe.topics, pipe.ingest_metrics, pipe.settings
    ingest_topic_name = settings.topics.name("ingest")
    events_name = settings.topics.name("events")
    dead_letter_name = settings.topics.name("dead_letter")
    max_bytes = settings.mqtt.max_payload_bytes
    received = metrics.received.labels("kafka")
    partition_of = KeyPartitions()

    txn = pipe.transactions
    eos = txn.enabled

    @app.agent(topics.ingest, name="validate-ingest")
    async def validate_ingest(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            async with txn.batch():
                await process(batch)
                txn.ack(batch)  # exactly once: inside the batch (no-op at least once: take_events acks)

    async def process(batch: list[Any]) -> None:
        received.inc(len(batch))
        now = time.time()
        n_parts = app.consumer.topic_partitions(events_name) or settings.kafka.partitions
        records = []
        for event in batch:
            payload = event.value
            raw = payload if isinstance(payload, bytes) else bytes(payload or b"")
            # received = when the device's record reached Kafka (its timestamp), for the latency metrics
            ts = getattr(event.message, "timestamp", None)
            rx = float(ts) if isinstance(ts, int | float) and 0 < ts <= now else now
            records.append((event.message.partition if eos else 0, raw, rx))
        out = validate_batch(
            records,
            max_bytes=max_bytes,
            devices=pipe.devices,
            source="kafka",
            source_topic=ingest_topic_name,
            n_partitions=n_parts,
            partition_of=partition_of,
        )
        futs = []
        for src, dl in out.dead_letters:
            futs.append(
                await pipe.send_raw(
                    dead_letter_name, dl.dead_letter_id.encode(), dl.dumps(), source=(ingest_topic_name, src)
                )
            )
        for src, part, bundle in out.bundles:
            futs.append(await pipe.send_raw(events_name, None, bundle, partition=part, source=(ingest_topic_name, src)))
        metrics.count(out)
        if futs:
            await asyncio.gather(*futs)
