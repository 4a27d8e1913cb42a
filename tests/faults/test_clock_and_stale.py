"""Issue #15: one device's clock far ahead (and a little ahead) mid-stream; the whole feed going silent.

Real brokers, worker and bridge as in the other fault tests; readings from ``conftest.stream()`` over MQTT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ops.runtime import Stack, http_json
from tests.integration.conftest import Brokers, metric_value, unique_settings

from .conftest import (
    SEGMENTS,
    T0,
    _iso,
    account,
    devices,
    expected_windows,
    health_of,
    publish,
    read_topic,
    stream,
    wait_for,
    wait_published,
)

pytestmark = pytest.mark.faults

FAR_DEVICE, NEAR_DEVICE = "loop_mid_A1left1_0", "loop_mid_D1right1_1"


def with_skewed_readings(events: list[dict[str, Any]], after_step: int) -> tuple[list[dict[str, Any]], float]:
    """``events`` with two readings inserted after step ``after_step``: one of ``FAR_DEVICE`` stamped with the
    real current time (the demo's simulated clock runs far behind it), one of ``NEAR_DEVICE`` 280 s ahead of the
    stream. Returns the events and the far reading's timestamp."""
    step_ts = T0 + 30 * after_step
    at = next(i for i, e in enumerate(events) if e["ts"] == _iso(step_ts + 30))  # first reading of the next step
    far_ts = float(int(time.time()))
    far = {**next(e for e in events if e["detector_id"] == FAR_DEVICE), "ts": _iso(far_ts)}
    near = {**next(e for e in events if e["detector_id"] == NEAR_DEVICE), "ts": _iso(step_ts + 280)}
    return [*events[:at], far, near, *events[at:]], far_ts


def test_one_device_clock_far_ahead_and_one_a_little_ahead(
    brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    """Defect 2: the far reading is dead-lettered as ``clock_skew`` with its offset and its device reported as a
    ``clock`` fault; the 280-s one is kept (under ``max_future_s``) in the window its timestamp names. Neither
    moves its segment's stream time: every window of every segment closes with all its readings, none late."""
    s = unique_settings(brokers)
    events, far_ts = with_skewed_readings(stream(), after_step=10)
    with Stack(s, tmp_path) as st:
        worker, _bridge = st.start_pipeline()
        c = devices(s.mqtt.host, s.mqtt.port, "clock-devices", persistent=False)
        wait_published(publish(c, s, events), 60)
        c.disconnect()
        c.loop_stop()
        acc = account(s, len(events), expected_windows())
        alerts = read_topic(s, "alerts", lambda rs: any(a["subject"] == FAR_DEVICE for a in rs), timeout_s=30, idle_s=1)
        url = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
        clock_faults = metric_value(url, "citybrain_device_faults_total", {"status": "clock"})
    dead = read_topic(s, "dead_letter", timeout_s=20, idle_s=1)
    assert acc.dead_reasons == ["clock_skew"], acc.dead_reasons  # nothing late
    (reason,) = [d["reason"] for d in dead]
    assert "ahead of the segment's stream time" in reason
    stated_s = float(reason.split(" is ")[1].split(" s ")[0])  # the offset, in seconds, in the reason
    # from the segment's stream time when it arrived: between its step and the end of the stream
    assert T0 + 30 * 9 <= far_ts - stated_s <= T0 + 60 * 13
    assert acc.lost == 0 and acc.duplicate_outputs == 0
    # every window of the two segments holds both loops' readings (the 280-s one in minute 10), closed normally
    for seg in ("A1left1", "D1right1"):
        for m in range(1, 13):
            (rec, *_) = acc.states[f"{seg}@{_iso(T0 + 60 * m)}"]
            want = 4 + (1 if seg == "D1right1" and m == 10 else 0)
            assert rec["n_readings"] == want, (seg, m, rec["n_readings"])
    far_alerts = [a for a in alerts if a["subject"] == FAR_DEVICE]
    assert far_alerts[0]["type"] == "device_fault.new" and far_alerts[0]["data"]["status"] == "clock"
    assert far_alerts[0]["data"]["evidence"]["ahead_s"] > 3600
    assert any(a["type"] == "device_fault.cleared" for a in far_alerts[1:])  # its next reading was fine again
    assert not [a for a in alerts if a["subject"] == NEAR_DEVICE and a["type"] == "device_fault.new"]
    assert clock_faults == 1
    record(
        fault="one device's clock far ahead (stamped with the real time) and one 280 s ahead, mid-stream",
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        recovery_s=0.0,  # nothing to recover from: no window of the segments lost a reading
        operator_sees="dead letter clock_skew ('… is N s ahead of the segment's stream time'); device_fault.new "
        "status clock for the device, cleared at its next good reading; the segments' states unaffected",
    )


def test_feed_goes_silent_and_resumes(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    """The stale feed: nothing arrives for ``feed_stale_s`` wall seconds → /health degraded with the reason, the
    age gauge above the limit, the console's snapshot data older than the limit (greyed out); the feed resumes →
    ok again, and no reading lost."""
    stale_s = 5.0
    # idle_close_s 8: the silence (detection + the console's checks) stays well under the 5 × idle_close_s after
    # which the worker takes the stream for ended (and closes every open window: a different test)
    s = unique_settings(brokers, window={"feed_stale_s": stale_s, "idle_close_s": 8.0})
    events = stream()
    half = len(events) // 2  # ends on a window boundary (minute 6)
    with Stack(s, tmp_path) as st:
        worker, _bridge = st.start_pipeline()
        url = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
        c = devices(s.mqtt.host, s.mqtt.port, "stale-devices", persistent=False)
        wait_published(publish(c, s, events[:half]), 60)
        wait_for(lambda: health_of(worker).get("status") == "ok", 30, "/health ok while readings arrive")
        t_stop = time.monotonic()
        detect_s = wait_for(lambda: health_of(worker).get("status") == "degraded", 30, "/health degraded")
        h = health_of(worker)
        assert "no device events arrived" in h["reasons"][0] and h["feed"]["stale"]
        assert metric_value(url, "citybrain_feed_last_arrival_age_seconds") >= stale_s
        snap: dict[str, Any] = {}

        ages: dict[str, float | None] = {}

        def console_stale() -> bool:  # the console greys a segment out when its data is older than the limit
            snap.update(http_json(url + "/api/snapshot")[1])
            now = snap["server_time"]
            ages.clear()
            for r in snap["segments"]:
                if r["segment_id"] in SEGMENTS:
                    ages[r["segment_id"]] = now - _ts(r["last_arrival_at"]) if r.get("last_arrival_at") else None
            known = [a for a in ages.values() if a is not None]
            return len(known) == len(SEGMENTS) and min(known) >= stale_s - 1  # (whole seconds)

        try:
            wait_for(console_stale, 30, "every segment's data older than feed_stale_s in the console's snapshot")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; data age per segment: {ages}") from None
        assert snap["stale_after_s"] == stale_s
        silent_s = time.monotonic() - t_stop
        t_resume = time.monotonic()
        wait_published(publish(c, s, events[half:]), 60)
        recovery_s = wait_for(lambda: health_of(worker).get("status") == "ok", 30, "/health ok after the feed resumed")
        recovery_s = time.monotonic() - t_resume
        c.disconnect()
        c.loop_stop()
        acc = account(s, len(events), expected_windows())
    assert silent_s < 5 * s.window.idle_close_s  # (else the worker takes the stream for ended: see above)
    assert acc.dead_reasons == [] and acc.lost == 0 and acc.duplicate_outputs == 0
    record(
        fault="whole feed silent (no device events) for a while, then resumes",
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        recovery_s=round(recovery_s, 1),
        detected_s=round(detect_s, 1),
        silent_s=round(silent_s, 1),
        operator_sees=f"/health 'degraded' ('no device events arrived for N s') {detect_s:.0f} s after the last "
        f"arrival (feed_stale_s={stale_s:g}); citybrain_feed_last_arrival_age_seconds rising (alert "
        "CitybrainFeedStale); console '● feed stale', segments greyed out with their data age; ok once events arrive",
    )


def _ts(iso: str) -> float:
    from streams.records import parse_ts

    return float(parse_ts(iso))
