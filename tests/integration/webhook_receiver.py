"""A real HTTP webhook receiver for tests: verifies Standard Webhooks signatures with the reference library."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

from ops.brokers import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified: Any


@dataclass
class Receiver:
    """Answers each POST with ``script``'s next status (default 204), records verified deliveries."""

    secret: str = SECRET
    script: list[int | tuple[int, dict[str, str]] | float] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        step = self.script.pop(0) if self.script else 204
        if isinstance(step, float):  # hang this long (to provoke a timeout), then 204
            await asyncio.sleep(step)
            step = 204
        status, extra = step if isinstance(step, tuple) else (step, {})
        if 200 <= status < 300:
            headers = {k.lower(): v for k, v in request.headers.items()}
            is_json = "json" in headers.get("content-type", "")
            verified = Webhook(self.secret).verify(body, headers, json_parse=is_json)  # raises if the signature is bad
            self.received.append(Received(headers["webhook-id"], body, headers, verified))
        return web.Response(status=status, headers=extra)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def unique_ids(self) -> list[str]:
        seen: list[str] = []
        for r in self.received:
            if r.webhook_id not in seen:
                seen.append(r.webhook_id)
        return seen


class ThreadedReceiver:
    """A :class:`Receiver` on its own event loop thread (for tests whose sender is another process)."""

    def __init__(self, **kw: Any) -> None:
        self.receiver = Receiver(**kw)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(10)

    def start(self) -> None:
        self.call(self.receiver.start)

    def stop(self) -> None:
        self.call(self.receiver.stop)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
