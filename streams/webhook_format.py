"""Webhook payloads and signatures.

- **CloudEvents 1.0** structured JSON (default): ``id`` = the alert's stable ``event_id``, ``source`` =
  ``urn:citybrain:{city}``, ``type`` = ``org.citybrain.{alert type}``, ``subject``, ``time``, ``data``.
- **CAP 1.2** XML for incidents: ``identifier`` = event id, ``msgType`` Alert / Update / Cancel with
  ``references`` to the first message of the incident, ``category`` Transport, an ``area`` circle (lat,lon radius)
  when the location is geo-referenced.
- **Alertmanager** webhook payload version 4: one alert, ``status`` firing / resolved, ``fingerprint`` = the
  incident id so receivers group updates of one incident.

Signing follows Standard Webhooks: headers ``webhook-id`` (= event id, the same on every retry: receivers dedupe
on it), ``webhook-timestamp`` (Unix s of the attempt) and ``webhook-signature`` =
``v1,base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))`` with ``whsec_<base64>`` secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from xml.sax.saxutils import escape

import orjson

CAP_SEVERITY = {"critical": "Severe", "major": "Moderate", "minor": "Minor"}


def secret_bytes(secret: str) -> bytes:
    """Decode a ``whsec_<base64>`` secret (a bare base64 string is accepted too)."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("webhook secret must be whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    to_sign = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_bytes(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def cloudevent(alert: dict[str, Any], city: str) -> bytes:
    """CloudEvents 1.0 structured-mode JSON for an alert."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": alert["event_id"],
            "source": f"urn:citybrain:{city}",
            "type": f"org.citybrain.{alert['type']}",
            "subject": alert.get("subject"),
            "time": alert["time"],
            "datacontenttype": "application/json",
            "data": alert.get("data", {}),
        }
    )


def alertmanager(alert: dict[str, Any], city: str, external_url: str = "") -> bytes:
    """Alertmanager webhook payload (version 4) holding this one alert."""
    data = alert.get("data", {})
    resolved = alert["type"].endswith(".cleared")
    labels = {
        "alertname": "Citybrain" + "".join(p.title() for p in alert["type"].split(".")[0].split("_")),
        "city": city,
        "segment_id": str(data.get("segment_id", "")),
        "severity": str(data.get("severity", "unknown")),
    }
    one = {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": {"summary": str(data.get("summary", alert["type"])), "event_id": alert["event_id"]},
        "startsAt": data.get("estimated_start") or alert["time"],
        "endsAt": data.get("cleared_at") or "0001-01-01T00:00:00Z",
        "generatorURL": external_url,
        "fingerprint": str(data.get("incident_id") or alert.get("subject") or alert["event_id"]),
    }
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": f"{{}}:{{alertname={labels['alertname']!r}, segment_id={labels['segment_id']!r}}}",
            "truncatedAlerts": 0,
            "status": one["status"],
            "receiver": "citybrain",
            "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": labels,
            "commonAnnotations": one["annotations"],
            "externalURL": external_url,
            "alerts": [one],
        }
    )


def cap_xml(alert: dict[str, Any], city: str) -> bytes:
    """CAP 1.2 XML for an incident alert."""
    data = alert.get("data", {})
    state = alert["type"].rsplit(".", 1)[-1]
    msg_type = {"new": "Alert", "updated": "Update", "cleared": "Cancel"}.get(state, "Alert")
    incident_id = str(data.get("incident_id") or alert.get("subject") or alert["event_id"])
    sender = f"citybrain@{city}"
    refs = ""
    if msg_type != "Alert":
        first = f"{sender},{incident_id}:new,{data.get('detected_at', '')}"
        refs = f"<references>{escape(first)}</references>"
    area = ""
    if data.get("lat") is not None and data.get("lon") is not None:
        area = (
            f"<area><areaDesc>segment {escape(str(data.get('segment_id', '')))}</areaDesc>"
            f"<circle>{float(data['lat']):.6f},{float(data['lon']):.6f} 0.2</circle></area>"
        )
    else:
        area = f"<area><areaDesc>segment {escape(str(data.get('segment_id', '')))}</areaDesc></area>"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
        f"<identifier>{escape(alert['event_id'])}</identifier>"
        f"<sender>{escape(sender)}</sender>"
        f"<sent>{escape(alert['time'].replace('Z', '+00:00'))}</sent>"
        "<status>Actual</status>"
        f"<msgType>{msg_type}</msgType>"
        "<scope>Public</scope>"
        f"{refs}"
        "<info><category>Transport</category>"
        f"<event>{escape(str(data.get('kind', 'Traffic incident')))}</event>"
        f"<urgency>{'Past' if msg_type == 'Cancel' else 'Immediate'}</urgency>"
        f"<severity>{CAP_SEVERITY.get(str(data.get('severity')), 'Unknown')}</severity>"
        "<certainty>Observed</certainty>"
        f"<headline>{escape(str(data.get('summary', 'Traffic incident')))}</headline>"
        f"{area}</info></alert>"
    )
    return xml.encode()


def render(alert: dict[str, Any], fmt: str, city: str) -> tuple[bytes, str]:
    """(body, content type) of an alert in a subscription's format."""
    if fmt == "cloudevents":
        return cloudevent(alert, city), "application/cloudevents+json"
    if fmt == "alertmanager":
        return alertmanager(alert, city), "application/json"
    if fmt == "cap":
        return cap_xml(alert, city), "application/cap+xml"
    raise ValueError(f"unknown webhook format {fmt!r}")
