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
from dataclasses import dataclass, field
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


@dataclass
class Deliverer:
    """What ``webhook-deliver`` keeps: endpoints, their circuits, the endpoint table, metrics, the HTTP session."""

    app: Any
    hooks: Any  # the webhooks settings group (WebhookSettings)
    city: str
    table: Any  # Faust table webhook-endpoints: {"disabled": bool, "delivered": [delivery ids]} per endpoint
    dead: Any  # topic webhook-dead-letter
    metrics: WebhookMetrics
    endpoints: dict[str, Any] = field(init=False)  # name → WebhookEndpoint
    circuits: dict[str, EndpointCircuit] = field(init=False)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.endpoints = {ep.name: ep for ep in self.hooks.endpoints}
        self.circuits = {name: EndpointCircuit(name) for name in self.endpoints}
        for name in self.endpoints:
            self.metrics.endpoint_up.labels(name).set(1)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def on_change(self, change: StateChange) -> None:
        """One log line per change of an endpoint's state, and its ``endpoint_up`` gauge."""
        if change.to == EndpointState.FAILING:
            log.warning(change.message())
            self.metrics.endpoint_up.labels(change.endpoint).set(0)
            self.metrics.outages.inc()
            return
        log.info(change.message())
        self.metrics.endpoint_up.labels(change.endpoint).set(1)

    async def give_up(self, d: WebhookDelivery, outcome: str, reason: str, attempts: int, status: int | None) -> None:
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
        await self.dead.send(key=d.endpoint, value=rec)
        circuit = self.circuits.get(d.endpoint)
        if circuit is None or circuit.note_given_up():  # once per endpoint state, not once per expired delivery
            log.warning(
                "webhook %s to %s given up (%s): %s; the next ones until the endpoint's state changes are only "
                "counted (citybrain_webhook_deliveries_total, webhook-dead-letter)",
                d.delivery_id,
                d.endpoint,
                outcome,
                reason,
            )

    def caught_up(self, stream: Any) -> bool:
        """Whether the delivery just finished was the last one queued on its partition (best effort)."""
        event: Any = getattr(stream, "current_event", None)
        try:
            return bool(event.message.offset + 1 >= self.app.consumer.highwater(event.message.tp))
        except Exception:  # no consumer (in-memory tests) or no highwater yet: don't know
            return False

    async def send(self, ep: Any, d: WebhookDelivery, state: dict[str, Any]) -> str:
        """Deliver ``d`` (retrying while its endpoint fails); returns the result label."""
        res = await deliver(
            ep,
            d.alert,
            session=self.session(),
            settings=self.hooks,
            city=self.city,
            circuit=self.circuits[ep.name],
            queued_at_s=d.queued_at,
            on_attempt=lambda label: self.metrics.attempts.labels(label).inc(),
            on_change=self.on_change,
        )
        if res.outcome == "delivered":
            state["delivered"] = [*state["delivered"], d.delivery_id][-REMEMBER_DELIVERED:]
        else:
            if res.outcome == "gone":
                state["disabled"] = True
            await self.give_up(d, res.outcome, res.last_error or "", res.attempts, res.last_status)
        self.table[d.endpoint] = state
        return res.outcome

    async def handle(self, d: WebhookDelivery, stream: Any) -> None:
        """One queued delivery, in its endpoint's order."""
        state = dict(self.table.get(d.endpoint) or {"disabled": False, "delivered": []})
        ep = self.endpoints.get(d.endpoint)
        if ep is None:
            await self.give_up(d, "unknown_endpoint", "endpoint no longer configured", 0, None)
            result_label = "failed"
        elif state["disabled"]:
            await self.give_up(d, "disabled", "endpoint disabled after 410 Gone", 0, None)
            result_label = "disabled"
        elif d.delivery_id in state["delivered"]:
            result_label = "duplicate"
        else:
            result_label = await self.send(ep, d, state)
            if self.caught_up(stream) and (done := self.circuits[ep.name].backlog_done(time.time())) is not None:
                self.on_change(done)
        self.metrics.deliveries.labels(result_label).inc()
        self.metrics.latency.observe(max(0.0, time.time() - d.queued_at))


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    hooks = settings.webhooks
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
    deliverer = Deliverer(app, hooks, settings.city, table, dead, WebhookMetrics.create(pipe.registry))

    @app.agent(alerts, name="webhook-fanout")
    async def webhook_fanout(stream: Any) -> None:
        async for alert in stream:
            for ep in hooks.endpoints:
                if matches(alert.type, ep.event_types):
                    d = WebhookDelivery(
                        delivery_id=f"{ep.name}/{alert.event_id}",
                        endpoint=ep.name,
                        alert=alert.asdict(),
                        queued_at=time.time(),
                    )
                    await queue.send(key=ep.name, value=d)

    @app.agent(queue, name="webhook-deliver")
    async def webhook_deliver(stream: Any) -> None:
        async for d in stream:
            await deliverer.handle(d, stream)
