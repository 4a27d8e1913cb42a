"""Agent ``segment-windows``: device events → per-segment event-time windows → ``segment-state`` records.

Steps (named as in the metrics and logs):

1. ``window-add``: each validated event goes into its segment's open window (``streams.windowing``), or to the
   dead-letter topic as late / duplicate / clock skew (stamped too far ahead of the segment's robust stream time:
   the device is then a ``clock`` device fault, published on ``alerts`` like the others);
2. ``window-close``: windows whose segment watermark passed their end by the allowed lateness close at once;
   the ``window-idle-flush`` timer closes windows of segments idle for ``idle_close_s`` wall seconds;
3. ``estimate``: ``models.segment_state.estimate_segment_state`` turns a closed window's readings into a state,
   published to ``segment-state`` keyed by segment with the stable id ``{segment_id}@{window end}``.

Window state lives in the table ``segment-windows`` (changelogged, so a restarted worker resumes its open
windows). The table writes through the producer's partitioner (``use_partitioner=True``) so the idle-flush
timer may close windows outside stream iteration; keys are the same segment-id bytes as the ``events`` topic,
so changelog partitions match the source partitions. The timer runs on every worker (not ``on_leader``):
each worker flushes the segments of its own partitions. Events are taken in batches and each touched segment
is written to the table once per batch, not once per event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs

from models.congestion import estimate_window, segment_models_from_graph
from models.detector_health import assess_window, clock_decision, new_health_state
from models.incidents import flush_segment, segment_configs_from_graph, segment_summary, update_segment
from models.incidents import new_segment_state as new_incident_state
from models.segment_state import estimate_segment_state
from streams.records import Alert, SegmentState, dead_letter, device_id, format_ts, unbundle_events
from streams.windowing import ClosedWindow, add_reading, clock_offset, close_windows, new_state, window_end

if TYPE_CHECKING:
    from streams.app import Pipeline
    from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class OrjsonCodec(codecs.Codec):  # type: ignore[misc]
    """Table values as JSON via orjson: a segment's state is ≈ 6–8 kB and is written once per batch that touched
    it; stdlib json took ≈ 113 µs per write, orjson ≈ 15 µs. Same JSON (non-string keys become strings, as
    with json); states never hold non-finite floats (readings are validated finite), which orjson would write as
    null."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


ORJSON_CODEC = "cb-orjson"
codecs.register(ORJSON_CODEC, OrjsonCodec())


