"""``citybrain bridge``: the MQTT bridge process with its ``/health`` and ``/metrics`` web endpoints; with
``kafka_ingest = "bridge"`` it also validates the device events produced straight to Kafka
(``streams.kafka_ingest``), and without ``mqtt.host`` it does only that.

Exit status (docs/operations.md): 0 stopped by SIGTERM/SIGINT, 2 invalid settings (:class:`BridgeConfigError`,
restarting cannot help), anything else a crash or Kafka unreachable at start for 60 s (restart it)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from ops.runtime import load_network
from ops.settings import Settings
from streams.app import device_index
from streams.kafka_ingest import KafkaIngest
from streams.metrics import SEND_ERROR_REASONS, BridgeMetrics, IngestMetrics
from streams.mqtt_bridge import MqttBridge
from streams.topics import bootstrap_of, ensure_topics, kafka_client_kwargs

log = logging.getLogger("citybrain.bridge")


class BridgeConfigError(ValueError):
    """Settings the bridge cannot run with: ``citybrain bridge`` exits with status 2 (restarting cannot help)."""


async def run_bridge(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then stop taking messages, flush Kafka, ack/commit, disconnect."""
    kafka_ingest = settings.kafka_ingest == "bridge"
    if not settings.kafka.brokers or not (settings.mqtt.host or kafka_ingest):
        raise BridgeConfigError(
            "the bridge needs kafka.brokers and mqtt.host (CITYBRAIN_KAFKA__BROKERS, CITYBRAIN_MQTT__HOST), or "
            "kafka_ingest=bridge without MQTT; `citybrain demo` starts embedded ones"
        )
    graph = load_network(settings.network)
    devices = device_index(graph)
    bootstrap = bootstrap_of(settings.kafka.brokers)
    registry = CollectorRegistry()
    bridge = (
        MqttBridge(
            settings,
            devices,
            bootstrap=bootstrap,
            mqtt_host=settings.mqtt.host,
            mqtt_port=settings.mqtt.port,
            registry=registry,
        )
        if settings.mqtt.host
        else None
    )
    send_errors = (bridge.bridge_metrics if bridge is not None else BridgeMetrics.create(registry)).send_errors
    kin = None
    if kafka_ingest:
        lag = Gauge(
            "citybrain_consumer_lag_messages",
            "Messages on this bridge's assigned ingest partitions not yet committed (highwater - committed), by topic",
            ["topic"],
            registry=registry,
        )
        metrics = bridge.metrics if bridge is not None else IngestMetrics.create(registry)
        kin = KafkaIngest(settings, devices, metrics, lag, bootstrap, send_errors)

    def forwarded() -> int:
        return (bridge.forwarded if bridge else 0) + (kin.forwarded if kin else 0)

    def dead_lettered() -> int:
        return (bridge.dead_lettered if bridge else 0) + (kin.dead_lettered if kin else 0)

    async def health(_: web.Request) -> web.Response:
        ok = (bridge is None or bridge.connected) and (kin is None or kin.ready.is_set())
        body: dict[str, Any] = {
            "status": "ok" if ok else "starting",
            "forwarded": forwarded(),
            "dead_lettered": dead_lettered(),
        }
        if kin is not None:
            body["kafka_ingest"] = {"forwarded": kin.forwarded, "dead_lettered": kin.dead_lettered}
        body["send_errors"] = {r: int(send_errors.labels(r)._value.get()) for r in SEND_ERROR_REASONS}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def run_kafka_ingest(k: KafkaIngest) -> None:
        s = settings
        await ensure_topics(bootstrap, [s.topics.name(n) for n in ("ingest", "events", "dead_letter")], s)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_batch_size=s.kafka.producer_max_batch_size,
            **kafka_client_kwargs(s),
        )
        await producer.start()
        try:
            await k.run(producer)
        finally:
            await producer.stop()

    def stop() -> None:
        if bridge is not None:
            bridge.stop()
        if kin is not None:
            kin.stop()

    webapp = web.Application()
    webapp.add_routes([web.get("/health", health), web.get("/metrics", metrics_view)])
    runner = web.AppRunner(webapp)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.bridge_web_port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    log.info("bridge web on http://%s:%s (/health, /metrics)", settings.web_host, settings.bridge_web_port)
    parts = ([bridge.run()] if bridge is not None else []) + ([run_kafka_ingest(kin)] if kin is not None else [])
    try:
        await asyncio.gather(*parts)
    finally:
        stop()
        await runner.cleanup()
        log.info("bridge stopped: %d forwarded, %d dead-lettered", forwarded(), dead_lettered())
