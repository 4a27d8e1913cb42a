"""Delivering one alert to one webhook endpoint: SSRF guard, signed POST, capped retries, Retry-After, 410.

The Faust agents in ``streams/agents/webhooks.py`` call :func:`deliver` for each queued delivery, in order per
endpoint (the deliveries topic is keyed by endpoint name), with the endpoint's
:class:`~streams.webhook_circuit.EndpointCircuit`.

- Success is any 2xx. Redirects are not followed (a 3xx is a failure).
- **410 Gone** disables the endpoint: this delivery and the later ones are dead-lettered, not sent.
- Anything else (other status, timeout, connection error) marks the endpoint failing and is retried after a
  capped exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``, ± jitter), or after the
  receiver's ``Retry-After`` (seconds or HTTP date, capped by ``max_retry_after_s``). The delivery is the probe of
  its failing endpoint: the later ones wait behind it, in order, and go out at full speed once it succeeds.
- **Give-up rule**: a delivery still undelivered ``max_age_s`` after it was queued, while its endpoint keeps
  failing, is dead-lettered with the last error (a delivery reaching the head of the queue already that old while
  the endpoint is failing is dead-lettered without another attempt). A healthy endpoint always gets an attempt.
- The **SSRF guard** resolves the host and refuses loopback, private, link-local, multicast, reserved and
  unspecified addresses unless ``webhooks.allow_private_targets`` is set.
- Every attempt carries the same ``webhook-id`` (the alert's ``event_id``), so a receiver dedupes retries and
  redeliveries after a worker restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ops.settings import WebhookEndpoint, WebhookSettings
from streams.webhook_circuit import EndpointCircuit, StateChange
from streams.webhook_format import render, sign


class RefusedTarget(ValueError):
    """The endpoint's address is not allowed (SSRF guard) or its URL is unusable."""


@dataclass(frozen=True)
class DeliveryResult:
    outcome: str  # "delivered" | "gone" | "failed" | "refused"
    attempts: int
    last_status: int | None
    last_error: str | None


async def check_target(url: str, allow_private: bool) -> None:
    """Raise :class:`RefusedTarget` unless every address ``url``'s host resolves to is public (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget(f"webhook URL must be http(s)://host/…, got {url!r}")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedTarget(f"cannot resolve {parts.hostname!r}: {exc}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if (
            ip.is_loopback
            or ip.is_private
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
        ):
            raise RefusedTarget(
                f"{parts.hostname} resolves to {ip}, a non-public address; set webhooks.allow_private_targets "
                "to deliver to on-site receivers"
            )


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Attempt:
    """One HTTP POST: its status (None without an answer), error and the receiver's Retry-After in seconds."""

    status: int | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def post_once(
    endpoint: WebhookEndpoint, msg_id: str, body: bytes, content_type: str, session: aiohttp.ClientSession
) -> Attempt:
    """POST one signed delivery (a fresh ``webhook-timestamp`` and signature per attempt, the same id)."""
    ts = int(time.time())
    headers = {
        "content-type": content_type,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(endpoint.secret.get_secret_value(), msg_id, ts, body),
        "user-agent": "citybrain-webhooks/1",
    }
    try:
        async with session.post(
            endpoint.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s),
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 300 or resp.status == 410:
                return Attempt(resp.status, None)
            return Attempt(resp.status, f"HTTP {resp.status}", retry_after_s(resp.headers.get("retry-after"), ts))
    except TimeoutError:
        return Attempt(None, f"timed out after {endpoint.timeout_s:g} s")
    except aiohttp.ClientError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}")


async def deliver(
    endpoint: WebhookEndpoint,
    alert: dict[str, Any],
    *,
    session: aiohttp.ClientSession,
    settings: WebhookSettings,
    city: str,
    circuit: EndpointCircuit | None = None,
    queued_at_s: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_attempt: Callable[[str], None] | None = None,
    on_change: Callable[[StateChange], None] | None = None,
    is_disabled: Callable[[], bool] = lambda: False,
) -> DeliveryResult:
    """Deliver ``alert`` to ``endpoint``, retrying until it is delivered or given up on (see module doc).

    Parameters
    ----------
    circuit
        The endpoint's health, shared by its deliveries (a fresh healthy one if None).
    queued_at_s
        When the delivery was queued (Unix s; now if None): the start of its ``max_age_s``.
    clock, sleep
        Time source and wait (tests drive both).
    on_attempt
        Called with each attempt's outcome label (``success``, ``retry``, ``gone``, ``failed``, ``refused``)
        for metrics.
    on_change
        Called with each change of the endpoint's state (went down, came back, backlog delivered).
    is_disabled
        Checked before each retry (another delivery may have found the endpoint gone).
    """
    note = on_attempt or (lambda _label: None)
    report = on_change or (lambda _change: None)
    circuit = circuit if circuit is not None else EndpointCircuit(endpoint.name)
    try:
        await check_target(endpoint.url, settings.allow_private_targets)
    except RefusedTarget as exc:
        note("refused")
        return DeliveryResult("refused", 0, None, str(exc))
    body, content_type = render(alert, endpoint.format, city)
    queued = queued_at_s if queued_at_s is not None else clock()
    give_up_at = queued + settings.max_age_s
    if not circuit.up and clock() >= give_up_at:
        return DeliveryResult("failed", 0, None, _too_old(settings, circuit.last_error))
    attempts = 0
    while True:
        attempts += 1
        circuit.probe()
        res = await post_once(endpoint, str(alert["event_id"]), body, content_type, session)
        now = clock()
        if res.ok:
            note("success")
            _report(report, circuit.succeeded(now, queued))
            return DeliveryResult("delivered", attempts, res.status, None)
        if res.status == 410:
            note("gone")
            return DeliveryResult("gone", attempts, 410, "receiver answered 410 Gone: endpoint disabled")
        error = res.error or "failed"
        _report(report, circuit.failed(now, error))
        if now >= give_up_at:
            note("failed")
            return DeliveryResult("failed", attempts, res.status, _too_old(settings, error))
        note("retry")
        wait = circuit.backoff_s(settings.retry_initial_s, settings.retry_max_s, settings.jitter)
        if res.retry_after_s is not None:
            wait = max(wait, min(res.retry_after_s, settings.max_retry_after_s))
        await sleep(min(wait, give_up_at - now))
        if is_disabled():
            note("gone")
            return DeliveryResult("gone", attempts, res.status, "endpoint disabled while retrying")


def _too_old(settings: WebhookSettings, error: str | None) -> str:
    return f"not delivered within max_age_s={settings.max_age_s:g} s of being queued; last error: {error}"


def _report(report: Callable[[StateChange], None], change: StateChange | None) -> None:
    if change is not None:
        report(change)
