"""Wire schemas: device schema v1 (validated here), and the records citybrain publishes.

Device schema v1 is the loop and camera JSON of the SUMO harness (``../shared/eval/sumo/README.md``):

- loop: ``type, detector_id, segment_id, lane, lane_index, role, ts, interval_s, count, occupancy, speed_kmh``
- camera: ``type, camera_id, segment_id, lanes, ts, interval_s, counts, count_total, queue_len_veh,
  queue_max_veh, occupancy, speed_kmh``

``ts`` is the *end* of the reading's interval, ISO 8601 UTC. Unknown extra fields are ignored (devices may
add their own); missing or ill-typed known fields reject the payload with a reason. The internal ``events``
topic carries validated events as compact JSON with one added field, ``received_at`` (Unix seconds, when
citybrain first saw it), used for the processing-latency metric. A message is a *bundle*: a JSON array of
events that arrived together, all of segments that hash to the message's partition (the partition Kafka's
default partitioner gives the segment id) — the bridge and the ingest agent group each batch by partition, so a
worker pays Kafka's and Faust's per-message cost once per bundle, not once per reading. A single JSON object
is read as a bundle of one.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

SCHEMA_VERSION = 1
#: Most bytes of a rejected payload a dead-letter record carries (base64: ≈ 87 kB), far below Kafka's 1 MiB
#: message limit whatever the payload; the record also holds the payload's size and SHA-256.
DEAD_LETTER_EXCERPT_BYTES = 64 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9_.:#\-]{1,128}$")
_ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(Z|[+-]00:?00)$")
MAX_INTERVAL_S = 3600
MAX_COUNT_PER_S = 10  # a lane passes < 1 veh/s; a camera approach a few; 10/s is far beyond physical
MAX_SPEED_KMH = 300.0
REASON_CLASSES = (
    "not_json",
    "too_large",
    "schema",
    "unknown_device",
    "topic_mismatch",
    "late",
    "duplicate",
    "clock_skew",
    "kafka_refused",  # valid readings in an ``events`` record Kafka refused for good (streams.delivery)
)


class InvalidEvent(ValueError):
    """A device payload that is not valid device schema v1. ``reason_class`` is one of REASON_CLASSES."""

    def __init__(self, reason_class: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_class = reason_class
        self.reason = reason


def parse_ts(value: Any, field: str = "ts") -> float:
    """Parse an ISO 8601 UTC timestamp (``Z`` or ``+00:00``) into Unix seconds.

    Raises
    ------
    InvalidEvent
        If the value is not such a string or not a real date.
    """
    if not isinstance(value, str):
        raise InvalidEvent("schema", f"{field} must be an ISO 8601 UTC string, got {type(value).__name__}")
    m = _ISO_RE.match(value)
    if not m:
        raise InvalidEvent("schema", f"{field} must be ISO 8601 UTC like 2025-01-06T07:30:00Z, got {value!r:.60}")
    try:
        y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
        dt = datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
    except ValueError as exc:
        raise InvalidEvent("schema", f"{field} is not a real date: {value!r:.60} ({exc})") from None
    frac = float(m.group(7)) if m.group(7) else 0.0
    return dt.timestamp() + frac


def format_ts(epoch_s: float) -> str:
    """Unix seconds → ``YYYY-MM-DDThh:mm:ssZ`` (whole seconds, UTC)."""
    return datetime.fromtimestamp(round(epoch_s), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _str_id(ev: Mapping[str, Any], field: str) -> str:
    v = ev.get(field)
    if not isinstance(v, str) or not _ID_RE.match(v):
        raise InvalidEvent("schema", f"{field} must be an id of 1-128 characters [A-Za-z0-9_.:#-], got {v!r:.60}")
    return v


def _int(ev: Mapping[str, Any], field: str, lo: int, hi: int) -> int:
    v = ev.get(field)
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise InvalidEvent("schema", f"{field} must be an integer, got {v!r:.40}")
    iv = int(v)
    if not lo <= iv <= hi:
        raise InvalidEvent("schema", f"{field} must be in [{lo}, {hi}], got {iv}")
    return iv


def _num(ev: Mapping[str, Any], field: str, lo: float, hi: float, nullable: bool = False) -> float | None:
    v = ev.get(field)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InvalidEvent("schema", f"{field} must be a finite number{' or null' if nullable else ''}, got {v!r:.40}")
    fv = float(v)
    if not lo <= fv <= hi:
        raise InvalidEvent("schema", f"{field} must be in [{lo:g}, {hi:g}], got {fv:g}")
    return fv


def validate_event(ev: Any) -> dict[str, Any]:
    """Check a decoded device event against schema v1 and return its normalised copy.

    The copy holds exactly the schema's fields, with integers as ``int``, ``ts`` unchanged, and ``ts_s``
    (Unix seconds of ``ts``) added.

    Raises
    ------
    InvalidEvent
        With a reason naming the first offending field.
    """
    if not isinstance(ev, dict):
        raise InvalidEvent("schema", f"payload must be a JSON object, got {type(ev).__name__}")
    kind = ev.get("type")
    ts_s = parse_ts(ev.get("ts"))
    interval_s = _int(ev, "interval_s", 1, MAX_INTERVAL_S)
    max_count = MAX_COUNT_PER_S * interval_s
    if kind == "loop":
        role = ev.get("role")
        if role not in ("mid_link", "stop_line"):
            raise InvalidEvent("schema", f"role must be 'mid_link' or 'stop_line', got {role!r:.40}")
        count = _int(ev, "count", 0, max_count)
        speed = _num(ev, "speed_kmh", 0.0, MAX_SPEED_KMH, nullable=True)
        return {
            "type": "loop",
            "detector_id": _str_id(ev, "detector_id"),
            "segment_id": _str_id(ev, "segment_id"),
            "lane": _str_id(ev, "lane"),
            "lane_index": _int(ev, "lane_index", 0, 64),
            "role": role,
            "ts": ev["ts"],
            "ts_s": ts_s,
            "interval_s": interval_s,
            "count": count,
            "occupancy": _num(ev, "occupancy", 0.0, 1.0),
            # a speed reported with no vehicle counted means nothing: treat as no speed
            "speed_kmh": speed if count > 0 else None,
        }
    if kind == "camera":
        counts = ev.get("counts")
        if not isinstance(counts, dict) or not counts:
            raise InvalidEvent("schema", "counts must be a non-empty object of vehicle class -> count")
        if len(counts) > 16:
            raise InvalidEvent("schema", f"counts has {len(counts)} classes; at most 16")
        norm_counts: dict[str, int] = {}
        for cls in counts:
            if not isinstance(cls, str) or not _ID_RE.match(cls):
                raise InvalidEvent("schema", f"counts key {cls!r:.40} is not a vehicle class id")
            norm_counts[cls] = _int(counts, cls, 0, max_count)
        total = _int(ev, "count_total", 0, max_count)
        if total != sum(norm_counts.values()):
            raise InvalidEvent("schema", f"count_total {total} != sum of counts {sum(norm_counts.values())}")
        lanes = _int(ev, "lanes", 1, 64)
        qlen = _int(ev, "queue_len_veh", 0, 1000 * lanes)
        qmax = _int(ev, "queue_max_veh", 0, 1000 * lanes)
        if qmax < qlen:
            raise InvalidEvent("schema", f"queue_max_veh {qmax} < queue_len_veh {qlen}")
        return {
            "type": "camera",
            "camera_id": _str_id(ev, "camera_id"),
            "segment_id": _str_id(ev, "segment_id"),
            "lanes": lanes,
            "ts": ev["ts"],
            "ts_s": ts_s,
            "interval_s": interval_s,
            "counts": norm_counts,
            "count_total": total,
            "queue_len_veh": qlen,
            "queue_max_veh": qmax,
            "occupancy": _num(ev, "occupancy", 0.0, 1.0),
            "speed_kmh": _num(ev, "speed_kmh", 0.0, MAX_SPEED_KMH, nullable=True),
        }
    raise InvalidEvent("schema", f"type must be 'loop' or 'camera', got {kind!r:.40}")


def device_id(ev: Mapping[str, Any]) -> str:
    """The reporting device's id: ``detector_id`` for loops, ``camera_id`` for cameras."""
    return str(ev["detector_id"] if ev["type"] == "loop" else ev["camera_id"])


