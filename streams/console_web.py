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
name recorded with an action is the authenticated user's; without auth it is ``unauthenticated`` and the body's
``operator`` is kept only as ``claimed_operator``.

Writes must be JSON from the console's own origin in every mode (:func:`streams.api_input.check_write_origin`:
415 / 403 otherwise), ids, bodies and query parameters are checked (400 with a reason, 404 for ids the console
view has not seen), and every error on ``/api`` is a JSON ``{"error": reason}``.

The console page carries a Content-Security-Policy allowing only its own origin, plus the tile server's origin in
``img-src`` when a base-map tile URL is configured: without one the console makes no external request at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
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
from streams.api_input import (
    DEPART_MAX_S,
    DEPART_MIN_S,
    MAX_BODY_BYTES,
    MAX_ID_CHARS,
    MAX_NODE_CHARS,
    MAX_NOTE_CHARS,
    MAX_OPERATOR_CHARS,
    ApiError,
    check_id,
    check_write_origin,
    parse_action_body,
    parse_depart,
    parse_node,
)
from streams.console_view import OutputView

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
UNAUTHENTICATED = "unauthenticated"
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
    """(name, role) of the caller, or None when not authenticated. Auth off → ('unauthenticated', 'operator')."""
    users = pipe.settings.auth.users
    if not users:
        return (UNAUTHENTICATED, "operator")
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
    async def errors_mw(request: web.Request, handler: Any) -> web.StreamResponse:
        """Every refusal on ``/api`` as JSON ``{"error": reason}``; unexpected errors logged once, answered 500."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": exc.reason}, status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
            return web.json_response({"error": exc.reason or str(exc)}, status=exc.status, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path[:200])
            return web.json_response({"error": "internal error (logged on the worker)"}, status=500)

    @web.middleware
    async def same_origin_mw(request: web.Request, handler: Any) -> web.StreamResponse:
        """State-changing requests only as JSON from the console's own origin (CSRF), with or without auth."""
        if request.path.startswith("/api/") and request.method not in ("GET", "HEAD", "OPTIONS"):
            proto = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
            check_write_origin(
                request.headers.get("Content-Type"),
                request.headers.get("Origin"),
                request.headers.get("Sec-Fetch-Site"),
                request.host,
                {request.scheme, proto} - {""},
            )
        return await handler(request)

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

    web_app.middlewares.extend([errors_mw, same_origin_mw, auth_mw])

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
            raise ApiError(404, f"unknown action {action[:40]!r}; one of {sorted(allowed)}")
        target_id = request.match_info["id"]
        check_id(target, target_id)
        name, role = request["user"]
        if role != "operator":
            raise ApiError(403, "operators only")
        body = parse_action_body(await request.read())
        if not view.knows(target, target_id):
            raise ApiError(404, f"no {target} {target_id!r} in the console view (ids come from /api/snapshot)")
        rec = {
            "action_id": str(uuid.uuid4()),
            "target": target,
            "target_id": target_id,
            "action": action,
            "operator": name,
            "claimed_operator": body.claimed_operator if name == UNAUTHENTICATED else None,
            "note": body.note,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        await actions_topic.send(key=rec["target_id"], value=orjson.dumps(rec))
        return web.json_response(rec, status=202)

    async def route(request: web.Request) -> web.Response:
        origin = parse_node("from", request.query.get("from"))
        dest = parse_node("to", request.query.get("to"))
        try:
            res = route_travel_time(pipe.graph, origin, dest, current_travel_times_s(pipe.graph, view.segments))
        except nx.NodeNotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except nx.NetworkXNoPath:
            return web.json_response({"error": f"no route from {origin} to {dest}"}, status=422)
        return web.json_response(res)

    async def greenwave(request: web.Request) -> web.Response:
        """Emergency green wave: route on live travel times and a temporary plan per signal on it."""
        origin = parse_node("from", request.query.get("from"))
        dest = parse_node("to", request.query.get("to"))
        depart = parse_depart(request.query.get("depart"), time.time())
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


_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    }
}


def _err(reason: str) -> dict[str, Any]:
    return {"description": reason, **_ERROR}