class SegmentTable(faust.Table):  # type: ignore[misc]
    """A table whose changelog partition is the partition the key's events arrived on.

    Faust derives it from the *current* event, which is wrong inside a ``take()`` batch mixing partitions
    and undefined in a timer. We record each key's source partition as events arrive; for keys recovered from
    the changelog and not seen since, the producer's default partitioner (murmur2 of the key bytes, as the
    bridge and Faust use for the ``events`` topic) gives the same partition.
    """

    def __init__(self, *args: Any, n_partitions: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.value_serializer = ORJSON_CODEC  # before the changelog topic is made (lazily, on first use)
        self.source_partition: dict[bytes, int] = {}
        self._n_partitions = n_partitions

    def partition_for_key(self, key: Any) -> int:
        p = self.source_partition.get(key)
        if p is None:
            p = _default_partition(key, self._n_partitions)
        return p


def _default_partition(key: bytes, n: int) -> int:
    return int(_PARTITIONER(key, list(range(n)), list(range(n))))


_PARTITIONER = DefaultPartitioner()


DEFAULT_SEGMENT = {"length_m": 300.0, "lanes": 1, "speed_limit_kmh": 50.0}
#: Incident-model decision type -> lifecycle stage (alert ``incident.{stage}``).
_STAGES = {
    "incident": "new",
    "incident_updated": "updated",
    "incident_cleared": "cleared",
    "incident_suspected": "suspected",
    "incident_suspicion_expired": "suspicion_expired",
}
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
RESCAN_EVERY_S = 10.0
FILL_EVERY_S = 2.0
MAX_FILL_WINDOWS = 120


def lifecycle_alerts(
    decisions: list[dict[str, Any]],
    state: dict[str, Any],
    locate: Callable[[str], dict[str, Any]],
    metrics: WorkerMetrics,
) -> list[Alert]:
    """Incident-model decisions → lifecycle alerts with stable ids (the model's ids survive restarts).

    ``state`` is the segment's table entry: ``state["incs"]`` keeps each open incident's full record, so an
    ``updated`` or ``cleared`` alert (and the compacted ``incidents`` topic it feeds) carries every field, not
    only what changed. ``locate(segment_id)`` gives the location fields (``x_m``/``y_m``, ``lon``/``lat``).
    Event ids: ``{incident_id}:new|suspected|suspicion_expired|cleared`` and ``{incident_id}:updated:{n}`` with
    the model's update number, so a batch processed again after a crash produces the same ids (receivers
    deduplicate). A suspicion (``{segment}#s{n}``) carries kind, lanes, start and detection time, and its
    ``suspicion_expired`` alert (reason: confirmed, device_fault, evidence_gone, …) removes it from the console.
    """
    out: list[Alert] = []
    known = state.setdefault("incs", {})
    for d in decisions:
        typ = d["type"]
        if typ in _STAGES:
            iid = str(d.get("incident_id") or f"{d['segment_id']}~{d.get('lane')}@{d['ts']}")
            inc = {**known.get(iid, {}), **{k: v for k, v in d.items() if k != "type"}}
            stage = _STAGES[typ]
            if stage in ("suspected", "suspicion_expired"):
                kind = str(d.get("kind") or "blocked lane")
                inc |= {
                    "incident_id": iid,
                    "kind": kind,
                    "estimated_start": d.get("start_ts"),
                    "detected_at": d.get("suspected_ts") or d.get("ts"),
                    "summary": f"suspected {kind} on {d['segment_id']} (or a faulty loop: check on CCTV)",
                    **locate(str(d["segment_id"])),
                }
                if stage == "suspicion_expired":
                    inc["expired_at"] = d.get("ts")
                metrics.incidents.labels(stage).inc()
            elif stage == "new":
                hyp = (d.get("evidence") or {}).get("hypothesis")
                inc |= {
                    "incident_id": iid,
                    "kind": "slowdown" if hyp == "slow" else "blocked lane",
                    "estimated_start": d.get("start_ts"),
                    "detected_at": d.get("detected_ts"),
                    "estimated_delay_veh_h": d.get("delay_veh_h_per_h"),
                    "summary": f"{'slowdown' if hyp == 'slow' else 'blocked lane'} on {d['segment_id']}",
                    **locate(str(d["segment_id"])),
                }
                metrics.incidents.labels("new").inc()
            elif stage == "updated":
                if d.get("delay_veh_h_per_h") is not None:
                    inc["estimated_delay_veh_h"] = d["delay_veh_h_per_h"]
                metrics.incidents.labels("updated").inc()
            elif stage == "cleared":
                inc["cleared_at"] = d.get("ts")
                metrics.incidents.labels("cleared").inc()
            inc["state"] = stage
            if stage in ("new", "updated"):
                # the full record (not what changes per alert), so later alerts of the incident carry every field
                known[iid] = {k: v for k, v in inc.items() if k not in ("state", "ts", "changes", "update_seq")}
            else:  # cleared; a suspicion carries its record in every alert of it: not kept
                known.pop(iid, None)
            # updates are numbered by the model (stable when a batch is processed again): distinct ids
            eid = f"{iid}:updated:{d.get('update_seq')}" if stage == "updated" else f"{iid}:{stage}"
            out.append(Alert(event_id=eid, type=f"incident.{stage}", time=str(d["ts"]), subject=iid, data=inc))
        elif typ in ("device_fault", "device_restored"):
            det = str(d["detector_id"])
            restored = typ == "device_restored"
            status = "ok" if restored else str(d.get("fault"))
            data = {
                "detector_id": det,
                "segment_id": d.get("segment_id"),
                "lane": d.get("lane"),
                "status": status,
                "fault": d.get("fault"),
                "since": d.get("since_ts"),
                "evidence": d.get("evidence"),
            }
            metrics.device_faults.labels("cleared" if restored else status).inc()
            out.append(
                Alert(
                    event_id=f"{det}:{'restored' if restored else status}@{d['ts']}",
                    type="device_fault.cleared" if restored else "device_fault.new",
                    time=str(d["ts"]),
                    subject=det,
                    data=data,
                )
            )
    return out


def register(pipe: Pipeline) -> None:
    app, settings, topics = pipe.app, pipe.settings, pipe.topics
    metrics = pipe.worker_metrics
    w = settings.window
    events_topic_name = settings.topics.name("events")
    table = SegmentTable(
        app,
        name="segment-windows",
        default=None,
        key_type=bytes,
        beacon=app.tables.beacon,
        n_partitions=settings.kafka.partitions,
        help="open event-time windows per segment",
    )
    app.tables.add(table)
    last_seen: dict[bytes, float] = {}
    last_rescan = [0.0]
    # for filling segments whose detectors are all silent (or that have none)
    started = time.monotonic()
    last_reading: dict[bytes, float] = {}
    stream_time: list[float] = []  # [max reading ts seen by this worker], empty until the first reading
    # stream time per source partition: partitions are consumed unevenly, so a segment is only judged against
    # the progress of its own partition (a lagging partition never looks like silent segments)
    part_time: dict[int, float] = {}
    part_wall: dict[int, float] = {}  # wall time (Unix s) at which each partition's stream time last advanced

    def part_expected(pk: int, now_wall: float) -> float | None:
        """The partition's stream time moved on by the wall seconds since it last advanced (None before any)."""
        pt = part_time.get(pk)
        return None if pt is None else pt + max(0.0, now_wall - part_wall.get(pk, now_wall))

    def advance_stream(pk: int, wm: float | None, now_wall: float) -> None:
        """Stream time follows the segments' robust watermarks, never a single reading's timestamp."""
        if wm is None:
            return
        if not stream_time or wm > stream_time[0]:
            stream_time[:] = [float(wm)]
        if wm > part_time.get(pk, -math.inf):
            part_time[pk] = float(wm)
            part_wall[pk] = now_wall

    def partition_of(key: bytes) -> int:
        p = table.source_partition.get(key)
        return p if p is not None else seg_partition.get(key, -1)

    last_fill = [0.0]
    n_parts = settings.kafka.partitions
    seg_partition = {str(k).encode(): _default_partition(str(k).encode(), n_parts) for k in pipe.segments}
    neighbours = {
        str(k): sorted(
            {str(e) for _, _, e in pipe.graph.in_edges(u, keys=True)}
            | {str(e) for _, _, e in pipe.graph.out_edges(v, keys=True)} - {str(k)}
        )
        for u, v, k in pipe.graph.edges(keys=True)
    }

    seg_models = segment_models_from_graph(pipe.graph)
    alerts_name = settings.topics.name("alerts")
    state_name = settings.topics.name("segment_state")
    dead_letter_name = settings.topics.name("dead_letter")
    incidents_name = settings.topics.name("incidents")

    def estimate(state: dict[str, Any], cw: ClosedWindow) -> tuple[SegmentState, list[Alert]]:
        """``estimate`` step: detector health, then the congestion model, carrying their state per segment."""
        model = seg_models.get(cw.segment_id)
        ts = format_ts(cw.end_s)
        alerts: list[Alert] = []
        excluded: frozenset[str] = frozenset()
        if model is None:  # a segment the graph does not know (cannot pass validation, kept for safety)
            seg = pipe.segments.get(cw.segment_id, DEFAULT_SEGMENT)
            est = estimate_segment_state(
                cw.readings, length_m=seg["length_m"], lanes=seg["lanes"], speed_limit_kmh=seg["speed_limit_kmh"]
            )
        else:
            health = state.get("h") or new_health_state()
            _status, excluded = assess_window(cw.readings, model, health, now_s=float(cw.end_s))
            est, state["f"] = estimate_window(
                cw.readings, model, state.get("f"), excluded=excluded, end_s=float(cw.end_s), window_s=w.size_s
            )
            state["h"] = health
        rec = SegmentState(
            state_id=f"{cw.segment_id}@{ts}",
            segment_id=cw.segment_id,
            ts=ts,
            window_start=format_ts(cw.end_s - w.size_s),
            window_s=w.size_s,
            closed_by=cw.closed_by,
            emitted_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            excluded_detectors=sorted(excluded),
            last_arrival_at=format_ts(state["last_arrival_s"]) if state.get("last_arrival_s") else None,
            **{**est.as_dict(), "n_readings": len(cw.readings)},  # every reading of the window, used or not
        )
        return rec, alerts

    def close(
        state: dict[str, Any], key: bytes, idle: bool, idle_until: float = math.inf
    ) -> list[tuple[SegmentState, list[Alert], str]]:
        closed = close_windows(
            state, key.decode(), allowed_lateness_s=w.allowed_lateness_s, idle=idle, idle_until=idle_until
        )
        out = []
        for cw in closed:
            rec, alerts = estimate(state, cw)
            out.append((rec, alerts, cw.closed_by))
        return out

    async def emit(results: list[tuple[SegmentState, list[Alert], str]], src: tuple[str, int]) -> list[Any]:
        """Send the states (and their alerts) caused by source partition ``src``; return the delivery futures."""
        futs = []
        for rec, alerts, closed_by in results:
            d = rec.asdict()
            futs.append(await pipe.send_raw(state_name, rec.segment_id.encode(), orjson.dumps(d), source=src))
            for alert in alerts:
                futs.append(
                    await pipe.send_raw(alerts_name, alert.subject.encode(), orjson.dumps(alert.asdict()), source=src)
                )
            pipe.latest_states[rec.segment_id] = d
            metrics.windows.labels(closed_by).inc()
        return futs

    async def commit_states(writes: list[tuple[bytes, dict[str, Any]]], futs: list[Any]) -> None:
        """Write the segment states to the table only once Kafka has acknowledged what they emitted: a crash in
        between re-emits a window (same id) after recovery instead of recording it as emitted and losing it."""
        if futs:
            await asyncio.gather(*futs)
        for key, state in writes:
            table[key] = state

    async def reject(reason: str, raw: bytes, src: tuple[str, int], text: str | None = None) -> Any:
        metrics.rejected.labels(reason).inc()
        text = (
            text
            or {
                "late": "reading arrived after its window closed",
                "duplicate": "same device and timestamp already applied",
                "clock_skew": f"timestamp more than {w.max_future_s:g} s ahead of the worker clock",
            }[reason]
        )
        dl = dead_letter(reason, text, "window", events_topic_name, raw)
        return await pipe.send_raw(dead_letter_name, dl.dead_letter_id.encode(), dl.dumps(), source=src)

    incident_cfgs = segment_configs_from_graph(pipe.graph)
    summaries: dict[str, dict[str, Any]] = {}
    downstream = {
        str(k): sorted({str(e) for _, _, e in pipe.graph.out_edges(v, keys=True)} - {str(k)})
        for _, v, k in pipe.graph.edges(keys=True)
    }

    def locate(sid: str) -> dict[str, Any]:
        u, v = pipe.graph.graph["segment_index"][sid]
        d = pipe.graph.edges[u, v, sid]
        out: dict[str, Any] = {}
        xy = d.get("geometry_xy_m") or []
        if xy:
            mx, my = xy[len(xy) // 2] if len(xy) > 2 else ((xy[0][0] + xy[-1][0]) / 2, (xy[0][1] + xy[-1][1]) / 2)
            out |= {"x_m": round(float(mx), 1), "y_m": round(float(my), 1)}
        ll = d.get("geometry_lonlat") or []
        if ll:
            lon, lat = ll[len(ll) // 2] if len(ll) > 2 else ((ll[0][0] + ll[-1][0]) / 2, (ll[0][1] + ll[-1][1]) / 2)
            out |= {"lon": round(float(lon), 7), "lat": round(float(lat), 7)}
        return out

    def to_alerts(decisions: list[dict[str, Any]], state: dict[str, Any]) -> list[Alert]:
        return lifecycle_alerts(decisions, state, locate, metrics)

    def detect(state: dict[str, Any], sid: str, ev: dict[str, Any]) -> list[Alert]:
        cfg = incident_cfgs.get(sid)
        if cfg is None:
            return []
        inc_state = state.get("inc") or new_incident_state(cfg)
        near = {n: summaries[n] for n in downstream.get(sid, ()) if n in summaries}
        decisions = update_segment(cfg, inc_state, ev, downstream=near)
        state["inc"] = inc_state
        summaries[sid] = segment_summary(cfg, inc_state)
        return to_alerts(decisions, state) if decisions else []

    def detect_flush(state: dict[str, Any], sid: str) -> list[Alert]:
        cfg = incident_cfgs.get(sid)
        if cfg is None or not stream_time or not state.get("inc"):
            return []
        pt = part_time.get(partition_of(sid.encode()))
        if pt is None:
            return []
        decisions = flush_segment(cfg, state["inc"], pt)
        return to_alerts(decisions, state) if decisions else []

    async def send_alerts(alerts: list[Alert], src: tuple[str, int]) -> list[Any]:
        futs = []
        for alert in alerts:
            key = alert.subject.encode()
            futs.append(await pipe.send_raw(alerts_name, key, orjson.dumps(alert.asdict()), source=src))
            if alert.type.startswith("incident."):
                futs.append(await pipe.send_raw(incidents_name, key, orjson.dumps(alert.data), source=src))
        return futs

    async def window_add(
        state: dict[str, Any], key: bytes, ev: dict[str, Any], src: tuple[str, int], now_wall: float, futs: list[Any]
    ) -> tuple[str | None, list[Alert]]:
        """``window-add`` of one reading: into its window, or dead-lettered (appending the delivery to ``futs``).
        Returns the rejection reason (None when added) and the device's clock-fault alerts."""
        sid = key.decode()
        pipe.feed.arrived(sid, now_wall)
        pk = table.source_partition.get(key, -1)
        ref = part_expected(pk, now_wall)
        reason = add_reading(state, ev, size_s=w.size_s, now_s=now_wall, max_future_s=w.max_future_s, ref_s=ref)
        dev = device_id(ev)
        if reason == "clock_skew":
            ahead, against = clock_offset(state, float(ev["ts_s"]), now_s=now_wall, ref_s=ref)
            text = f"timestamp {ev.get('ts')} is {ahead:.0f} s ahead of {against} (limit {w.max_future_s:g} s)"
            futs.append(await reject(reason, orjson.dumps(ev), src, text))
            at = format_ts(state["wm"]) if state.get("wm") is not None else str(ev.get("ts"))
            faults = state.setdefault("clock_faults", {})
            d = clock_decision(faults, segment_id=sid, detector_id=dev, lane=ev.get("lane"), at=at, ahead_s=ahead)
            return reason, to_alerts([d], state) if d else []
        # the stream is flowing (redeliveries after a restart too): track its time and liveness
        last_reading[key] = time.monotonic()
        advance_stream(pk, state["wm"], now_wall)
        if reason is not None:
            futs.append(await reject(reason, orjson.dumps(ev), src))
            return reason, []
        received = ev.get("received_at")
        state["last_arrival_s"] = max(
            float(state.get("last_arrival_s") or 0.0),
            float(received) if isinstance(received, int | float) else now_wall,
        )
        if dev not in state.get("clock_faults", ()):
            return None, []
        d = clock_decision(
            state["clock_faults"], segment_id=sid, detector_id=dev, lane=ev.get("lane"), at=str(ev["ts"]), ahead_s=None
        )
        return None, to_alerts([d], state) if d else []

    txn = pipe.transactions

    @app.agent(topics.events, name="segment-windows")
    async def segment_windows(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            async with txn.batch():
                await process(batch)
                txn.ack(batch)  # exactly once: inside the batch (no-op at least once: take_events acks)

    async def process(batch: list[Any]) -> None:
        now_wall = time.time()
        by_segment: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        futs: list[Any] = []
        for event in batch:
            try:
                evs = [(ev["segment_id"].encode(), ev) for ev in unbundle_events(event.value)]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # only citybrain writes here
                metrics.rejected.labels("invalid").inc()
                dl = dead_letter(
                    "invalid",
                    f"not a citybrain events message: {exc}",
                    "window",
                    events_topic_name,
                    bytes(event.value or b""),
                )
                futs.append(
                    await pipe.send_raw(
                        dead_letter_name,
                        dl.dead_letter_id.encode(),
                        dl.dumps(),
                        source=(events_topic_name, event.message.partition),
                    )
                )
                continue
            for key, ev in evs:
                table.source_partition[key] = event.message.partition
                by_segment[key].append(ev)
        writes: list[tuple[bytes, dict[str, Any]]] = []
        latencies: list[tuple[str, float]] = []  # (output, received_at of the reading that caused it)
        for key, items in by_segment.items():
            state = table.get(key) or new_state()
            src = (events_topic_name, partition_of(key))
            incident_alerts: list[Alert] = []
            changed = dirty = False
            newest_rx = 0.0
            for ev in items:
                reason, clock_alerts = await window_add(state, key, ev, src, now_wall, futs)
                if clock_alerts or reason == "clock_skew":
                    incident_alerts.extend(clock_alerts)
                    dirty = True  # a clock fault (and the segment's skew claim) is published and kept
                if reason is not None:
                    continue
                changed = True
                metrics.applied.labels(ev["type"]).inc()
                received = ev.get("received_at")
                if isinstance(received, int | float):
                    metrics.latency.observe(max(0.0, time.time() - received))
                    newest_rx = max(newest_rx, float(received))
                decided = detect(state, key.decode(), ev)
                if decided and newest_rx:
                    latencies += [("alert", newest_rx)] * len(decided)
                incident_alerts.extend(decided)
            if not changed:
                if state.get("open"):
                    last_seen.setdefault(key, time.monotonic())  # recovered open windows get closed too
                if dirty:
                    futs += await send_alerts(incident_alerts, src)
                    writes.append((key, state))
                continue
            results = close(state, key, idle=False)
            if newest_rx:  # a watermark close is caused by the segment's newest reading
                latencies += [("segment_state", newest_rx) for r in results if r[2] == "watermark"]
            last_seen[key] = time.monotonic()
            futs += await emit(results, src)
            futs += await send_alerts(incident_alerts, src)
            writes.append((key, state))
        await commit_states(writes, futs)
        if latencies:  # every output of the batch is acknowledged now
            acked = time.time()
            for output, rx in latencies:
                metrics.output_latency.labels(output).observe(max(0.0, acked - rx))

    @app.timer(w.flush_interval_s, name="window-idle-flush")
    async def window_idle_flush() -> None:
        touched: set[str] = set()  # exactly once: the transactions this timer produced into
        async with txn.batch():
            await idle_flush(touched)
        await txn.commit_timer_outputs(touched)

    async def idle_flush(touched: set[str]) -> None:
        now = time.monotonic()
        if now - last_rescan[0] >= RESCAN_EVERY_S:
            # windows recovered from the changelog after a restart are not in last_seen yet
            last_rescan[0] = now
            n_open = 0
            for key, state in list(table.items()):
                if state and state.get("open"):
                    n_open += len(state["open"])
                    last_seen.setdefault(key, now)
            metrics.open_windows.set(n_open)
        # a quiet segment's windows close once the rest of the stream has passed them (a stall of the whole
        # stream closes nothing), or everything once the stream has ended
        # a worker that has read nothing since it started (recovering, rebalancing) waits much longer before it
        # decides the stream has ended, or it would close recovered windows just before their readings arrive
        ended = (
            now - max(last_reading.values()) >= 5 * w.idle_close_s
            if last_reading
            else now - started >= 20 * w.idle_close_s + 60.0
        )
        for key, seen in list(last_seen.items()):
            if now - seen < w.idle_close_s:
                continue
            pt = part_time.get(partition_of(key))
            horizon = math.inf if ended else pt - w.allowed_lateness_s if pt is not None else -math.inf
            state = table.get(key)
            src = (events_topic_name, partition_of(key))
            if not state or not txn.owns(src):
                last_seen.pop(key, None)
                continue
            results = close(state, key, idle=True, idle_until=horizon)
            flushed = detect_flush(state, key.decode())
            if results or flushed:
                if txn.enabled:
                    touched.add(txn.tid(*src))
                await commit_states([(key, state)], await emit(results, src) + await send_alerts(flushed, src))
            if not state["open"]:
                last_seen.pop(key, None)
        if now - last_fill[0] >= FILL_EVERY_S:
            last_fill[0] = now
            await fill(now, touched)

    def neighbour_prior(sid: str) -> dict[str, Any] | None:
        """A filter prior at the mean speed ratio of the adjacent segments' latest states (view of the city)."""
        view = pipe.console_view
        if view is None:
            return None
        ratios = [
            st["speed_ratio"]
            for n in neighbours.get(sid, ())
            if (st := view.segments.get(n)) is not None
            and st.get("speed_ratio") is not None
            and st.get("confidence", 0) > 0.2
        ]
        if not ratios:
            return None
        v = sum(ratios) / len(ratios) * float(pipe.segments[sid]["speed_limit_kmh"])
        return {"v": v, "p": 1e4, "vf": v, "lv": 5.5, "t": 0.0}

    async def fill(now: float, touched: set[str]) -> None:
        """Close empty windows for segments of this worker that have heard nothing for ``idle_close_s``.

        Their state comes from the segment's own filter prior relaxed toward the adjacent segments' speed ratio (or
        free flow), with confidence ≤ 0.1 and ``sources=["prior"]`` — so every segment has a state every window.
        """
        if not stream_time:
            return
        try:
            assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topics.name("events")}
        except Exception:  # consumer not ready
            return
        # the stream has ended (or the city is silent): fill up to its last reading; otherwise only windows that
        # every live segment has closed too, so a brief stall of the whole stream never pre-empts real readings
        ended = now - max(last_reading.values(), default=started) >= 5 * w.idle_close_s
        for key, part in seg_partition.items():
            if part not in assigned or now - last_reading.get(key, started) < 2 * w.idle_close_s:
                continue
            pt = part_time.get(part)
            if pt is None:
                continue  # nothing read from this partition yet: nothing to judge the segment against
            target = (
                window_end(pt, w.size_s)
                if ended
                else int((pt - w.allowed_lateness_s - w.size_s) // w.size_s * w.size_s)
            )
            state = table.get(key) or new_state()
            if state["open"]:
                continue  # the idle flush closes those first
            sid = key.decode()
            end = int(state["closed"]) + w.size_s if state["closed"] is not None else target
            results = []
            for _ in range(MAX_FILL_WINDOWS):
                if end > target:
                    break
                nb = neighbour_prior(sid)
                if nb is not None and state.get("f"):
                    state["f"] = {**state["f"], "v": nb["v"], "vf": nb["vf"]}
                elif nb is not None:
                    state["f"] = nb
                rec, alerts = estimate(state, ClosedWindow(sid, end, [], "fill"))
                results.append((rec, alerts, "fill"))
                state["closed"] = end
                end += w.size_s
            if results:
                src = (events_topic_name, part)
                if txn.enabled:
                    touched.add(txn.tid(*src))
                await commit_states([(key, state)], await emit(results, src))

    pipe.tables["segment-windows"] = table
