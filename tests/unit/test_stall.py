"""The partition watchdog's arithmetic (``streams.stall``): next offsets and when a partition is stalled."""

from __future__ import annotations

from faust.types import TP

from streams.stall import StallTracker, next_offsets

A, B, C = TP("ev", 0), TP("ev", 1), TP("ev", 2)


def test_next_offset_is_read_plus_one_else_committed_else_earliest() -> None:
    nxt = next_offsets({A, B, C}, read={A: 9}, committed={A: 5, B: 7, C: -1}, earliest={C: 3})
    assert nxt == {A: 10, B: 7, C: 3}


def test_a_partition_is_stalled_only_with_messages_waiting_and_no_progress_for_the_whole_interval() -> None:
    t = StallTracker(stall_s=20)
    assert t.update({A: 0, B: 5}, {A: 7, B: 5}, now=0) == []  # A waits (7 > 0); B is caught up
    assert t.update({A: 0, B: 5}, {A: 7, B: 9}, now=19) == []  # not yet 20 s; B starts waiting
    assert t.update({A: 0, B: 6}, {A: 7, B: 9}, now=20) == [A]  # A: 20 s, nothing read; B moved
    assert t.update({A: 0, B: 6}, {A: 7, B: 9}, now=25) == []  # acted on A: the next verdict is 20 s later
    assert t.update({A: 0, B: 6}, {A: 7, B: 9}, now=39) == []  # B: 19 s without moving
    assert sorted(t.update({A: 0, B: 6}, {A: 7, B: 9}, now=41), key=lambda tp: tp.partition) == [A, B]


def test_progress_or_catching_up_clears_a_stall() -> None:
    t = StallTracker(stall_s=10)
    t.update({A: 0}, {A: 4}, now=0)
    t.update({A: 2}, {A: 4}, now=9)  # moved: the clock restarts
    assert t.update({A: 2}, {A: 4}, now=15) == []
    t.update({A: 4}, {A: 4}, now=16)  # caught up: nothing waiting
    assert t.update({A: 4}, {A: 6}, now=40) == []  # waiting again only since 40
    assert t.update({A: 4}, {A: 6}, now=50) == [A]


def test_unknown_highwaters_and_earliest_offsets_are_not_stalls() -> None:
    """Just after a rebalance the consumer may not know a partition's highwater or earliest offset (``None``):
    that partition is not judged (a TypeError here once crashed a worker after a takeover)."""
    assert next_offsets({A}, read={}, committed={}, earliest={A: None}) == {A: 0}
    t = StallTracker(stall_s=10)
    assert t.update({A: 0, B: 0}, {A: None, B: 3}, now=0) == []
    assert t.update({A: 0, B: 0}, {A: None, B: 3}, now=10) == [B]
