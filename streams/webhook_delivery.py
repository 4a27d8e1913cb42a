"""Delivering one alert to one webhook endpoint: SSRF guard, signed POST, retries, Retry-After, 410.

The Faust agents in ``streams/agents/webhooks.py`` call :func:`deliver` for each queued delivery, in order per
endpoint (the deliveries topic is keyed by endpoint name).

- Success is any 2xx. Redirects are not followed (a 3xx is a failure).
- **410 Gone** disables the endpoint: this delivery and the later ones are dead-lettered, not sent.
- Anything else (other status, timeout, connection error) is retried after ``retry_schedule_s[i]`` ± jitter,
  or after the receiver's ``Retry-After`` (seconds or HTTP date, capped); after the last wait the delivery is
  dead-lettered with the last error.
- The **SSRF guard** resolves the host and refuses loopback, private, link-local, multicast, reserved and
  unspecified addresses unless ``webhooks.allow_private_targets`` is set.
- Every attempt carries the same ``webhook-id`` (the alert's ``event_id``), so a receiver dedupes retries and
  redeliveries after a worker restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ops.settings import WebhookEndpoint, WebhookSettings
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


async def deliver(
    endpoint: WebhookEndpoint,
    alert: dict[str, Any],
    *,
    session: aiohttp.ClientSession,
    settings: WebhookSettings,
    city: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_attempt: Callable[[str], None] | None = None,
    is_disabled: Callable[[], bool] = lambda: False,
) -> DeliveryResult:
    """Deliver ``alert`` to ``endpoint`` with retries (see module doc).

    Parameters
    ----------
    on_attempt
        Called with each attempt's outcome label (``success``, ``retry``, ``gone``, ``failed``, ``refused``)
        for metrics.
    is_disabled
        Checked before each retry (another delivery may have found the endpoint gone).
    """
    note = on_attempt or (lambda _label: None)
    try:
        await check_target(endpoint.url, settings.allow_private_targets)
    except RefusedTarget as exc:
        note("refused")
        return DeliveryResult("refused", 0, None, str(exc))
    body, content_type = render(alert, endpoint.format, city)
    msg_id = str(alert["event_id"])
    secret = endpoint.secret.get_secret_value()
    waits = list(settings.retry_schedule_s)
    attempts = 0
    last_status: int | None = None
    last_error: str | None = None
    while True:
        attempts += 1
        ts = int(time.time())
        headers = {
            "content-type": content_type,
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body),
            "user-agent": "citybrain-webhooks/1",
        }
        hint: float | None = None
        try:
            async with session.post(
                endpoint.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s),
            ) as resp:
                last_status = resp.status
                await resp.read()
                if 200 <= resp.status < 300:
                    note("success")
                    return DeliveryResult("delivered", attempts, resp.status, None)
                if resp.status == 410:
                    note("gone")
                    return DeliveryResult("gone", attempts, 410, "receiver answered 410 Gone: endpoint disabled")
                last_error = f"HTTP {resp.status}"
                hint = retry_after_s(resp.headers.get("retry-after"), time.time())
        except TimeoutError:
            last_status, last_error = None, f"timed out after {endpoint.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            last_status, last_error = None, f"{type(exc).__name__}: {exc}"
        if not waits:
            note("failed")
            return DeliveryResult("failed", attempts, last_status, last_error)
        note("retry")
        base = waits.pop(0)
        wait = base * (1 + random.uniform(-settings.jitter, settings.jitter))
        if hint is not None:
            wait = max(wait, min(hint, settings.max_retry_after_s))
        await sleep(wait)
        if is_disabled():
            note("gone")
            return DeliveryResult("gone", attempts, last_status, "endpoint disabled while retrying")
