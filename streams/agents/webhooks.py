"""Agents ``webhook-fanout`` and ``webhook-deliver``: alerts → one durable delivery per subscribed endpoint.

1. ``webhook-fanout`` reads ``alerts`` and queues a :class:`~streams.records.WebhookDelivery` on
   ``webhook-deliveries`` for every endpoint whose ``event_types`` globs match the alert type, keyed by endpoint
   name: one partition per endpoint, so each endpoint receives its alerts in order.
2. ``webhook-deliver`` takes the queue in order and calls :func:`streams.webhook_delivery.deliver` (capped
   backoff with jitter, Retry-After, 410, SSRF guard) with the endpoint's
   :class:`~streams.webhook_circuit.EndpointCircuit`: while an endpoint fails, the head of its queue is retried as
   the probe, and once it answers the backlog drains at full speed. A delivery that is given up on (``max_age_s``)
   goes to ``webhook-dead-letter`` with why. Its Kafka offset is committed only after the delivery finished, so a
   worker restart re-delivers (with the same ``webhook-id``) rather than loses.

Logged once per change of an endpoint's state (failing with the error; recovered with the outage duration; its
backlog delivered), not per attempt; ``citybrain_webhook_endpoint_up{endpoint}`` follows the state.

The table ``webhook-endpoints`` (keyed by endpoint, co-partitioned with the queue) remembers endpoints disabled by
a 410 and the last delivered ids, so a redelivered queue entry is not sent twice.

Head-of-line blocking is by design per endpoint (ordering); endpoints share a partition only when their names
hash together — give the deliveries topic more partitions than endpoints.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import faust

from streams.metrics import WebhookMetrics
from streams.records import Alert, WebhookDeadLetter, WebhookDelivery
from streams.webhook_circuit import EndpointCircuit, EndpointState, StateChange
from streams.webhook_delivery import deliver

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
REMEMBER_DELIVERED = 1000


def matches(event_type: str, patterns: list[str]) -> bool:
    """Whether an alert type matches any glob of a subscription (``*``, ``incident.*``, …)."""
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    hooks = settings.webhooks
    endpoints = {ep.name: ep for ep in hooks.endpoints}
    metrics = WebhookMetrics.create(pipe.registry)
    t = settings.topics
    alerts = app.topic(t.name("alerts"), key_type=str, value_type=Alert)
    queue = app.topic(t.name("webhook_deliveries"), key_type=str, value_type=WebhookDelivery)
    dead = app.topic(t.name("webhook_dead_letter"), key_type=str, value_type=WebhookDeadLetter)
    pipe.extra_topics.update({"alerts": alerts, "webhook_deliveries": queue, "webhook_dead_letter": dead})
    table = app.Table(
        "webhook-endpoints",
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
        help="per endpoint: disabled flag and recently delivered ids",
    )
    pipe.tables["webhook-endpoints"] = table
    session_box: list[aiohttp.ClientSession] = []

    def session() -> aiohttp.ClientSession:
        if not session_box or session_box[0].closed:
            session_box[:] = [aiohttp.ClientSession()]
        return session_box[0]

    @app.agent(alerts, name="webhook-fanout")
    async def webhook_fanout(stream: Any) -> None:
        async for alert in stream:
            for ep in endpoints.values():
                if matches(alert.type, ep.event_types):
                    d = WebhookDelivery(
                        delivery_id=f"{ep.name}/{alert.event_id}",
                        endpoint=ep.name,
                        alert=alert.asdict(),
                        queued_at=time.time(),
                    )
                    await queue.send(key=ep.name, value=d)

    circuits = {name: EndpointCircuit(name) for name in endpoints}
    for name in endpoints:
        metrics.endpoint_up.labels(name).set(1)

    def on_change(change: StateChange) -> None:
        if change.to == EndpointState.FAILING:
            log.warning(change.message())
            metrics.endpoint_up.labels(change.endpoint).set(0)
            metrics.outages.inc()
            return
        log.info(change.message())
        metrics.endpoint_up.labels(change.endpoint).set(1)

    async def give_up(d: WebhookDelivery, outcome: str, reason: str, attempts: int, status: int | None) -> None:
        rec = WebhookDeadLetter(
            delivery_id=d.delivery_id,
            endpoint=d.endpoint,
            outcome=outcome,
            reason=reason,
            attempts=attempts,
            last_status=status,
            alert=d.alert,
            failed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        await dead.send(key=d.endpoint, value=rec)
        circuit = circuits.get(d.endpoint)
        if circuit is not None and circuit.note_given_up():  # one line per outage, not one per expired delivery
            log.warning(
                "webhook %s to %s given up (%s): %s; later ones given up during this outage are counted in "
                "citybrain_webhook_deliveries_total{result=%s}",
                d.delivery_id,
                d.endpoint,
                outcome,
                reason,
                outcome,
            )
        elif circuit is None:
            log.warning("webhook %s to %s given up (%s): %s", d.delivery_id, d.endpoint, outcome, reason)

    def caught_up(stream: Any) -> bool:
        """Whether the delivery just finished was the last one queued on its partition (best effort)."""
        event: Any = getattr(stream, "current_event", None)
        try:
            return bool(event.message.offset + 1 >= app.consumer.highwater(event.message.tp))
        except Exception:  # no consumer (in-memory tests) or no highwater yet: don't know
            return False

    async def send_one(ep: Any, d: WebhookDelivery, state: dict[str, Any]) -> str:
        res = await deliver(
            ep,
            d.alert,
            session=session(),
            settings=hooks,
            city=settings.city,
            circuit=circuits[ep.name],
            queued_at_s=d.queued_at,
            on_attempt=lambda label: metrics.attempts.labels(label).inc(),
            on_change=on_change,
        )
        if res.outcome == "delivered":
            state["delivered"] = [*state["delivered"], d.delivery_id][-REMEMBER_DELIVERED:]
        else:
            if res.outcome == "gone":
                state["disabled"] = True
            await give_up(d, res.outcome, res.last_error or "", res.attempts, res.last_status)
        table[d.endpoint] = state
        return res.outcome

    @app.agent(queue, name="webhook-deliver")
    async def webhook_deliver(stream: Any) -> None:
        async for d in stream:
            state = dict(table.get(d.endpoint) or {"disabled": False, "delivered": []})
            ep = endpoints.get(d.endpoint)
            if ep is None:
                await give_up(d, "unknown_endpoint", "endpoint no longer configured", 0, None)
                result_label = "failed"
            elif state["disabled"]:
                await give_up(d, "disabled", "endpoint disabled after 410 Gone", 0, None)
                result_label = "disabled"
            elif d.delivery_id in state["delivered"]:
                result_label = "duplicate"
            else:
                result_label = await send_one(ep, d, state)
                if caught_up(stream) and (done := circuits[ep.name].backlog_done(time.time())) is not None:
                    on_change(done)
            metrics.deliveries.labels(result_label).inc()
            metrics.latency.observe(max(0.0, time.time() - d.queued_at))
