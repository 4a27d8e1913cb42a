"""Webhook delivery against a real local HTTP receiver that verifies signatures with ``standardwebhooks``.

The first group calls the delivery function directly (real HTTP, no Kafka); the last test runs the whole
path through a worker: ``alerts`` topic → fan-out → ``webhook-deliveries`` → signed POST.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.runtime import Stack
from ops.settings import WebhookEndpoint, WebhookSettings
from streams.webhook_circuit import EndpointCircuit, EndpointState, StateChange
from streams.webhook_delivery import deliver
from streams.webhook_format import sign

from .conftest import Brokers, consume_until, metric_value, unique_settings
from .webhook_receiver import SECRET, Receiver, ThreadedReceiver

pytestmark = pytest.mark.integration

ALERT: dict[str, Any] = {
    "event_id": "inc-7f3a:1",
    "type": "incident.new",
    "time": "2025-01-06T07:41:00Z",
    "subject": "inc-7f3a",
    "data": {"incident_id": "inc-7f3a", "segment_id": "B2C2", "severity": "major", "lanes": [1]},
}


def settings(**kw: Any) -> WebhookSettings:
    base: dict[str, Any] = {"allow_private_targets": True, "retry_initial_s": 0.05, "retry_max_s": 0.05, "jitter": 0.0}
    return WebhookSettings(**{**base, **kw})


def endpoint(url: str, **kw: Any) -> WebhookEndpoint:
    return WebhookEndpoint(name="ops", url=url, secret=SECRET, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_success_is_signed_per_standard_webhooks(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as s:
        res = await deliver(endpoint(receiver.url), ALERT, session=s, settings=settings(), city="hz")
    assert (res.outcome, res.attempts) == ("delivered", 1)
    (got,) = receiver.received
    assert got.webhook_id == "inc-7f3a:1"
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert got.verified["id"] == "inc-7f3a:1" and got.verified["specversion"] == "1.0"
    assert got.verified["type"] == "org.citybrain.incident.new" and got.verified["data"]["segment_id"] == "B2C2"


async def test_500_then_success_retries_with_the_same_id(receiver: Receiver) -> None:
    receiver.script = [500, 502]
    async with aiohttp.ClientSession() as s:
        res = await deliver(endpoint(receiver.url), ALERT, session=s, settings=settings(), city="hz")
    assert (res.outcome, res.attempts) == ("delivered", 3)
    assert receiver.attempts == 3 and [r.webhook_id for r in receiver.received] == ["inc-7f3a:1"]


async def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "2"})]
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:  # records the wait instead of sleeping 2 s
        waits.append(s)

    async with aiohttp.ClientSession() as s:
        res = await deliver(endpoint(receiver.url), ALERT, session=s, settings=settings(), city="hz", sleep=fake_sleep)
    assert res.outcome == "delivered" and waits == [2.0]


async def test_receiver_down_then_up_loses_nothing() -> None:
    r = Receiver()  # not started yet: connection refused
    hooks = settings(retry_initial_s=0.3, retry_max_s=0.3)
    attempts: list[str] = []

    async def start_after_two(s: float) -> None:
        import asyncio

        if len(attempts) == 2:
            await r.start()
        await asyncio.sleep(s)

    async with aiohttp.ClientSession() as s:
        res = await deliver(
            endpoint(r.url),
            ALERT,
            session=s,
            settings=hooks,
            city="hz",
            sleep=start_after_two,
            on_attempt=attempts.append,
        )
    await r.stop()
    assert res.outcome == "delivered" and attempts == ["retry", "retry", "success"]
    assert [x.webhook_id for x in r.received] == ["inc-7f3a:1"]


async def test_outage_backlog_resumes_within_the_retry_cap_in_order() -> None:
    """Issue #15/6 on a driven clock (no real sleeping): the receiver is refused for 228 s (3.8 min) while 12
    deliveries queue; the head is probed at most ``retry_max_s`` apart, so it goes through within the cap of the
    receiver coming back, and the rest follow at once, in order, each once; one report when the endpoint went down
    and one when it came back, not one per attempt."""
    r = Receiver()  # not started: connection refused
    hooks = settings(retry_initial_s=1.0, retry_max_s=30.0, jitter=0.2)
    clock = [1000.0]
    up_at = clock[0] + 228.0
    waits: list[float] = []
    started: list[bool] = []

    async def driven_sleep(s: float) -> None:
        waits.append(s)
        clock[0] += s
        if clock[0] >= up_at and not started:
            await r.start()
            started.append(True)

    circuit = EndpointCircuit("ops")
    changes: list[StateChange] = []
    alerts = [{**ALERT, "event_id": f"inc-7f3a:{v}"} for v in range(1, 13)]
    async with aiohttp.ClientSession() as s:
        results = []
        for n, a in enumerate(alerts):
            res = await deliver(
                endpoint(r.url),
                a,
                session=s,
                settings=hooks,
                city="hz",
                circuit=circuit,
                queued_at_s=1000.0 + n,
                clock=lambda: clock[0],
                sleep=driven_sleep,
                on_change=changes.append,
            )
            results.append(res)
            if n == 0:
                delivered_at = clock[0]
    await r.stop()
    assert max(waits) <= 30.0  # capped (the old schedule waited 5, 30, 120, 600 s …)
    assert delivered_at - up_at <= 30.0  # the probe found the receiver within the cap
    assert [res.outcome for res in results] == ["delivered"] * 12
    assert [res.attempts for res in results[1:]] == [1] * 11  # the backlog went at full speed
    assert [x.webhook_id for x in r.received] == [a["event_id"] for a in alerts]  # in order, each once
    assert [c.to for c in changes] == [EndpointState.FAILING, EndpointState.HEALTHY]
    assert "Connect" in (changes[0].error or "") and changes[1].outage_s == delivered_at - 1000.0


async def test_410_disables(receiver: Receiver) -> None:
    receiver.script = [410]
    async with aiohttp.ClientSession() as s:
        res = await deliver(endpoint(receiver.url), ALERT, session=s, settings=settings(), city="hz")
    assert (res.outcome, res.attempts, res.last_status) == ("gone", 1, 410)
    assert receiver.received == []


async def test_timeout_then_give_up_after_max_age(receiver: Receiver) -> None:
    receiver.script = [1.0] * 10  # each attempt hangs 1 s; the endpoint allows 0.2 s
    async with aiohttp.ClientSession() as s:
        res = await deliver(
            endpoint(receiver.url, timeout_s=0.2),
            ALERT,
            session=s,
            settings=settings(max_age_s=0.5),
            city="hz",
        )
    assert res.outcome == "failed" and res.attempts >= 2
    assert "timed out" in (res.last_error or "") and "max_age_s=0.5" in (res.last_error or "")


async def test_ssrf_guard_refuses_loopback_unless_allowed(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as s:
        res = await deliver(
            endpoint(receiver.url), ALERT, session=s, settings=settings(allow_private_targets=False), city="hz"
        )
        assert res.outcome == "refused" and "127.0.0.1" in (res.last_error or "")
        for url in ("http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/"):
            res = await deliver(
                endpoint(url), ALERT, session=s, settings=settings(allow_private_targets=False), city="hz"
            )
            assert res.outcome == "refused", url
    assert receiver.attempts == 0


async def test_cap_and_alertmanager_formats(receiver: Receiver) -> None:
    cleared = {**ALERT, "event_id": "inc-7f3a:3", "type": "incident.cleared"}
    async with aiohttp.ClientSession() as s:
        await deliver(endpoint(receiver.url, format="cap"), cleared, session=s, settings=settings(), city="hz")
        await deliver(endpoint(receiver.url, format="alertmanager"), cleared, session=s, settings=settings(), city="hz")
    cap, am = receiver.received
    assert cap.headers["content-type"] == "application/cap+xml"
    assert b"<msgType>Cancel</msgType>" in cap.body and b"urn:oasis:names:tc:emergency:cap:1.2" in cap.body
    payload = orjson.loads(am.body)
    assert payload["version"] == "4" and payload["status"] == "resolved"
    assert payload["alerts"][0]["fingerprint"] == "inc-7f3a"


def test_signature_matches_the_spec_example() -> None:
    # example from the Standard Webhooks spec (secret, msg id, timestamp and body as published there)
    body = b'{"test": 2432232314}'
    assert (
        sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_worker_delivers_alerts_from_kafka_once_each(brokers: Brokers, tmp_path: Any) -> None:
    rx = ThreadedReceiver(script=[503, 503])  # two failures first: the worker must retry
    rx.start()
    try:
        hook = {"name": "ops", "url": rx.receiver.url, "secret": SECRET, "event_types": ["incident.*"]}
        s = unique_settings(
            brokers,
            webhooks={"endpoints": [hook], "allow_private_targets": True, "retry_initial_s": 0.2, "retry_max_s": 0.2},
        )
        with Stack(s, tmp_path) as stack:
            stack.start_brokers()
            worker = stack.start_worker()
            stack.wait_healthy(worker)
            alerts = [
                {**ALERT, "event_id": f"inc-{i}:1", "subject": f"inc-{i}", "time": "2025-01-06T07:41:00Z"}
                for i in range(5)
            ] + [
                {**ALERT, "event_id": "inc-0:2", "subject": "inc-0", "type": "incident.updated"},
                {**ALERT, "event_id": "dev-1:1", "subject": "dev-1", "type": "device_fault.new"},  # not subscribed
            ]

            async def produce() -> None:
                p = AIOKafkaProducer(bootstrap_servers=brokers.bootstrap)
                await p.start()
                try:
                    for a in [*alerts, alerts[0]]:  # the first one twice: must be delivered once
                        await p.send_and_wait(s.topics.name("alerts"), orjson.dumps(a), key=str(a["subject"]).encode())
                finally:
                    await p.stop()

            import asyncio

            asyncio.run(produce())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(rx.receiver.unique_ids()) < 6:
                time.sleep(0.2)
            time.sleep(1.0)  # let a wrongly duplicated delivery show up
            ids = rx.receiver.unique_ids()
            assert sorted(ids) == sorted([f"inc-{i}:1" for i in range(5)] + ["inc-0:2"])  # none missing
            assert ids.index("inc-0:1") < ids.index("inc-0:2")  # one incident's updates stay in order
            assert len(rx.receiver.received) == 6  # the re-sent alert was not delivered again
            url = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
            assert metric_value(url, "citybrain_webhook_deliveries_total", {"result": "delivered"}) == 6
            assert metric_value(url, "citybrain_webhook_deliveries_total", {"result": "duplicate"}) == 1
            assert metric_value(url, "citybrain_webhook_attempts_total", {"outcome": "retry"}) == 2
            consume_until(brokers.bootstrap, s.topics.name("webhook_deliveries"), lambda rs: len(rs) == 7)
    finally:
        rx.close()
