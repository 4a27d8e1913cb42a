"""Fault tests use the real brokers of the integration suite, and share the stream and accounting helpers here.

``stream()`` is the device input every fault test publishes (loop readings on eight segments, in time order);
``Accounting`` reads what the pipeline made of it (segment states, dead letters, alerts) and checks the exact
balance *events in = readings in emitted windows + dead-lettered*, with no window lost or emitted twice with
different contents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion

from ops.runtime import ChildProcess, http_json
from ops.settings import Settings
from streams.topics import bootstrap_of, kafka_client_kwargs
from tests.integration.conftest import brokers  # noqa: F401 (fixture)

SEGMENTS = ["A0left0", "A1left1", "A2left2", "A3left3", "D0right0", "D1right1", "D2right2", "D3right3"]
MINUTES = 12
T0 = 1_736_146_800  # 2025-01-06T07:00:00Z


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def stream(minutes: int = MINUTES, stuck: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """30 s loop readings on two lanes of each segment, ``minutes`` minutes, in time order.

    The lane-1 loop of each segment in ``stuck`` repeats one reading throughout: a stuck detector, reported as a
    ``device_fault.new`` alert after three repeats and never again while it stays stuck."""
    out = []
    for step in range(1, minutes * 2 + 1):
        ts = _iso(T0 + 30 * step)
        for seg in SEGMENTS:
            for lane in (0, 1):
                out.append(
                    {
                        "type": "loop",
                        "detector_id": f"loop_mid_{seg}_{lane}",
                        "segment_id": seg,
                        "lane": f"{seg}_{lane}",
                        "lane_index": lane,
                        "role": "mid_link",
                        "ts": ts,
                        "interval_s": 30,
                        "count": 5 if lane == 1 and seg in stuck else 3 + (step + lane) % 4,
                        "occupancy": 0.05,
                        "speed_kmh": 40.0 + lane,
                    }
                )
    return out


def expected_windows(minutes: int = MINUTES) -> set[str]:
    """The ``state_id`` of every one-minute window ``stream(minutes)`` fills."""
    return {f"{seg}@{_iso(T0 + 60 * m)}" for seg in SEGMENTS for m in range(1, minutes + 1)}


def devices(host: str, port: int, client_id: str, *, persistent: bool = True) -> mqtt.Client:
    """A device-side MQTT client that queues QoS 1 messages without limit while the broker is away."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(1, 2)
    c.connect(host, port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, s: Settings, events: list[dict[str, Any]]) -> list[mqtt.MQTTMessageInfo]:
    """Publish ``events`` with QoS 1 on their device topics."""
    return [c.publish(f"{s.mqtt.topic_root}/{s.city}/loop/{e['detector_id']}", orjson.dumps(e), qos=1) for e in events]


def wait_published(infos: list[mqtt.MQTTMessageInfo], timeout_s: float) -> None:
    """Poll the PUBACK flag: paho's wait_for_publish/is_published raise for messages queued while disconnected,
    although paho resends them after reconnecting (paho 2.x keeps the queued QoS 1 messages)."""

    def acked() -> bool:
        return all(getattr(i, "_published", False) for i in infos)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not acked():
        time.sleep(0.05)
    assert acked(), "QoS 1 messages not acknowledged by the MQTT broker"


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.25) -> float:
    """Poll ``cond`` until true; return the seconds it took. Fails with ``what`` after ``timeout_s``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - t0


def health_of(child: ChildProcess) -> dict[str, Any]:
    """The child's ``/health`` body ({} while it does not answer)."""
    try:
        _, body = http_json(f"http://127.0.0.1:{child.web_port}/health")  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return {}
    return dict(body or {})


def read_topic(
    s: Settings,
    which: str,
    done: Callable[[list[dict[str, Any]]], bool] = lambda rs: True,
    *,
    timeout_s: float = 90.0,
    idle_s: float = 3.0,
    read_committed: bool = False,
) -> list[dict[str, Any]]:
    """Every record of topic ``which`` from the start, read with the settings' Kafka security options.

    Reads until ``done(records)`` holds and then nothing new arrived for ``idle_s`` (so re-emissions that follow
    the records waited for are counted too); fails after ``timeout_s``.
    """

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            s.topics.name(which),
            bootstrap_servers=bootstrap_of(s.kafka.brokers),
            auto_offset_reset="earliest",
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            **kafka_client_kwargs(s),
        )
        await consumer.start()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    records.extend(orjson.loads(m.value or b"null") for m in msgs)
                    last_new = time.monotonic()
                if done(records) and time.monotonic() - last_new >= idle_s:
                    return records
        finally:
            await consumer.stop()
        raise AssertionError(f"timed out after {timeout_s} s reading {s.topics.name(which)}; got {len(records)}")

    return asyncio.run(run())


