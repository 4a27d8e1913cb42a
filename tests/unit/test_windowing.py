"""Event-time windows: assignment, lateness, duplicates, idle close, clock skew."""

from __future__ import annotations

from typing import Any

from streams.records import parse_ts
from streams.windowing import add_reading, close_windows, new_state, window_end

NOW = parse_ts("2026-01-01T00:00:00Z")


def ev(ts: str, det: str = "loop_a", count: int = 1) -> dict:
    return {"type": "loop", "detector_id": det, "ts": ts, "ts_s": parse_ts(ts), "count": count}


def test_window_end_assignment() -> None:
    t = parse_ts("2025-01-06T07:30:00Z")
    assert window_end(t, 60) == t  # a reading ending on the boundary belongs to the window ending there
    assert window_end(t + 30, 60) == t + 60
    assert window_end(t + 0.5, 60) == t + 60


def test_window_closes_when_watermark_passes_end_plus_lateness() -> None:
    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    assert add_reading(st, ev("2025-01-06T07:30:30Z"), **kw) is None
    assert add_reading(st, ev("2025-01-06T07:31:00Z"), **kw) is None
    assert close_windows(st, "S", allowed_lateness_s=30, idle=False) == []
    assert add_reading(st, ev("2025-01-06T07:31:30Z"), **kw) is None  # wm = end + 30 s
    closed = close_windows(st, "S", allowed_lateness_s=30, idle=False)
    assert [(c.end_s, len(c.readings), c.closed_by) for c in closed] == [
        (parse_ts("2025-01-06T07:31:00Z"), 2, "watermark")
    ]
    # a straggler for the closed window is late, not silently merged
    assert add_reading(st, ev("2025-01-06T07:31:00Z", det="loop_b"), **kw) == "late"


def test_duplicate_reading_is_rejected() -> None:
    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    assert add_reading(st, ev("2025-01-06T07:30:30Z"), **kw) is None
    assert add_reading(st, ev("2025-01-06T07:30:30Z"), **kw) == "duplicate"
    assert add_reading(st, ev("2025-01-06T07:30:30Z", det="loop_b"), **kw) is None


def test_idle_closes_every_open_window() -> None:
    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    add_reading(st, ev("2025-01-06T07:31:00Z"), **kw)
    add_reading(st, ev("2025-01-06T07:31:30Z"), **kw)  # opens the window ending 07:32
    closed = close_windows(st, "S", allowed_lateness_s=30, idle=False)
    assert [c.closed_by for c in closed] == ["watermark"]  # 07:31 window: wm = end + 30
    assert list(st["open"]) == [str(int(parse_ts("2025-01-06T07:32:00Z")))]
    closed = close_windows(st, "S", allowed_lateness_s=30, idle=True)
    assert [(c.end_s, c.closed_by) for c in closed] == [(parse_ts("2025-01-06T07:32:00Z"), "idle")]
    assert st["open"] == {}
    assert add_reading(st, ev("2025-01-06T07:32:00Z"), **kw) == "late"


def test_out_of_order_within_lateness_is_kept() -> None:
    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    add_reading(st, ev("2025-01-06T07:31:00Z", det="a"), **kw)
    add_reading(st, ev("2025-01-06T07:31:20Z", det="a"), **kw)
    assert add_reading(st, ev("2025-01-06T07:30:30Z", det="b"), **kw) is None  # older, window still open
    closed = close_windows(st, "S", allowed_lateness_s=20, idle=False)
    assert len(closed) == 1 and len(closed[0].readings) == 2


def test_future_timestamp_is_clock_skew() -> None:
    st = new_state()
    assert add_reading(st, ev("2026-01-01T00:10:00Z"), size_s=60, now_s=NOW, max_future_s=300) == "clock_skew"
    assert add_reading(st, ev("2026-01-01T00:04:00Z"), size_s=60, now_s=NOW, max_future_s=300) is None


def test_redelivery_after_emission_is_a_duplicate_not_late() -> None:
    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    add_reading(st, ev("2025-01-06T07:30:30Z", det="a"), **kw)
    add_reading(st, ev("2025-01-06T07:31:30Z", det="a"), **kw)
    assert [c.closed_by for c in close_windows(st, "S", allowed_lateness_s=30, idle=False)] == ["watermark"]
    assert add_reading(st, ev("2025-01-06T07:30:30Z", det="a"), **kw) == "duplicate"  # the same reading again
    assert add_reading(st, ev("2025-01-06T07:30:30Z", det="b"), **kw) == "late"  # a new one, too late


def test_open_windows_keep_readings_as_json_text_and_close_to_the_same_readings() -> None:
    """The changelogged state holds each reading as one string (cheap to re-serialise every batch); the closed
    window gives back the readings exactly, floats included; a state written with dict readings still closes."""
    import orjson

    st = new_state()
    kw: dict[str, Any] = {"size_s": 60, "now_s": NOW, "max_future_s": 300}
    readings = [
        {**ev("2025-01-06T07:30:30Z"), "occupancy": 0.0718, "speed_kmh": 46.5, "received_at": 1767225600.123456},
        {**ev("2025-01-06T07:31:00Z", det="loop_b", count=0), "occupancy": 0.0, "speed_kmh": None},
    ]
    for r in readings:
        assert add_reading(st, r, **kw) is None
    (bucket,) = st["open"].values()
    assert all(isinstance(v, str) for v in bucket.values())
    restored = orjson.loads(orjson.dumps(st))  # what a restarted worker reads back from the changelog
    restored["open"][next(iter(restored["open"]))]["loop_old@1"] = {"type": "loop", "detector_id": "loop_old"}
    add_reading(restored, ev("2025-01-06T07:31:30Z"), **kw)
    add_reading(restored, ev("2025-01-06T07:31:30Z", det="loop_b"), **kw)  # two devices past it: the watermark
    (closed,) = close_windows(restored, "S", allowed_lateness_s=30, idle=False)
    assert closed.readings == [*readings, {"type": "loop", "detector_id": "loop_old"}]


