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
    (closed,) = close_windows(restored, "S", allowed_lateness_s=30, idle=False)
    assert closed.readings == [*readings, {"type": "loop", "detector_id": "loop_old"}]
