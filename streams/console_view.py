"""The operator's view of the whole city, built from citybrain's output topics (not from this worker's partitions).

Every worker runs one :class:`OutputView`: a plain aiokafka consumer (no consumer group, every partition) of
``segment-state``, ``alerts`` and ``operator-actions``, starting ``history_s`` back in time, so any worker's web
port serves the complete picture and it survives restarts (the topics are the store). Live changes are pushed
to Server-Sent-Event subscribers.

Operator actions (acknowledge / resolve an incident, accept / reject a recommendation) are records on
``operator-actions`` keyed by what they act on, carrying the operator's name, note and time: the topic is the
audit log, and replaying it rebuilds the acknowledgements after a restart. The view keeps every action of an
incident or recommendation in order (``actions``); the first acknowledgement stays ``acknowledged_by``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ops.settings import Settings
from streams.topics import bootstrap_of, kafka_client_kwargs

log = logging.getLogger(__name__)
SUBSCRIBER_QUEUE = 2000
MAX_WINDOWS = 15
MAX_PENDING_TARGETS = 1000


class OutputView:
    """Latest state of every segment, incident, recommendation, device fault and the city summary history."""

    def __init__(self, settings: Settings, history_s: float = 3600.0) -> None:
        self.settings = settings
        self.history_s = history_s
        t = settings.topics
        self.topics = {
            t.name("segment_state"): "segment",
            t.name("alerts"): "alert",
            t.name("operator_actions"): "action",
            t.name("city_summary"): "summary",
            t.name("recommendations"): "recommendation",
        }
        self.segments: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.device_faults: dict[str, dict[str, Any]] = {}
        self.recommendations: dict[str, dict[str, Any]] = {}
        self.actions: list[dict[str, Any]] = []
        # operator actions on an incident / recommendation not in the view yet: (target, id) → actions, in order
        self.pending_actions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.summaries: deque[dict[str, Any]] = deque(maxlen=240)
        # recent windows: window end → segment → state, and when each window last changed (monotonic s)
        self.windows: dict[str, dict[str, dict[str, Any]]] = {}
        self.window_touched: dict[str, float] = {}
        # windows pushed out of the buffer before the city summariser saw them (it drains this first)
        self.evicted: deque[tuple[str, dict[str, dict[str, Any]]]] = deque(maxlen=500)
        self.summarised: set[str] = set()
        self.window_floor: str | None = None  # windows at or before this were evicted: not rebuilt
        self.subscribers: set[asyncio.Queue[bytes]] = set()
        self.ready = asyncio.Event()
        self.records_seen = 0

    # -- applying records -------------------------------------------------------------------------------
    def apply(self, kind: str, rec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Fold one output record into the view; return the (event name, payload) to push, if any."""
        if kind == "segment":
            prev = self.segments.get(rec["segment_id"])
            if prev is None or str(prev.get("ts", "")) <= str(rec.get("ts", "")):
                self.segments[rec["segment_id"]] = rec
            ts = str(rec.get("ts"))
            if self.window_floor is not None and ts <= self.window_floor:
                return "segment", rec  # a window already pushed out of the buffer (and handed to the summariser)
            self.windows.setdefault(ts, {})[rec["segment_id"]] = rec
            self.window_touched[ts] = time.monotonic()
            for old in sorted(self.windows)[:-MAX_WINDOWS]:
                evicted = self.windows.pop(old, None)
                self.window_touched.pop(old, None)
                self.window_floor = old if self.window_floor is None else max(self.window_floor, old)
                if evicted is not None and old not in self.summarised:
                    self.evicted.append((old, evicted))
            return "segment", rec
        if kind == "summary":
            self.summaries.append(rec)
            return "summary", rec
        if kind == "recommendation":
            rid = rec.get("tls_id") or rec.get("recommendation_id")
            prev = self.recommendations.get(str(rid), {})
            same = prev.get("recommendation_id") == rec.get("recommendation_id")
            rec = {
                **rec,
                "decision": prev.get("decision") if same else None,
                "actions": prev.get("actions", []) if same else [],
            }
            self.recommendations[str(rid)] = rec
            self._take_pending("recommendation", str(rec.get("recommendation_id")), rec)
            return "recommendation", rec
        if kind == "alert":
            typ = str(rec.get("type", ""))
            data = dict(rec.get("data") or {})
            if typ.startswith("incident."):
                iid = str(data.get("incident_id") or rec.get("subject"))
                if typ == "incident.suspicion_expired":  # no longer supported by the model: not shown any more
                    self.incidents.pop(iid, None)
                    return "incident", {**data, "incident_id": iid, "state": "suspicion_expired"}
                prev = self.incidents.get(iid, {})
                inc = {**prev, **data, "incident_id": iid, "state": typ.split(".", 1)[1], "updated_at": rec.get("time")}
                inc.setdefault("acknowledged_by", None)
                self.incidents[iid] = inc
                self._take_pending("incident", iid, inc)
                return "incident", inc
            if typ.startswith("device_fault."):
                did = str(data.get("detector_id") or rec.get("subject"))
                fault = {**data, "detector_id": did, "state": typ.split(".", 1)[1], "updated_at": rec.get("time")}
                self.device_faults[did] = fault
                return "device_fault", fault
            return None
        if kind == "action":
            return self._apply_action(rec)
        return None

    # -- operator actions ---------------------------------------------------------------------------------------
    def knows(self, target: str, target_id: str) -> bool:
        """Whether an incident / recommendation with this id is in the view (what an operator can act on)."""
        if target == "incident":
            return target_id in self.incidents
        return any(r.get("recommendation_id") == target_id for r in self.recommendations.values())

    def _apply_action(self, rec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Append an operator action to its incident's / recommendation's history (never overwrite).

        An action on something not (yet) in the view waits in ``pending_actions`` until it appears: replaying
        the topics can bring an action before the alert it answers; nothing phantom is shown meanwhile.
        """
        self.actions.append(rec)
        target, target_id = rec.get("target"), str(rec.get("target_id"))
        if target == "incident" and target_id in self.incidents:
            return "incident", self._incident_action(self.incidents[target_id], rec)
        if target == "recommendation":
            for r in self.recommendations.values():
                if r.get("recommendation_id") == target_id:
                    return "recommendation", self._recommendation_action(r, rec)
        if target in ("incident", "recommendation"):
            self.pending_actions.setdefault((str(target), target_id), []).append(rec)
            while len(self.pending_actions) > MAX_PENDING_TARGETS:
                self.pending_actions.pop(next(iter(self.pending_actions)))
        return None

    @staticmethod
    def _history_entry(item: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any] | None:
        """The action as kept in ``item["actions"]``, or None when that action id is already there (a replay)."""
        history = item.setdefault("actions", [])
        action_id = rec.get("action_id")
        if action_id is not None and any(a.get("action_id") == action_id for a in history):
            return None
        entry = {k: rec.get(k) for k in ("action_id", "action", "operator", "claimed_operator", "note", "at")}
        history.append(entry)
        return entry

    def _incident_action(self, inc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        entry = self._history_entry(inc, rec)
        if entry is None:
            return inc
        if entry["action"] == "acknowledge" and inc.get("acknowledged_by") is None:  # the first one took it
            inc["acknowledged_by"] = entry["operator"]
            inc["acknowledged_at"] = entry["at"]
            inc["ack_note"] = entry["note"]
        elif entry["action"] == "resolve":
            inc["resolved_by"] = entry["operator"]
            inc["resolved_at"] = entry["at"]
            inc["resolve_note"] = entry["note"]
            inc["state"] = "resolved"
        return inc

    def _recommendation_action(self, r: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        entry = self._history_entry(r, rec)
        if entry is not None:
            r["decision"] = {"action": entry["action"], "operator": entry["operator"], "at": entry["at"]}
        return r

    def _take_pending(self, target: str, target_id: str, item: dict[str, Any]) -> None:
        """Apply the actions that arrived before ``item`` itself."""
        for rec in self.pending_actions.pop((target, target_id), []):
            if target == "incident":
                self._incident_action(item, rec)
            else:
                self._recommendation_action(item, rec)

    def snapshot(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments.values()),
            "incidents": list(self.incidents.values()),
            "device_faults": list(self.device_faults.values()),
            "recommendations": list(self.recommendations.values()),
            "summaries": list(self.summaries),
            # for the data age of each segment (``last_arrival_at``) against the server's clock
            "server_time": time.time(),
            "stale_after_s": self.settings.window.stale_after_s,
        }

    # -- live push ----------------------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes]) -> None:
        self.subscribers.discard(q)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        frame = b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
        for q in list(self.subscribers):
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:  # a slow client: tell it to reload the snapshot
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        q.get_nowait()
                q.put_nowait(b"event: resync\ndata: {}\n\n")

    # -- consuming ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume the output topics forever (until cancelled), reconnecting on errors."""
        delay = 1.0
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone: retry with backoff, keep serving what we have
                log.warning("console view consumer failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _consume(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_of(s.kafka.brokers),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka_client_kwargs(s),
        )
        await consumer.start()
        try:
            parts: list[TopicPartition] = []
            for topic in self.topics:
                for p in sorted(consumer.partitions_for_topic(topic) or await self._partitions(consumer, topic)):
                    parts.append(TopicPartition(topic, p))
            consumer.assign(parts)
            # the end offsets *before* the time lookup: a partition with nothing newer than history_s starts there,
            # so what is produced meanwhile is read (seek_to_end resolves lazily, at the first fetch, and skipped
            # the records produced before it: segments missing from the console)
            ends = await consumer.end_offsets(parts)
            since_ms = int((time.time() - self.history_s) * 1000)
            offsets = await consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
            for tp in parts:
                found = offsets.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
            self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, msgs in batch.items():
                    kind = self.topics[tp.topic]
                    for msg in msgs:
                        self.records_seen += 1
                        try:
                            rec = orjson.loads(msg.value or b"null")
                        except orjson.JSONDecodeError:
                            continue
                        if not isinstance(rec, dict):
                            continue
                        pushed = self.apply(kind, rec)
                        if pushed is not None:
                            self.publish(*pushed)
        finally:
            await consumer.stop()

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        for _ in range(50):
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return set(parts)
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topic {topic} has no partitions")