@dataclass(frozen=True)
class DeviceInfo:
    """What the road graph says about a device, for checking its events."""

    kind: str
    segment_id: str
    lane: str | None


def decode_device_payload(
    payload: bytes,
    *,
    max_bytes: int,
    devices: Mapping[str, DeviceInfo] | None = None,
    topic_kind: str | None = None,
    topic_id: str | None = None,
) -> dict[str, Any]:
    """Decode, validate and cross-check one device payload.

    Parameters
    ----------
    payload
        Raw bytes as received.
    max_bytes
        Larger payloads are rejected unread.
    devices
        Known devices (id → info) from the road graph; ``None`` skips the check.
    topic_kind, topic_id
        The ``loop|camera`` and id levels of the MQTT topic it came on, which must agree with the payload.

    Raises
    ------
    InvalidEvent
    """
    if len(payload) > max_bytes:
        raise InvalidEvent("too_large", f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"payload is not JSON: {exc}") from None
    ev = validate_event(raw)
    did = device_id(ev)
    if topic_kind is not None and topic_kind != ev["type"]:
        raise InvalidEvent("topic_mismatch", f"{ev['type']} event published on a {topic_kind} topic")
    if topic_id is not None and topic_id != did:
        raise InvalidEvent("topic_mismatch", f"payload id {did!r} differs from topic id {topic_id!r}")
    if devices is not None:
        info = devices.get(did)
        if info is None:
            raise InvalidEvent("unknown_device", f"{ev['type']} {did!r} is not in the road network")
        if info.kind != ev["type"]:
            raise InvalidEvent("unknown_device", f"{did!r} is a {info.kind} in the road network, not a {ev['type']}")
        if info.segment_id != ev["segment_id"]:
            raise InvalidEvent(
                "unknown_device",
                f"{did!r} is on segment {info.segment_id!r}, payload says {ev['segment_id']!r}",
            )
        if info.lane is not None and ev.get("lane") not in (None, info.lane):
            raise InvalidEvent("unknown_device", f"{did!r} is on lane {info.lane!r}, payload says {ev['lane']!r}")
    return ev


