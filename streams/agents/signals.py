"""Service ``signal-planner`` (leader only): demand from every device event → ``signal-recommendations``.

Signal plans are coordinated across the city (a common cycle keeps phase-0 starts aligned for green waves), so
one planner sees all events: the leader reads every partition of ``events`` with its own plain consumer (no
group), feeds ``models.signals.DemandEstimator`` and, each time stream time crosses a control-period boundary
(``signals.period_s``, default 300 s), runs ``models.signals.recommend`` — exactly the code of
``citybrain controller --stdio`` — and publishes one recommendation per signal, keyed by ``tls_id``, with the
stable ``recommendation_id`` (signal + period start). Operators accept or reject them in the console.

Another worker that becomes leader starts its estimator from the events of the last two periods.

``recommend`` costs about a second per period for a few dozen signals (more for a whole city), so it runs in a
planner *process* (one, spawned on first use): the worker's event loop keeps windowing and detecting meanwhile.
When the planner is more than one period behind (a worker catching up on a backlog, a fast replay), it plans
only the latest period it has crossed: a plan for a period already over is of no use to anyone, and the
skipped periods are counted (``pipe.signal_stats["skipped_periods"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.signals import DemandEstimator, DemandSnapshot, Recommendation, SignalClock, SignalNetwork, recommend
from streams.records import unbundle_events
from streams.topics import bootstrap_of, kafka_client_kwargs

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)

_NET: SignalNetwork | None = None  # in the planner process


def _init_planner(net: SignalNetwork) -> None:
    """Planner-process start: keep the network, and exit as soon as the worker that started it is gone (a
    SIGKILLed worker cannot shut its pool down; an orphaned planner would compute for nobody)."""
    global _NET
    _NET = net
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, name="planner-parent-watch", daemon=True).start()


def _plan(
    snapshot: DemandSnapshot, clocks: dict[str, SignalClock], t_s: float
) -> tuple[dict[str, Recommendation], dict[str, Any]]:
    """Run in the planner process: ``models.signals.recommend`` on the network given at start."""
    assert _NET is not None
    return recommend(_NET, snapshot, clocks, t_s)


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    period_s = settings.signals.period_s
    try:
        net = SignalNetwork.from_graph(pipe.graph)
    except Exception as exc:  # a network without usable signal data: no planner, say why once
        log.warning("signal planner off: %s", exc)
        return
    if not net.intersections:
        return
    topic = app.topic(settings.topics.name("recommendations"), key_type=str, value_type=bytes, value_serializer="raw")
    pipe.extra_topics["recommendations"] = topic
    stats = {"recommendations": 0, "periods": 0, "skipped_periods": 0}
    pool: list[ProcessPoolExecutor] = []

    async def plan(
        snapshot: DemandSnapshot, clocks: dict[str, SignalClock], t_s: float
    ) -> tuple[dict[str, Recommendation], dict[str, Any]]:
        if not pool:
            ctx = multiprocessing.get_context("spawn")  # never fork a running event loop
            pool.append(ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_planner, initargs=(net,)))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool[0], _plan, snapshot, clocks, t_s)

    async def plan_loop() -> None:
        events_topic = settings.topics.name("events")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_of(settings.kafka.brokers),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka_client_kwargs(settings),
        )
        await consumer.start()
        try:
            parts = [TopicPartition(events_topic, p) for p in sorted(consumer.partitions_for_topic(events_topic) or [])]
            if not parts:
                await consumer._client.force_metadata_update()
                parts = [
                    TopicPartition(events_topic, p) for p in sorted(consumer.partitions_for_topic(events_topic) or [])
                ]
            consumer.assign(parts)
            since = int((time.time() - 2 * period_s) * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(parts, since))
            for tp in parts:
                if found.get(tp) is not None:
                    consumer.seek(tp, found[tp].offset)
                else:
                    await consumer.seek_to_end(tp)
            estimator = DemandEstimator(net)
            clocks = {t: SignalClock.for_intersection(ix) for t, ix in net.intersections.items()}
            next_at: float | None = None
            while app.is_leader():
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                stream_t = None
                for msgs in batch.values():
                    for m in msgs:
                        for ev in unbundle_events(m.value or b"[]"):
                            estimator.update(ev)
                            ts = ev.get("ts_s")
                            if isinstance(ts, int | float) and (stream_t is None or ts > stream_t):
                                stream_t = float(ts)
                if stream_t is None:
                    continue
                if next_at is None:
                    next_at = (stream_t // period_s + 1) * period_s
                if stream_t >= next_at:
                    behind = int((stream_t - next_at) // period_s)  # whole periods already over: skip them
                    stats["skipped_periods"] += behind
                    next_at += behind * period_s
                    await publish(estimator, clocks, next_at)
                    next_at += period_s
        finally:
            await consumer.stop()

    async def publish(estimator: DemandEstimator, clocks: dict[str, SignalClock], t_s: float) -> None:
        recs, _diag = await plan(estimator.snapshot(t_s), clocks, t_s)
        for tid, rec in recs.items():
            clocks[tid].send(t_s, net.intersections[tid].durations(rec.green_s))
            d = rec.to_dict()
            exp = list(rec.expected.values())
            flows = [max(e.get("demand_veh_h", 0.0), 1e-9) for e in exp]
            if exp:  # flow-weighted means over approaches, for the console's one-line summary
                d["delay_before_s"] = round(
                    sum(e["delay_before_s"] * q for e, q in zip(exp, flows, strict=True)) / sum(flows), 1
                )
                d["delay_after_s"] = round(
                    sum(e["delay_after_s"] * q for e, q in zip(exp, flows, strict=True)) / sum(flows), 1
                )
            await topic.send(key=tid, value=orjson.dumps(d))
            stats["recommendations"] += 1
        stats["periods"] += 1

    @app.task
    async def signal_planner() -> None:
        try:
            while True:
                if app.is_leader():
                    try:
                        await plan_loop()
                    except asyncio.CancelledError:
                        raise
                    except BrokenProcessPool:  # the planner process died (killed, out of memory): start anew
                        log.warning("signal planner process ended; starting a new one in 5 s")
                        pool.clear()
                        await asyncio.sleep(5)
                    except Exception:
                        log.exception("signal planner failed; restarting in 5 s")
                        await asyncio.sleep(5)
                else:
                    if pool:  # no longer the leader: free the planner process
                        pool.pop().shutdown(wait=False, cancel_futures=True)
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(2)
        finally:
            for p in pool:
                p.shutdown(wait=False, cancel_futures=True)

    pipe.signal_stats = stats
