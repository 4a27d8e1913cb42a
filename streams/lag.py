"""Consumer lag of this worker: messages on its assigned partitions not yet committed, per source topic.

A timer (every :data:`INTERVAL_S`) reads the highwater (log-end offset) of every partition assigned to the
worker's Faust consumer and subtracts the offset the worker has committed (Kafka convention: the next offset to
read). A partition with nothing committed yet counts from its earliest offset, which is where the consumer
starts (``auto_offset_reset=earliest``). Only the topics Faust commits offsets for (the agents' source topics)
count; table changelogs are read at recovery, not consumed, and have no committed offset.

The gauge ``citybrain_consumer_lag_messages{topic}`` is summed over partitions, so a worker exports one series
per source topic; ``sum by (topic)`` across workers gives the consumer group's lag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from faust.types import TP

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from streams.app import Pipeline

log = logging.getLogger(__name__)

INTERVAL_S = 5.0


def lag_by_topic(
    topics: Iterable[str],
    assigned: Iterable[TP],
    highwaters: Mapping[TP, int],
    committed: Mapping[TP, int | None],
    earliest: Mapping[TP, int],
) -> dict[str, int]:
    """Messages not yet committed, summed per topic over the assigned partitions.

    Parameters
    ----------
    topics
        The topics to report; each gets a value (0 when none of its partitions is assigned here).
    assigned
        The consumer's assigned partitions; partitions of other topics are ignored.
    highwaters
        Log-end offset per partition (the offset the next produced message gets).
    committed
        Committed offset per partition (the next offset to read); missing or None = nothing committed yet.
    earliest
        Earliest available offset per partition, the start when nothing is committed.

    Returns
    -------
    dict[str, int]
        Topic → lag in messages, never negative.
    """
    out = dict.fromkeys(topics, 0)
    for tp in assigned:
        if tp.topic not in out or tp not in highwaters:
            continue
        done = committed.get(tp)
        if done is None:
            done = earliest.get(tp, 0)
        out[tp.topic] += max(0, highwaters[tp] - done)
    return out


class _Consumer(Protocol):
    _committed_offset: Mapping[TP, int | None]

    def assignment(self) -> set[TP]: ...

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...


async def measure(consumer: _Consumer, topics: Iterable[str]) -> dict[str, int]:
    """Ask the consumer's Kafka client for the offsets and compute :func:`lag_by_topic`."""
    topics = set(topics)
    assigned = {tp for tp in consumer.assignment() if tp.topic in topics}
    if not assigned:
        return dict.fromkeys(topics, 0)
    # Faust keeps the offsets it committed (or found committed when the partition was assigned) here.
    committed = dict(consumer._committed_offset)
    highwaters = await consumer.highwaters(*assigned)
    never = [tp for tp in assigned if committed.get(tp) is None]
    earliest = await consumer.earliest_offsets(*never) if never else {}
    return lag_by_topic(topics, assigned, highwaters, committed, earliest)


def update(gauge: Gauge, lags: Mapping[str, int]) -> None:
    for topic, n in lags.items():
        gauge.labels(topic).set(n)


def register(pipe: Pipeline, interval_s: float = INTERVAL_S) -> None:
    """Export this worker's consumer lag, refreshed by a timer every ``interval_s``."""
    app = pipe.app
    gauge = pipe.worker_metrics.consumer_lag

    @app.timer(interval_s, name="consumer-lag")
    async def consumer_lag() -> None:
        topics = set(app.topics.acking_topics)
        consumer: Any = app.consumer
        try:
            lags = await measure(consumer, topics)
        except Exception as exc:  # rebalancing or broker unreachable: keep the last values
            log.debug("consumer lag not measured: %r", exc)
            return
        update(gauge, lags)