def encode_event(ev: Mapping[str, Any], received_at: float) -> bytes:
    """One event of the internal ``events`` topic: validated event + ``received_at`` (Unix s)."""
    out = dict(ev)
    out["received_at"] = received_at
    return orjson.dumps(out)


#: Most events in one ``events`` message (≈ 300 B each: bundles stay far below Kafka's 1 MB message limit).
BUNDLE_MAX = 500


def bundle_events(encoded: list[bytes]) -> list[bytes]:
    """``events`` topic values for encoded events of one partition: JSON arrays of at most ``BUNDLE_MAX``."""
    return [b"[" + b",".join(encoded[i : i + BUNDLE_MAX]) + b"]" for i in range(0, len(encoded), BUNDLE_MAX)]


@dataclass
class IngestBatch:
    """What one batch of device records becomes (:func:`validate_batch`)."""

    #: ``(source partition, events partition, bundle)``: the values to send to ``events``.
    bundles: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: ``(source partition, record)``: the rejected payloads, for ``dead-letter``.
    dead_letters: list[tuple[int, DeadLetter]] = field(default_factory=list)
    #: Valid events per type, rejected payloads per reason class (for the ingest metrics).
    valid: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)


def validate_batch(
    records: Iterable[tuple[int, bytes, float]],
    *,
    max_bytes: int,
    devices: Mapping[str, DeviceInfo] | None,
    source: str,
    source_topic: str,
    n_partitions: int,
    partition_of: Callable[[bytes, int], int],
) -> IngestBatch:
    """Validate a batch of device payloads and group the valid ones into ``events`` bundles.

    The one validation path of records read from Kafka (the worker's ``validate-ingest`` agent and the
    bridge's :class:`streams.kafka_ingest.KafkaIngest`); the MQTT bridge does the same per message.

    Parameters
    ----------
    records
        ``(source partition, payload, received_at)``; ``received_at`` in Unix s. The source partition keeps
        outputs apart per partition that caused them (exactly once: each joins that partition's transaction);
        pass 0 when that does not matter.
    max_bytes, devices
        As :func:`decode_device_payload`.
    source, source_topic
        Where the payloads came from (``"kafka"``, the ``ingest`` topic), for the dead letters.
    n_partitions, partition_of
        Partitions of ``events`` and the function giving a key's partition (``streams.topics.KeyPartitions``):
        each segment's events go to the partition a keyed send would pick.
    """
    out = IngestBatch()
    by_part: dict[tuple[int, int], list[bytes]] = defaultdict(list)
    for src, raw, received_at in records:
        try:
            ev = decode_device_payload(raw, max_bytes=max_bytes, devices=devices)
        except InvalidEvent as exc:
            out.invalid[exc.reason_class] += 1
            out.dead_letters.append((src, dead_letter(exc.reason_class, exc.reason, source, source_topic, raw)))
            continue
        out.valid[ev["type"]] += 1
        by_part[(src, partition_of(ev["segment_id"].encode(), n_partitions))].append(encode_event(ev, received_at))
    out.bundles = [(src, part, b) for (src, part), encoded in by_part.items() for b in bundle_events(encoded)]
    return out


def unbundle_events(raw: bytes) -> list[dict[str, Any]]:
    """The events of one ``events`` topic value (a bundle, or a single event object).

    Raises
    ------
    ValueError
        If the value is not a JSON object or an array of objects (only citybrain writes this topic).
    """
    val = orjson.loads(raw)
    if isinstance(val, dict):
        return [val]
    if isinstance(val, list) and all(isinstance(v, dict) for v in val):
        return val
    raise ValueError("an events message must be a JSON object or an array of objects")


# --------------------------------------------------------------------------------------------------------
# Records citybrain publishes. include_metadata=False: plain JSON for non-Faust consumers.


