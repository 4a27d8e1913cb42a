"""Checks on what the HTTP API receives: same-origin writes, operator-action bodies, query parameters.

Every check answers with an :class:`ApiError` (HTTP status and a reason for the client) instead of letting bad
input reach the handlers; nothing here touches Kafka or the web server, so it is tested as plain functions.

Writes (``POST`` on ``/api/…``) must be ``Content-Type: application/json`` (a web page cannot send that to another
origin without a CORS preflight, which the worker does not grant) and, when the browser says where the request
comes from (``Origin``, ``Sec-Fetch-Site``), come from the page's own origin: scheme, host and port of the address
the request was sent to. Requests without ``Origin`` (curl, scripts) pass on the JSON content type alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

MAX_ID_CHARS = 128
MAX_NOTE_CHARS = 2000
MAX_OPERATOR_CHARS = 64
MAX_BODY_BYTES = 16_384
MAX_NODE_CHARS = 128
# green-wave departures: Unix seconds from 2000-01-01 to 2100-01-01 (anything else is a typo or an attack)
DEPART_MIN_S, DEPART_MAX_S = 946_684_800.0, 4_102_444_800.0
ACTION_FIELDS = ("note", "operator")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DEFAULT_PORT = {"http": 80, "https": 443}


class ApiError(Exception):
    """A request the API refuses: the HTTP ``status`` and the ``reason`` sent back as ``{"error": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ActionBody:
    """An operator action's body: the note for the log and the name the caller claims (not authenticated)."""

    note: str
    claimed_operator: str | None


def _hostport(scheme: str, netloc: str) -> tuple[str, int] | None:
    try:
        u = urlsplit(f"{scheme}://{netloc}")
        port = u.port or _DEFAULT_PORT.get(scheme)
    except ValueError:
        return None
    if not u.hostname or port is None:
        return None
    return u.hostname.lower(), port


def check_write_origin(
    content_type: str | None, origin: str | None, fetch_site: str | None, host: str, schemes: set[str]
) -> None:
    """Refuse a state-changing request a foreign web page could have sent.

    Parameters
    ----------
    content_type : str or None
        The request's ``Content-Type`` header.
    origin, fetch_site : str or None
        The ``Origin`` and ``Sec-Fetch-Site`` headers, when the client sent them (browsers do).
    host : str
        The ``Host`` the request was sent to (``host[:port]``).
    schemes : set of str
        The scheme(s) the request arrived with (``http``, or ``https`` behind a TLS proxy that says so).

    Raises
    ------
    ApiError
        415 unless the body is declared JSON; 403 when the request comes from another origin.
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/json":
        raise ApiError(415, f"send the body as Content-Type: application/json (got {mime or 'none'!r})")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        raise ApiError(403, f"cross-origin request refused (Sec-Fetch-Site: {fetch_site[:40]})")
    if origin is None:
        return  # not a browser (curl, a script): the JSON content type is enough
    u = urlsplit(origin.strip()) if origin.strip() != "null" else None
    theirs = _hostport(u.scheme, u.netloc) if u is not None and u.scheme in _DEFAULT_PORT else None
    if theirs is None or u is None or u.scheme not in schemes:
        raise ApiError(403, f"cross-origin request refused (Origin: {origin[:100]})")
    if theirs != _hostport(u.scheme, host):
        raise ApiError(403, f"cross-origin request refused (Origin: {origin[:100]}, this server: {host[:100]})")


def check_id(target: str, target_id: str) -> None:
    """Refuse an empty or over-long incident / recommendation id (400)."""
    if not target_id or len(target_id) > MAX_ID_CHARS:
        raise ApiError(400, f"{target} id must be 1 to {MAX_ID_CHARS} characters (got {len(target_id)})")


def parse_action_body(raw: bytes) -> ActionBody:
    """The body of an operator action: empty, or a JSON object with an optional ``note`` and ``operator``.

    Raises
    ------
    ApiError
        413 for a body over ``MAX_BODY_BYTES``; 400 with the reason for broken JSON, a non-object, an unknown
        field, a field that is not a string or one over its length limit.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return ActionBody(note="", claimed_operator=None)
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object with {' and/or '.join(ACTION_FIELDS)}")
    unknown = sorted(set(body) - set(ACTION_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}; allowed: note, operator")
    limits = {"note": MAX_NOTE_CHARS, "operator": MAX_OPERATOR_CHARS}
    for name, limit in limits.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string (got {type(value).__name__})")
        if len(value) > limit:
            raise ApiError(400, f"{name} over {limit} characters (got {len(value)})")
    claimed = (body.get("operator") or "").strip() or None
    return ActionBody(note=body.get("note") or "", claimed_operator=claimed)


def parse_node(name: str, value: str | None) -> str:
    """A required intersection id from the query (400 when missing or over ``MAX_NODE_CHARS``)."""
    if not value:
        raise ApiError(400, "give ?from=<intersection>&to=<intersection>")
    if len(value) > MAX_NODE_CHARS:
        raise ApiError(400, f"{name} must be at most {MAX_NODE_CHARS} characters (got {len(value)})")
    return value


def parse_depart(value: str | None, now_s: float) -> float:
    """``depart`` from the query: a plain decimal number of Unix seconds in 2000..2100; ``now_s`` when absent.

    Raises
    ------
    ApiError
        400 for anything else: not a decimal number (``nan``, ``inf``, hex, ``1_0``), or out of range.
    """
    if value is None or value == "":
        return now_s
    if len(value) > 40 or not _DECIMAL.fullmatch(value):
        raise ApiError(400, f"depart must be a decimal number of Unix seconds (got {value[:40]!r})")
    depart = float(value)
    if not math.isfinite(depart) or not DEPART_MIN_S <= depart <= DEPART_MAX_S:
        raise ApiError(
            400,
            f"depart must be Unix seconds between {DEPART_MIN_S:.0f} (2000-01-01) and {DEPART_MAX_S:.0f} "
            f"(2100-01-01) (got {value[:40]})",
        )
    return depart
