"""Device schema v1 validation: every real harness sample passes; each kind of bad payload gets a reason."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import orjson
import pytest

from streams.records import (
    DEAD_LETTER_EXCERPT_BYTES,
    DeviceInfo,
    InvalidEvent,
    dead_letter,
    decode_device_payload,
    encode_event,
    format_ts,
    parse_ts,
)

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared/eval/sumo/samples/events_normal_sample.jsonl"

LOOP = {
    "type": "loop",
    "detector_id": "loop_mid_B2C2_0",
    "segment_id": "B2C2",
    "lane": "B2C2_0",
    "lane_index": 0,
    "role": "mid_link",
    "ts": "2025-01-06T07:30:00Z",
    "interval_s": 30,
    "count": 5,
    "occupancy": 0.0718,
    "speed_kmh": 46.5,
}
CAMERA = {
    "type": "camera",
    "camera_id": "cam_B2C2",
    "segment_id": "B2C2",
    "lanes": 2,
    "ts": "2025-01-06T07:30:00Z",
    "interval_s": 60,
    "counts": {"car": 6, "truck": 1, "bus": 0},
    "count_total": 7,
    "queue_len_veh": 0,
    "queue_max_veh": 14,
    "occupancy": 0.1939,
    "speed_kmh": 9.7,
}
DEVICES = {
    "loop_mid_B2C2_0": DeviceInfo("loop", "B2C2", "B2C2_0"),
    "cam_B2C2": DeviceInfo("camera", "B2C2", None),
}


def decode(obj: object, **kw: object) -> dict:
    return decode_device_payload(orjson.dumps(obj), max_bytes=8192, **kw)  # type: ignore[arg-type]


def test_examples_from_the_schema_pass() -> None:
    ev = decode(LOOP, devices=DEVICES, topic_kind="loop", topic_id="loop_mid_B2C2_0")
    assert ev["count"] == 5 and ev["ts_s"] == parse_ts("2025-01-06T07:30:00Z")
    cam = decode(CAMERA, devices=DEVICES, topic_kind="camera", topic_id="cam_B2C2")
    assert cam["counts"] == {"car": 6, "truck": 1, "bus": 0}


@pytest.mark.skipif(not SAMPLES.exists(), reason="shared harness samples not present")
def test_every_harness_sample_passes() -> None:
    lines = SAMPLES.read_bytes().splitlines()
    assert len(lines) == 60
    for line in lines:
        decode_device_payload(line, max_bytes=8192)


@pytest.mark.parametrize(
    ("change", "reason_class", "words"),
    [
        ({"occupancy": 1.5}, "schema", "occupancy"),
        ({"count": -1}, "schema", "count"),
        ({"count": 2.5}, "schema", "integer"),
        ({"count": True}, "schema", "integer"),
        ({"speed_kmh": 400.0}, "schema", "speed_kmh"),
        ({"speed_kmh": "fast"}, "schema", "speed_kmh"),
        ({"ts": "2025-01-06 07:30:00"}, "schema", "ISO 8601"),
        ({"ts": "2025-02-30T07:30:00Z"}, "schema", "real date"),
        ({"ts": "2025-01-06T07:30:00+08:00"}, "schema", "UTC"),
        ({"role": "upstream"}, "schema", "role"),
        ({"type": "radar"}, "schema", "type"),
        ({"detector_id": ""}, "schema", "detector_id"),
        ({"interval_s": 0}, "schema", "interval_s"),
        ({"count": 100_000}, "schema", "count"),
    ],
)
def test_bad_loop_fields(change: dict, reason_class: str, words: str) -> None:
    bad = {**LOOP, **change}
    with pytest.raises(InvalidEvent) as err:
        decode_device_payload(orjson.dumps(bad), max_bytes=8192)
    assert err.value.reason_class == reason_class
    assert words in err.value.reason


def test_missing_field() -> None:
    bad = dict(LOOP)
    del bad["occupancy"]
    with pytest.raises(InvalidEvent, match="occupancy"):
        decode(bad)


def test_camera_consistency() -> None:
    with pytest.raises(InvalidEvent, match="count_total"):
        decode({**CAMERA, "count_total": 8})
    with pytest.raises(InvalidEvent, match="queue_max_veh"):
        decode({**CAMERA, "queue_len_veh": 5, "queue_max_veh": 3})


def test_not_json_too_large_and_non_object() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_device_payload(b'{"type": "loop",', max_bytes=8192)
    assert err.value.reason_class == "not_json"
    with pytest.raises(InvalidEvent) as err:
        decode_device_payload(b" " * 9000, max_bytes=8192)
    assert err.value.reason_class == "too_large"
    with pytest.raises(InvalidEvent, match="JSON object"):
        decode_device_payload(b"[1, 2]", max_bytes=8192)


def test_graph_and_topic_cross_checks() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode({**LOOP, "detector_id": "loop_x"}, devices=DEVICES)
    assert err.value.reason_class == "unknown_device"
    with pytest.raises(InvalidEvent, match="segment"):
        decode({**LOOP, "segment_id": "C2D2"}, devices=DEVICES)
    with pytest.raises(InvalidEvent) as err:
        decode(LOOP, topic_kind="loop", topic_id="loop_mid_B2C2_1")
    assert err.value.reason_class == "topic_mismatch"
    with pytest.raises(InvalidEvent) as err:
        decode(LOOP, topic_kind="camera", topic_id="loop_mid_B2C2_0")
    assert err.value.reason_class == "topic_mismatch"


def test_speed_without_vehicles_is_dropped() -> None:
    assert decode({**LOOP, "count": 0, "speed_kmh": 30.0})["speed_kmh"] is None


def test_dead_letter_keeps_original_bytes_and_a_stable_id() -> None:
    payload = b"\xff\x00not json"
    a = dead_letter("not_json", "payload is not JSON", "mqtt", "city/demo/loop/x", payload)
    b = dead_letter("not_json", "payload is not JSON", "mqtt", "city/demo/loop/x", payload)
    assert base64.b64decode(a.payload_b64) == payload
    assert a.dead_letter_id == b.dead_letter_id
    assert a.dead_letter_id != dead_letter("not_json", "x", "mqtt", "city/demo/loop/y", payload).dead_letter_id
    wire = orjson.loads(a.dumps())
    assert "__faust" not in wire and wire["reason_class"] == "not_json"


def test_dead_letter_of_a_huge_payload_is_capped_with_its_size_and_hash() -> None:
    """An 800 kB payload base64-encoded whole made a 1.07 MB record, over Kafka's 1 MiB message limit (#15)."""
    payload = b"x" * 800_000
    dl = dead_letter("too_large", "payload is 800000 bytes", "mqtt", "city/demo/loop/x", payload)
    wire = orjson.loads(dl.dumps())
    assert len(dl.dumps()) < 100_000
    excerpt = base64.b64decode(wire["payload_b64"])
    assert excerpt == payload[:DEAD_LETTER_EXCERPT_BYTES]
    assert wire["payload_size_bytes"] == 800_000
    assert wire["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert wire["payload_truncated"] is True
    # the id still covers every byte: two payloads with the same excerpt are two dead letters
    other = dead_letter("too_large", "payload is 800000 bytes", "mqtt", "city/demo/loop/x", payload[:-1] + b"y")
    assert other.dead_letter_id != dl.dead_letter_id


def test_dead_letter_of_a_small_payload_is_whole() -> None:
    payload = b"y" * DEAD_LETTER_EXCERPT_BYTES
    wire = orjson.loads(dead_letter("not_json", "payload is not JSON", "kafka", "ingest", payload).dumps())
    assert base64.b64decode(wire["payload_b64"]) == payload
    assert wire["payload_size_bytes"] == len(payload) and wire["payload_truncated"] is False
    assert wire["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_event_encoding_and_timestamps() -> None:
    ev = decode(LOOP)
    wire = orjson.loads(encode_event(ev, 123.5))
    assert wire["received_at"] == 123.5 and wire["detector_id"] == "loop_mid_B2C2_0"
    assert format_ts(parse_ts("2025-01-06T07:30:00Z")) == "2025-01-06T07:30:00Z"
    assert parse_ts("2025-01-06T07:30:00.250Z") == parse_ts("2025-01-06T07:30:00Z") + 0.25


def test_event_bundles_round_trip_split_at_the_limit_and_reject_foreign_values() -> None:
    from streams.records import BUNDLE_MAX, bundle_events, encode_event, unbundle_events

    evs = [{"segment_id": "A0A1", "detector_id": f"d{i}", "ts_s": 1736150000 + i} for i in range(BUNDLE_MAX + 3)]
    bundles = bundle_events([encode_event(e, 5.0) for e in evs])
    assert len(bundles) == 2  # BUNDLE_MAX + 3 readings: one full bundle and one of 3
    back = [e for b in bundles for e in unbundle_events(b)]
    assert [e["detector_id"] for e in back] == [e["detector_id"] for e in evs]  # order kept
    assert all(e["received_at"] == 5.0 for e in back)
    assert unbundle_events(encode_event(evs[0], 1.0))[0]["detector_id"] == "d0"  # a single event is a bundle of one
    for bad in (b"[1, 2]", b'"text"', b"not json"):
        with pytest.raises(ValueError):
            unbundle_events(bad)


def test_bundle_partitions_are_those_of_a_keyed_send() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from streams.topics import KeyPartitions

    part = KeyPartitions()
    for n in (1, 3, 4, 12):
        for i in range(300):
            key = f"seg-{i}-{n}".encode()
            assert part(key, n) == DefaultPartitioner()(key, list(range(n)), list(range(n)))


def test_batch_validation_bundles_per_source_and_events_partition_and_dead_letters_the_rest() -> None:
    from streams.records import unbundle_events, validate_batch
    from streams.topics import KeyPartitions

    other = {**LOOP, "detector_id": "loop_mid_C2D2_0", "segment_id": "C2D2", "lane": "C2D2_0"}
    devices = {**DEVICES, "loop_mid_C2D2_0": DeviceInfo("loop", "C2D2", "C2D2_0")}
    part = KeyPartitions()
    assert part(b"B2C2", 4) != part(b"C2D2", 4)  # the two segments land on different partitions
    records = [
        (0, orjson.dumps(LOOP), 10.0),
        (0, orjson.dumps(other), 11.0),
        (1, orjson.dumps(CAMERA), 12.0),  # same segment as the first, but from another source partition
        (0, b"{not json", 13.0),
        (1, orjson.dumps({**LOOP, "detector_id": "loop_nowhere"}), 14.0),
        (0, orjson.dumps({**LOOP, "ts": "2025-01-06T07:30:30Z"}), 15.0),
    ]
    out = validate_batch(
        records,
        max_bytes=8192,
        devices=devices,
        source="kafka",
        source_topic="ingest",
        n_partitions=4,
        partition_of=part,
    )
    assert out.valid == {"loop": 3, "camera": 1}
    assert out.invalid == {"not_json": 1, "unknown_device": 1}
    assert [(src, dl.reason_class, dl.source_topic) for src, dl in out.dead_letters] == [
        (0, "not_json", "ingest"),
        (1, "unknown_device", "ingest"),
    ]
    got = {
        (src, p): [(e.get("detector_id") or e["camera_id"], e["ts"], e["received_at"]) for e in unbundle_events(b)]
        for src, p, b in out.bundles
    }
    b2c2, c2d2 = part(b"B2C2", 4), part(b"C2D2", 4)
    assert got == {
        (0, b2c2): [
            ("loop_mid_B2C2_0", "2025-01-06T07:30:00Z", 10.0),
            ("loop_mid_B2C2_0", "2025-01-06T07:30:30Z", 15.0),
        ],
        (0, c2d2): [("loop_mid_C2D2_0", "2025-01-06T07:30:00Z", 11.0)],
        (1, b2c2): [("cam_B2C2", "2025-01-06T07:30:00Z", 12.0)],
    }
