"""What the simulated devices send: device-schema-v1 events (dicts) or raw payload bytes.

A :class:`RawEvent` carries bytes that a publisher sends as they are (a malformed payload of a faulty
device); it keeps the device's identity so that the publisher can still choose the MQTT topic and the Kafka
key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True)
class RawEvent:
    """A payload sent as raw bytes.

    Attributes
    ----------
    type : str
        Device type, ``loop`` or ``camera`` (the MQTT topic level).
    device_id : str
        ``detector_id`` or ``camera_id`` (the last MQTT topic level).
    segment_id : str
        The device's segment (the Kafka key).
    payload : bytes
        What goes on the wire; never contains a newline (so a JSONL line stays one line).
    ts : str
        The timestamp of the reading it replaces, ISO UTC (for ordering and bookkeeping only).
    """

    type: str
    device_id: str
    segment_id: str
    payload: bytes
    ts: str = ""


Event = dict[str, Any] | RawEvent
"""One message of the device stream."""


def event_bytes(event: Event) -> bytes:
    """The wire payload of a message: the event's compact JSON (orjson), or a raw event's bytes.

    Parameters
    ----------
    event : dict or RawEvent
        The message.

    Returns
    -------
    bytes
        Payload.
    """
    if isinstance(event, RawEvent):
        return event.payload
    return orjson.dumps(event)


def event_device(event: Event) -> tuple[str, str, str]:
    """``(type, device id, segment id)`` of a message.

    Parameters
    ----------
    event : dict or RawEvent
        The message.

    Returns
    -------
    tuple of str
        Device type (``loop``/``camera``), device id and segment id.
    """
    if isinstance(event, RawEvent):
        return event.type, event.device_id, event.segment_id
    kind = str(event["type"])
    dev = event["detector_id"] if kind == "loop" else event["camera_id"]
    return kind, str(dev), str(event.get("segment_id", ""))


def iso_utc(t_s: float) -> str:
    """Format a POSIX time as ``YYYY-MM-DDThh:mm:ssZ``.

    Parameters
    ----------
    t_s : float
        POSIX time, seconds (rounded to whole seconds).

    Returns
    -------
    str
        The ISO 8601 UTC timestamp.
    """
    return datetime.fromtimestamp(round(t_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(ts: str) -> float:
    """Parse an ISO 8601 timestamp (``Z`` or an offset; naive = UTC) into POSIX seconds.

    Parameters
    ----------
    ts : str
        Timestamp, e.g. ``2025-01-06T07:30:00Z``.

    Returns
    -------
    float
        POSIX time, seconds.

    Raises
    ------
    ValueError
        If it is not an ISO 8601 timestamp.
    """
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