def _op(
    summary: str,
    *,
    params: list[str] | None = None,
    query: list[dict[str, Any]] | None = None,
    errors: dict[str, str] | None = None,
    role: str = "viewer",
) -> dict[str, Any]:
    """One read operation: 200, 401 (when auth is on) and the given error responses, each a JSON reason."""
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Role: {role}.",
        "responses": {
            "200": {"description": "OK"},
            "401": _err("authentication required (auth.users set, no or wrong token)"),
            **{code: _err(why) for code, why in (errors or {}).items()},
        },
    }
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}} for p in params
        ]
    if query:
        op["parameters"] = query
    return op


def _action(summary: str, target: str) -> dict[str, Any]:
    """One operator action: JSON body from the console's own origin; every refusal a JSON reason."""
    return {
        "summary": summary,
        "description": "Role: operator. Send Content-Type: application/json; browsers only from the console's own "
        "origin. Without auth the operator is recorded as `unauthenticated` and `operator` as `claimed_operator`.",
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
                            "operator": {"type": "string", "maxLength": MAX_OPERATOR_CHARS},
                        },
                    }
                }
            },
        },
        "responses": {
            "202": {"description": "action recorded on operator-actions (appended to the history)"},
            "400": _err("id over its length limit, body not JSON, not an object, unknown field or bad field"),
            "401": _err("authentication required"),
            "403": _err("not an operator, or a request from another origin"),
            "404": _err(f"no such {target} in the console view, or no such action"),
            "413": _err(f"body over {MAX_BODY_BYTES} bytes"),
            "415": _err("body not sent as application/json"),
        },
    }


_NODE = {"type": "string", "minLength": 1, "maxLength": MAX_NODE_CHARS}
_ROUTE_ERRORS = {"400": "missing or over-long from/to", "404": "unknown intersection", "422": "no route"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "citybrain worker API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}, {}],  # tokens only when auth.users is set
    "paths": {
        "/health": {"get": _op("Worker health (200 ok, 503 starting/rebalancing)")},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/api/segments": {"get": _op("Latest segment states owned by this worker")},
        "/api/segments/{segment_id}": {
            "get": _op(
                "One segment's latest state",
                params=["segment_id"],
                errors={"404": "unknown segment, or no state yet on this worker"},
            )
        },
        "/api/network": {"get": _op("Road graph for drawing")},
        "/api/console/config": {"get": _op("Console options: the optional base-map tile layer")},
        "/api/snapshot": {
            "get": _op("Whole-city view: segments, incidents, device faults, recommendations, summaries")
        },
        "/api/stream": {"get": _op("Server-Sent Events of every change")},
        "/api/route": {
            "get": _op(
                "Fastest route and its expected travel time on the live state",
                query=[
                    {"name": "from", "in": "query", "required": True, "schema": _NODE},
                    {"name": "to", "in": "query", "required": True, "schema": _NODE},
                ],
                errors=_ROUTE_ERRORS,
            )
        },
        "/api/greenwave": {
            "get": _op(
                "Emergency green wave: fastest route and a temporary plan per signal so the vehicle meets green",
                query=[
                    {"name": "from", "in": "query", "required": True, "schema": _NODE},
                    {"name": "to", "in": "query", "required": True, "schema": _NODE},
                    {
                        "name": "depart",
                        "in": "query",
                        "required": False,
                        "description": "Unix seconds (default now), a decimal number between 2000 and 2100",
                        "schema": {"type": "number", "minimum": DEPART_MIN_S, "maximum": DEPART_MAX_S},
                    },
                ],
                errors={**_ROUTE_ERRORS, "400": "missing or over-long from/to; depart not finite or out of range"},
            )
        },
        "/api/incidents/{id}/acknowledge": {"post": _action("Acknowledge an incident", "incident")},
        "/api/incidents/{id}/resolve": {"post": _action("Resolve an incident", "incident")},
        "/api/recommendations/{id}/accept": {"post": _action("Accept a signal recommendation", "recommendation")},
        "/api/recommendations/{id}/reject": {"post": _action("Reject a signal recommendation", "recommendation")},
    },
}