@dataclass
class Accounting:
    """What the pipeline made of ``events``: segment states by window, dead letters, the exact balance."""

    events: int
    states: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_reasons: list[str] = field(default_factory=list)

    @property
    def applied(self) -> int:
        """Readings counted in emitted windows (each window once)."""
        return sum(recs[0]["n_readings"] for recs in self.states.values())

    @property
    def lost(self) -> int:
        """Readings neither in a window nor dead-lettered for a reason other than being a redelivery."""
        return self.events - self.applied - sum(1 for r in self.dead_reasons if r != "duplicate")

    @property
    def duplicate_outputs(self) -> int:
        """Windows emitted more than once with *different* contents (a consumer keyed by ``state_id`` would
        see the state change): the duplicates that matter."""
        return sum(len({(r["n_readings"], r["speed_kmh"]) for r in recs}) - 1 for recs in self.states.values())

    @property
    def re_emitted(self) -> int:
        """Identical re-emissions of a window (at-least-once; harmless to consumers keyed by ``state_id``)."""
        return sum(len(recs) - 1 for recs in self.states.values())


class WindowsLost(AssertionError):
    """Windows that never came (``missing``: their ``state_id``)."""

    def __init__(self, message: str, missing: set[str]) -> None:
        super().__init__(message)
        self.missing = missing


def account(s: Settings, n_events: int, windows: set[str], timeout_s: float = 120.0, **kw: Any) -> Accounting:
    """Read ``segment-state`` until every window of ``windows`` is there, and the dead letters; see
    :class:`Accounting`. Fails with the missing windows when some never come."""
    seen: set[str] = set()
    read = [0]

    def done(rs: list[dict[str, Any]]) -> bool:
        seen.update(r["state_id"] for r in rs[read[0] :] if r["n_readings"] > 0)
        read[0] = len(rs)
        return windows <= seen

    try:
        states = read_topic(s, "segment_state", done, timeout_s=timeout_s, **kw)
    except AssertionError:
        dead = read_topic(s, "dead_letter", timeout_s=10, idle_s=1, **kw)
        raise WindowsLost(
            f"windows lost: {sorted(windows - seen)[:10]} ({len(windows - seen)}); "
            f"dead letters: {[d['reason_class'] for d in dead][:20]}",
            windows - seen,
        ) from None
    dead = read_topic(s, "dead_letter", timeout_s=20, idle_s=1, **kw)
    acc = Accounting(n_events, dead_reasons=[d["reason_class"] for d in dead])
    for r in states:
        if r["n_readings"] > 0:
            acc.states.setdefault(r["state_id"], []).append(r)
    return acc


def group_lag(s: Settings, which: str = "events") -> dict[int, tuple[int, int]]:
    """Partition → (committed offset of the app's consumer group, end offset) of topic ``which``: where the
    workers stand, for failure messages."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> dict[int, tuple[int, int]]:
        topic = s.topics.name(which)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_of(s.kafka.brokers), **kafka_client_kwargs(s))
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_of(s.kafka.brokers), **kafka_client_kwargs(s))
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(s.app_id)
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            ends = await consumer.end_offsets(parts)
            return {tp.partition: (committed[tp].offset if tp in committed else -1, ends[tp]) for tp in parts}
        finally:
            await consumer.stop()
            await admin.close()

    return asyncio.run(run())


async def try_produce(bootstrap: str, **kw: Any) -> str:
    """Produce one record to topic ``probe`` with the aiokafka options ``kw`` (security checks).

    Returns
    -------
    str
        ``"ok"`` if the broker took it, else the name of the aiokafka error that refused it.
    """
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=8000, **kw)
    try:
        await p.start()
        await p.send_and_wait("probe", b"x")
        return "ok"
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await p.stop()
