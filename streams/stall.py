"""Watchdog for an assigned partition the worker stops reading (the symptom of faust-streaming #629).

After a rebalance, faust-streaming sometimes never fetches one of the partitions it was assigned — seen here
after a worker was SIGKILLed and the survivor took over a partition the dead worker had not committed yet
(``tests/faults/test_two_workers.py``): every later reading of that partition's segments was lost while the other
partitions went on. Upstream: https://github.com/faust-streaming/faust/issues/629 (open).

Every :data:`INTERVAL_S` the watchdog compares, for each partition of the agents' source topics assigned to
this worker, the next offset the worker would read (Faust's read offset + 1, else its committed offset, else the
partition's earliest) with the partition's log end. A partition that has had messages waiting and read nothing
for :data:`STALL_S` while no rebalance or table recovery is going on is *stalled*: the watchdog logs it, counts it
(``citybrain_partition_stalls_total``), resumes the partition and seeks it to that next offset (which makes the
Kafka client fetch it anew). Readings are then processed from where the worker stopped — nothing is skipped;
anything read twice is recognised as a duplicate by the window agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from faust.types import TP

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
STALL_S = 20.0


def next_offsets(
    assigned: set[TP],
    read: Mapping[TP, int | None],
    committed: Mapping[TP, int | None],
    earliest: Mapping[TP, int | None],
) -> dict[TP, int]:
    """The next offset the worker will read per partition: read offset + 1, else committed, else earliest."""
    out: dict[TP, int] = {}
    for tp in assigned:
        r, c = read.get(tp), committed.get(tp)
        e = earliest.get(tp)
        out[tp] = r + 1 if r is not None else c if c is not None and c >= 0 else e if e is not None else 0
    return out


class StallTracker:
    """Per partition: since when it has had messages waiting without its next offset moving (monotonic s)."""

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.stall_s = stall_s
        self._since: dict[TP, tuple[int, float]] = {}

    def reset(self) -> None:
        self._since.clear()

    def update(self, nxt: Mapping[TP, int], highwaters: Mapping[TP, int | None], now: float) -> list[TP]:
        """Record one observation; return the partitions stalled for at least ``stall_s``. A partition whose
        highwater the consumer does not know (``None``, as just after a rebalance) counts as not stalled."""
        stalled = []
        for tp, offset in nxt.items():
            hw = highwaters.get(tp)
            if hw is None or hw <= offset:  # nothing waiting (or not known yet, as after a rebalance): not stalled
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != offset:  # first sight, or it moved
                self._since[tp] = (offset, now)
            elif now - seen[1] >= self.stall_s:
                stalled.append(tp)
                self._since[tp] = (offset, now)  # act at most once per stall_s
        for tp in set(self._since) - set(nxt):
            self._since.pop(tp, None)
        return stalled


def register(pipe: Pipeline, interval_s: float | None = None, stall_s: float | None = None) -> None:
    """Watch this worker's assigned source partitions; resume and re-seek any that stall (defaults: the module's
    :data:`INTERVAL_S` and :data:`STALL_S` at registration)."""
    interval_s = interval_s or INTERVAL_S
    stall_s = stall_s or STALL_S
    app = pipe.app
    counter = pipe.worker_metrics.partition_stalls
    tracker = StallTracker(stall_s)

    @app.timer(interval_s, name="partition-watchdog")
    async def partition_watchdog() -> None:
        consumer: Any = app.consumer
        if app.rebalancing or getattr(app, "in_recovery", False):
            tracker.reset()
            return
        try:
            topics = set(app.topics.acking_topics)
            assigned = {tp for tp in consumer.assignment() if tp.topic in topics}
            if not assigned:
                tracker.reset()
                return
            committed = dict(consumer._committed_offset)
            read = dict(consumer._read_offset)
            never = [tp for tp in assigned if read.get(tp) is None and committed.get(tp) in (None, -1)]
            earliest = await consumer.earliest_offsets(*never) if never else {}
            highwaters = await consumer.highwaters(*assigned)
        except Exception as exc:  # rebalancing or broker unreachable: look again next time
            log.debug("partition watchdog skipped: %r", exc)
            return
        nxt = next_offsets(assigned, read, committed, earliest)
        for tp in tracker.update(nxt, highwaters, time.monotonic()):
            waiting = highwaters[tp] - nxt[tp]
            log.warning(
                "partition %s[%d]: %d messages waiting and nothing read for %.0f s (faust-streaming #629); "
                "resuming it and seeking to offset %d",
                tp.topic,
                tp.partition,
                waiting,
                stall_s,
                nxt[tp],
            )
            counter.inc()
            try:
                consumer.resume_partitions({tp})
                await consumer.seek(tp, nxt[tp])
            except Exception as exc:  # e.g. revoked by a rebalance meanwhile: never let the watchdog crash the worker
                log.warning("partition %s[%d]: could not resume it: %r", tp.topic, tp.partition, exc)