# -- issue #15 defect 2: one device's clock must not move its segment's stream time --------------------------

T0 = parse_ts("2025-01-06T07:00:00Z")
DEMO_WALL = T0 + 33 * 3600  # the demo's worker clock runs ≈ 33 h ahead of the simulated stream


def iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_steps(
    st: dict[str, Any], steps: range, devices: tuple[str, ...] = ("a", "b", "c"), now_s: float = DEMO_WALL
) -> tuple[list[str | None], list[Any]]:
    """Every device reports every 30 s (in step order); windows close as they may. Returns (results, closed)."""
    results: list[str | None] = []
    closed: list[Any] = []
    for step in steps:
        for det in devices:
            results.append(add_reading(st, ev(iso(T0 + 30 * step), det), size_s=60, now_s=now_s, max_future_s=300))
        closed += close_windows(st, "S", allowed_lateness_s=30, idle=False)
    return results, closed


def test_a_reading_far_ahead_of_the_segment_is_clock_skew_even_when_the_worker_clock_agrees() -> None:
    """Stamped with the real current time while the stream runs 33 h behind: the worker clock passes it, the
    segment's stream time does not; the other devices' readings are not made late."""
    st = new_state()
    first, closed = run_steps(st, range(1, 5))
    future = ev(iso(DEMO_WALL), "b")
    assert add_reading(st, future, size_s=60, now_s=DEMO_WALL, max_future_s=300) == "clock_skew"
    rest, closed2 = run_steps(st, range(5, 13))
    assert set(first + rest) == {None}  # nothing late
    closed += closed2
    assert [c.end_s for c in closed] == [T0 + 60 * m for m in range(1, 6)]
    assert all(len(c.readings) == 6 and c.closed_by == "watermark" for c in closed)


def test_a_reading_ahead_within_the_limit_does_not_move_the_watermark() -> None:
    """280 s ahead (under max_future_s): kept for its own window, but the segment's windows close on the other
    devices' time, so nobody else's readings become late."""
    st = new_state()
    first, closed = run_steps(st, range(1, 7))
    assert add_reading(st, ev(iso(T0 + 30 * 6 + 280), "b"), size_s=60, now_s=DEMO_WALL, max_future_s=300) is None
    assert st["wm"] == T0 + 30 * 6
    rest, closed2 = run_steps(st, range(7, 19))
    assert set(first + rest) == {None}
    closed += closed2
    assert [c.end_s for c in closed] == [T0 + 60 * m for m in range(1, 9)]
    # the skewed reading is counted in the window its timestamp names (minute 8)
    assert [len(c.readings) for c in closed] == [6] * 7 + [7]


def test_a_device_that_stops_does_not_hold_back_the_watermark() -> None:
    """Two loops; one goes silent: after a few of the other's readings the silent one no longer counts."""
    st = new_state()
    run_steps(st, range(1, 5), devices=("a", "b"))
    res, closed = run_steps(st, range(5, 17), devices=("a",))
    assert set(res) == {None}
    assert [c.end_s for c in closed][-1] >= T0 + 60 * 7


def test_a_whole_segment_jumping_ahead_together_is_followed() -> None:
    """A gap in the data (a recorded outage replayed at full speed): the first device's reading after the gap is
    rejected as clock skew, a second device agreeing with it moves the segment on; no deadlock."""
    st = new_state()
    run_steps(st, range(1, 5))
    res, _ = run_steps(st, range(40, 44))  # 18 minutes later in the data, no wall time passed
    assert res[0] == "clock_skew" and set(res[1:]) == {None}


def test_stream_time_follows_the_wall_clock_after_a_pause() -> None:
    """After the feed paused for 20 wall minutes, readings 20 minutes on are expected, not clock skew."""
    st = new_state()
    run_steps(st, range(1, 5), now_s=T0 + 130)
    res, _ = run_steps(st, range(45, 47), now_s=T0 + 130 + 1200)
    assert set(res) == {None}


def test_the_partition_vouches_for_a_segment_but_never_rejects_its_first_reading() -> None:
    """A segment resuming after its own outage while its partition went on is followed; a segment's very first
    reading is only checked against the worker clock (its time may be far from the partition's)."""
    st = new_state()
    run_steps(st, range(1, 3))
    late_on = T0 + 30 * 60
    r = add_reading(st, ev(iso(late_on), "a"), size_s=60, now_s=DEMO_WALL, max_future_s=300, ref_s=late_on - 30)
    assert r is None
    fresh = new_state()
    assert add_reading(fresh, ev(iso(late_on), "a"), size_s=60, now_s=DEMO_WALL, max_future_s=300, ref_s=T0) is None
    assert add_reading(fresh, ev(iso(DEMO_WALL + 301), "b"), size_s=60, now_s=DEMO_WALL, max_future_s=300) == (
        "clock_skew"
    )


def test_a_single_device_segment_is_guarded_by_its_own_history() -> None:
    st = new_state()
    res, _ = run_steps(st, range(1, 5), devices=("a",))
    assert set(res) == {None}
    assert add_reading(st, ev(iso(DEMO_WALL), "a"), size_s=60, now_s=DEMO_WALL, max_future_s=300) == "clock_skew"
    res, closed = run_steps(st, range(5, 9), devices=("a",))
    assert set(res) == {None} and [c.end_s for c in closed][-1] == T0 + 60 * 3
