"""Agent ``validate-ingest``: device events produced straight to Kafka (topic ``ingest``) get the same
validation as MQTT ones; valid events go to ``events`` keyed by segment, invalid ones to ``dead-letter``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from streams.records import InvalidEvent, dead_letter, decode_device_payload, encode_event

if TYPE_CHECKING:
    from streams.app import Pipeline


def register(pipe: Pipeline) -> None:
    app, topics, metrics, settings = pipe.app, pipe.topics, pipe.ingest_metrics, pipe.settings
    ingest_topic_name = settings.topics.name("ingest")

    @app.agent(topics.ingest, name="validate-ingest")
    async def validate_ingest(stream: Any) -> None:
        async for payload in stream:
            metrics.received.labels("kafka").inc()
            raw = payload if isinstance(payload, bytes) else bytes(payload or b"")
            try:
                ev = decode_device_payload(raw, max_bytes=settings.mqtt.max_payload_bytes, devices=pipe.devices)
            except InvalidEvent as exc:
                metrics.invalid.labels(exc.reason_class).inc()
                dl = dead_letter(exc.reason_class, exc.reason, "kafka", ingest_topic_name, raw)
                await topics.dead_letter.send(key=dl.dead_letter_id, value=dl)
                continue
            metrics.valid.labels(ev["type"]).inc()
            await topics.events.send(key=ev["segment_id"].encode(), value=encode_event(ev, time.time()))