class SegmentState(faust.Record, serializer="json", include_metadata=False):
    """One segment's traffic state over one window (topic ``segment-state``, key ``segment_id``).

    ``state_id`` = ``{segment_id}@{ts}`` is stable: a replayed window has the same id.
    """

    state_id: str
    segment_id: str
    ts: str  # window end, ISO UTC
    window_start: str
    window_s: int
    flow_veh_h: float
    occupancy: float | None
    speed_kmh: float | None
    density_veh_km: float | None
    travel_time_s: float | None
    speed_ratio: float | None
    los: str | None
    congested: bool
    confidence: float
    n_readings: int
    n_detectors: int
    sources: list[str]
    closed_by: str  # "watermark" | "idle"
    emitted_at: str
    excluded_detectors: list[str]  # unhealthy detectors whose readings the estimate left out
    last_arrival_at: str | None = None  # wall time (ISO UTC) the segment's newest reading reached citybrain


class DeadLetter(faust.Record, serializer="json", include_metadata=False):
    """A payload citybrain could not use, with why (topic ``dead-letter``, key = ``dead_letter_id``).

    ``dead_letter_id`` hashes the source, its topic and the original bytes, so a redelivered payload keeps
    its id. ``payload_b64`` holds the original bytes exactly up to ``DEAD_LETTER_EXCERPT_BYTES``; a larger
    payload keeps only its first ``DEAD_LETTER_EXCERPT_BYTES`` (``payload_truncated``), so a dead-letter record
    always fits in a Kafka message. ``payload_size_bytes`` and ``payload_sha256`` describe the whole payload.
    """

    dead_letter_id: str
    reason_class: str
    reason: str
    source: str  # "mqtt" | "kafka" | "window"
    source_topic: str
    payload_b64: str
    payload_preview: str
    received_at: str
    payload_size_bytes: int
    payload_sha256: str
    payload_truncated: bool


def dead_letter(reason_class: str, reason: str, source: str, source_topic: str, payload: bytes) -> DeadLetter:
    """Build the dead-letter record for a rejected payload (every dead letter of the data path is built here,
    so every one is capped at ``DEAD_LETTER_EXCERPT_BYTES`` of payload)."""
    digest = hashlib.sha256(b"%s\0%s\0%s\0" % (source.encode(), source_topic.encode(), reason_class.encode()))
    digest.update(payload)
    return DeadLetter(
        dead_letter_id=digest.hexdigest()[:32],
        reason_class=reason_class,
        reason=reason,
        source=source,
        source_topic=source_topic,
        payload_b64=base64.b64encode(payload[:DEAD_LETTER_EXCERPT_BYTES]).decode(),
        payload_preview=payload[:200].decode("utf-8", errors="replace"),
        received_at=format_ts(datetime.now(UTC).timestamp()),
        payload_size_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_truncated=len(payload) > DEAD_LETTER_EXCERPT_BYTES,
    )


class Alert(faust.Record, serializer="json", include_metadata=False):
    """An output event for operators and other systems (topic ``alerts``, key = ``subject``).

    ``event_id`` is stable for one change of one thing (e.g. ``{incident_id}:{version}``): retries and replays
    carry the same id, which is also the webhook ``webhook-id`` and the CloudEvents ``id``. ``type`` is
    dot-delimited (``incident.new``, ``incident.updated``, ``incident.cleared``, ``device_fault.new``, …).
    """

    event_id: str
    type: str
    time: str  # ISO UTC
    subject: str  # what it is about: incident id, detector id, …
    data: dict[str, Any]


class WebhookDelivery(faust.Record, serializer="json", include_metadata=False):
    """One alert queued for one endpoint (topic ``webhook-deliveries``, key = endpoint name)."""

    delivery_id: str  # {endpoint}/{event_id}
    endpoint: str
    alert: dict[str, Any]
    queued_at: float  # Unix s


class WebhookDeadLetter(faust.Record, serializer="json", include_metadata=False):
    """A delivery given up on (topic ``webhook-dead-letter``): replay it by hand once the receiver is fixed."""

    delivery_id: str
    endpoint: str
    outcome: str  # failed | gone | refused | disabled | unknown_endpoint
    reason: str
    attempts: int
    last_status: int | None
    alert: dict[str, Any]
    failed_at: str


class CitySummary(faust.Record, serializer="json", include_metadata=False):
    """City indicators of one window (topic ``city-summary``, key = city). ``summary_id`` = ``{city}@{ts}``."""

    summary_id: str
    city: str
    ts: str  # window end, ISO UTC
    window_s: int
    travel_time_index: float | None
    congested_lane_km_share: float | None
    mean_speed_kmh: float | None
    segments_reporting: int
    segments_total: int
    lane_km_reporting: float
    worst: list[dict[str, Any]]
