"""The consumer-lag computation: highwater minus committed, summed per topic over the assigned partitions."""

from __future__ import annotations

from collections.abc import Mapping

from faust.types import TP
from prometheus_client import CollectorRegistry

from streams import lag
from streams.metrics import WorkerMetrics

A0, A1, B0, C0 = TP("a", 0), TP("a", 1), TP("b", 0), TP("changelog", 0)


def test_sums_partitions_per_topic_and_ignores_unlisted_topics() -> None:
    out = lag.lag_by_topic(
        ["a", "b"],
        assigned=[A0, A1, B0, C0],
        highwaters={A0: 10, A1: 7, B0: 3, C0: 500},
        committed={A0: 4, A1: 7, B0: 3, C0: None},
        earliest={},
    )
    assert out == {"a": 6, "b": 0}


def test_nothing_committed_counts_from_the_earliest_offset() -> None:
    out = lag.lag_by_topic(["a"], [A0, A1], {A0: 12, A1: 5}, {A0: None}, {A0: 2, A1: 0})
    assert out == {"a": 10 + 5}


def test_topics_without_assigned_partitions_report_zero_and_lag_is_never_negative() -> None:
    # a committed offset ahead of a stale highwater (read before a produce landed) must not go negative
    out = lag.lag_by_topic(["a", "b"], [A0], {A0: 3}, {A0: 5}, {})
    assert out == {"a": 0, "b": 0}


class FakeConsumer:
    def __init__(self, assigned: set[TP], hw: dict[TP, int], committed: dict[TP, int | None]) -> None:
        self._assigned = assigned
        self._hw = hw
        self._committed_offset: Mapping[TP, int | None] = committed
        self.asked_earliest: tuple[TP, ...] = ()

    def assignment(self) -> set[TP]:
        return self._assigned

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self._hw[tp] for tp in partitions}

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        self.asked_earliest = partitions
        return dict.fromkeys(partitions, 1)


async def test_measure_asks_earliest_only_for_uncommitted_partitions_and_sets_the_gauge() -> None:
    consumer = FakeConsumer({A0, A1, C0}, {A0: 9, A1: 4, C0: 99}, {A0: 9})
    lags = await lag.measure(consumer, ["a", "b"])
    assert lags == {"a": 3, "b": 0}
    assert consumer.asked_earliest == (A1,)
    reg = CollectorRegistry()
    m = WorkerMetrics.create(reg)
    lag.update(m.consumer_lag, lags)
    assert reg.get_sample_value("citybrain_consumer_lag_messages", {"topic": "a"}) == 3
    assert reg.get_sample_value("citybrain_consumer_lag_messages", {"topic": "b"}) == 0
