"""``citybrain bridge``: the MQTT bridge process with its ``/health`` and ``/metrics`` web endpoints."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ops.runtime import load_network
from ops.settings import Settings
from streams.app import device_index
from streams.mqtt_bridge import MqttBridge
from streams.topics import bootstrap_of

log = logging.getLogger("citybrain.bridge")


async def run_bridge(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then stop taking MQTT messages, flush Kafka, ack, disconnect."""
    if not settings.kafka.brokers or not settings.mqtt.host:
        raise SystemExit(
            "the bridge needs kafka.brokers and mqtt.host (CITYBRAIN_KAFKA__BROKERS, CITYBRAIN_MQTT__HOST); "
            "`citybrain demo` starts embedded ones"
        )
    graph = load_network(settings.network)
    bridge = MqttBridge(
        settings,
        device_index(graph),
        bootstrap=bootstrap_of(settings.kafka.brokers),
        mqtt_host=settings.mqtt.host,
        mqtt_port=settings.mqtt.port,
    )

    async def health(_: web.Request) -> web.Response:
        ok = bridge.connected
        body = {
            "status": "ok" if ok else "starting",
            "forwarded": bridge.forwarded,
            "dead_lettered": bridge.dead_lettered,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(bridge.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    webapp = web.Application()
    webapp.add_routes([web.get("/health", health), web.get("/metrics", metrics)])
    runner = web.AppRunner(webapp)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.bridge_web_port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.stop)
    log.info("bridge web on http://%s:%s (/health, /metrics)", settings.web_host, settings.bridge_web_port)
    try:
        await bridge.run()
    finally:
        await runner.cleanup()
        log.info("bridge stopped: %d forwarded, %d dead-lettered", bridge.forwarded, bridge.dead_lettered)
