"""The control-centre console and its HTTP API, on the worker's web server (aiohttp under Faust).

Routes (JSON unless said; the OpenAPI document is at ``/api/openapi.json``):

- ``GET /`` → the console (``/console/``: static assets from ``ops/console``, no CDN).
- ``GET /api/network`` → the road graph for drawing: segments with geometry, intersections.
- ``GET /api/console/config`` → console options: the optional base-map tile layer (``console.tile_url``).
- ``GET /api/snapshot`` → segments, incidents, device faults, recommendations, city summaries.
- ``GET /api/stream`` → Server-Sent Events: ``segment``, ``incident``, ``device_fault``, ``recommendation``,
  ``summary``, ``resync``.
- ``POST /api/incidents/{id}/acknowledge`` and ``…/resolve`` (operator), body ``{"note": "…"}``.
- ``POST /api/recommendations/{id}/accept`` and ``…/reject`` (operator).

Authentication: with ``auth.users`` configured, every ``/api`` route needs ``Authorization: Bearer <token>``
(or ``?token=`` for EventSource, which cannot set headers); viewers read, operators also act. The operator
name recorded with an action is the authenticated user's (or the body's ``operator`` when auth is off).

The console page carries a Content-Security-Policy allowing only its own origin, plus the tile server's origin in
``img-src`` when a base-map tile URL is configured: without one the console makes no external request at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import networkx as nx
import orjson
from aiohttp import web

from models.greenwave import plan_green_wave
from models.indicators import current_travel_times_s, route_travel_time
from ops.settings import ConsoleSettings
from roadnet.geojson import graph_projection
from streams.console_view import OutputView

if TYPE_CHECKING:
    from streams.app import Pipeline

ASSETS = Path(__file__).resolve().parents[1] / "ops" / "console"
ACTIONS = {
    "incidents": ("incident", {"acknowledge", "resolve"}),
    "recommendations": ("recommendation", {"accept", "reject"}),
}


def console_config(c: ConsoleSettings) -> dict[str, Any]:
    """What the console page needs from the settings (``tiles`` is null without a tile URL)."""
    tiles = None
    if c.tile_url:
        tiles = {"url": c.tile_url, "attribution": c.tile_attribution, "max_zoom": c.tile_max_zoom}
    return {"tiles": tiles}


def content_security_policy(c: ConsoleSettings) -> str:
    """The console's CSP: its own origin only; the tile server's origin in ``img-src`` when tiles are on."""
    img = "'self' data:"
    if c.tile_url:
        u = urlsplit(c.tile_url)
        img += f" {u.scheme}://{u.netloc}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {img}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def network_payload(pipe: Pipeline) -> dict[str, Any]:
    """Segments (geometry in local metres and lon/lat when known) and intersections, for the map.

    Lon/lat are derived from the graph's geo-reference (``source_meta.geo_reference``) when the edges do not carry
    them, so a base map can be laid under any geo-referenced network.
    """
    g = pipe.graph
    proj = graph_projection(g)

    def lonlat(xy: list[list[float]] | None) -> list[list[float]] | None:
        if proj is None or not xy:
            return None
        return [[round(c, 7) for c in proj.to_lonlat(x, y)] for x, y in xy]

    segs = []
    for u, v, k, d in g.edges(keys=True, data=True):
        segs.append(
            {
                "segment_id": k,
                "from": u,
                "to": v,
                "lanes": d["lanes"],
                "length_m": d["length_m"],
                "speed_limit_kmh": d["speed_limit_kmh"],
                "geometry_xy_m": d.get("geometry_xy_m"),
                "geometry_lonlat": d.get("geometry_lonlat") or lonlat(d.get("geometry_xy_m")),
                "detector_ids": d.get("detector_ids", []),
            }
        )
    nodes = [
        {
            "id": n,
            "x_m": d.get("x_m"),
            "y_m": d.get("y_m"),
            "lon": d.get("lon"),
            "lat": d.get("lat"),
            "tls_id": d.get("tls_id"),
        }
        for n, d in g.nodes(data=True)
    ]
    return {"name": g.graph.get("name"), "crs": g.graph.get("crs"), "segments": segs, "nodes": nodes}


def _user(pipe: Pipeline, request: web.Request) -> tuple[str, str] | None:
    """(name, role) of the caller, or None when not authenticated. Auth off → ('anonymous', 'operator')."""
    users = pipe.settings.auth.users
    if not users:
        return ("anonymous", "operator")
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.query.get("token", "")
    if not token:
        return None
    for u in users:
        if hmac.compare_digest(u.token.get_secret_value().encode(), token.encode()):
            return (u.name, u.role)
    return None


def register(pipe: Pipeline) -> OutputView:
    """Add the console routes to the worker's web server and start the output view with the worker."""
    app = pipe.app
    view = OutputView(pipe.settings, history_s=pipe.settings.console_history_s)
    actions_topic = app.topic(
        pipe.settings.topics.name("operator_actions"), key_type=str, value_type=bytes, value_serializer="raw"
    )
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]

    @app.task
    async def console_view() -> None:
        await view.run()

    @web.middleware
    async def auth_mw(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path != "/api/openapi.json":
            who = _user(pipe, request)
            if who is None:
                return web.json_response(
                    {"error": "authentication required"}, status=401, headers={"WWW-Authenticate": "Bearer"}
                )
            request["user"] = who
        return await handler(request)

    web_app.middlewares.append(auth_mw)

    async def index(_: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    csp = content_security_policy(pipe.settings.console)

    async def console_index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(
            ASSETS / "index.html", headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"}
        )

    async def config(_: web.Request) -> web.Response:
        return web.json_response(console_config(pipe.settings.console))

    async def network(_: web.Request) -> web.Response:
        return web.json_response(network_payload(pipe), dumps=lambda o: orjson.dumps(o).decode())

    async def snapshot(_: web.Request) -> web.Response:
        return web.json_response(view.snapshot(), dumps=lambda o: orjson.dumps(o).decode())

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        q = view.subscribe()
        try:
            await resp.write(b"event: hello\ndata: {}\n\n")
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), timeout=15.0)
                except TimeoutError:
                    frame = b": keep-alive\n\n"
                await resp.write(frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            view.unsubscribe(q)
        return resp

    async def act(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        target, allowed = ACTIONS[kind]
        action = request.match_info["action"]
        if action not in allowed:
            return web.json_response({"error": f"unknown action {action!r}; one of {sorted(allowed)}"}, status=404)
        name, role = request["user"]
        if role != "operator":
            return web.json_response({"error": "operators only"}, status=403)
        body: dict[str, Any] = {}
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        operator = name if pipe.settings.auth.users else str(body.get("operator") or "anonymous")[:64]
        rec = {
            "action_id": str(uuid.uuid4()),
            "target": target,
            "target_id": request.match_info["id"],
            "action": action,
            "operator": operator,
            "note": str(body.get("note") or "")[:2000],
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        await actions_topic.send(key=rec["target_id"], value=orjson.dumps(rec))
        return web.json_response(rec, status=202)

    async def route(request: web.Request) -> web.Response:
        origin, dest = request.query.get("from", ""), request.query.get("to", "")
        if not origin or not dest:
            return web.json_response({"error": "give ?from=<intersection>&to=<intersection>"}, status=400)
        try:
            res = route_travel_time(pipe.graph, origin, dest, current_travel_times_s(pipe.graph, view.segments))
        except nx.NodeNotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except nx.NetworkXNoPath:
            return web.json_response({"error": f"no route from {origin} to {dest}"}, status=422)
        return web.json_response(res)

    async def greenwave(request: web.Request) -> web.Response:
        """Emergency green wave: route on live travel times and a temporary plan per signal on it."""
        origin, dest = request.query.get("from", ""), request.query.get("to", "")
        if not origin or not dest:
            return web.json_response(
                {"error": "give ?from=<intersection>&to=<intersection>[&depart=<Unix s>]"}, status=400
            )
        try:
            depart = float(request.query.get("depart") or time.time())
        except ValueError:
            return web.json_response({"error": "depart must be Unix seconds"}, status=400)
        try:
            plan = plan_green_wave(pipe.graph, origin, dest, depart, current_travel_times_s(pipe.graph, view.segments))
        except nx.NodeNotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except nx.NetworkXNoPath:
            return web.json_response({"error": f"no route from {origin} to {dest}"}, status=422)
        body = dataclasses.asdict(plan)
        body["all_green"] = plan.all_green
        return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    web_app.router.add_get("/", index)
    web_app.router.add_get("/console/", console_index)
    web_app.router.add_static("/console/assets/", ASSETS)
    web_app.router.add_get("/api/network", network)
    web_app.router.add_get("/api/console/config", config)
    web_app.router.add_get("/api/snapshot", snapshot)
    web_app.router.add_get("/api/stream", stream)
    web_app.router.add_post("/api/{kind:incidents|recommendations}/{id}/{action}", act)
    web_app.router.add_get("/api/route", route)
    web_app.router.add_get("/api/greenwave", greenwave)
    web_app.router.add_get("/api/openapi.json", openapi)
    pipe.console_view = view
    return view


def _op(summary: str, *, params: list[str] | None = None, body: bool = False, role: str = "viewer") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Role: {role}.",
        "responses": {"200": {"description": "OK"}},
    }
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if body:
        op["requestBody"] = {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"note": {"type": "string"}, "operator": {"type": "string"}},
                    }
                }
            }
        }
        op["responses"] = {
            "202": {"description": "action recorded on operator-actions"},
            "403": {"description": "not an operator"},
        }
    return op


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "citybrain worker API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": _op("Worker health (200 ok, 503 starting/rebalancing)")},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/api/segments": {"get": _op("Latest segment states owned by this worker")},
        "/api/segments/{segment_id}": {"get": _op("One segment's latest state", params=["segment_id"])},
        "/api/network": {"get": _op("Road graph for drawing")},
        "/api/console/config": {"get": _op("Console options: the optional base-map tile layer")},
        "/api/snapshot": {
            "get": _op("Whole-city view: segments, incidents, device faults, recommendations, summaries")
        },
        "/api/stream": {"get": _op("Server-Sent Events of every change")},
        "/api/route": {
            "get": {
                **_op("Fastest route and its expected travel time on the live state"),
                "parameters": [
                    {"name": "from", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
            }
        },
        "/api/greenwave": {
            "get": {
                **_op("Emergency green wave: fastest route and a temporary plan per signal so the vehicle meets green"),
                "parameters": [
                    {"name": "from", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "depart", "in": "query", "required": False, "schema": {"type": "number"}},
                ],
            }
        },
        "/api/incidents/{id}/acknowledge": {
            "post": _op("Acknowledge an incident", params=["id"], body=True, role="operator")
        },
        "/api/incidents/{id}/resolve": {"post": _op("Resolve an incident", params=["id"], body=True, role="operator")},
        "/api/recommendations/{id}/accept": {
            "post": _op("Accept a signal recommendation", params=["id"], body=True, role="operator")
        },
        "/api/recommendations/{id}/reject": {
            "post": _op("Reject a signal recommendation", params=["id"], body=True, role="operator")
        },
    },
}
