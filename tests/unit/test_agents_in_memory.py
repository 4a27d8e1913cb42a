"""The in-memory path: Faust's ``agent.test_context()`` drives an agent without a broker.

The sends to other topics are captured by replacing ``Pipeline.send_raw`` — a boundary that needs a running
Kafka producer; the same agent is exercised end to end on real brokers in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import roadnet
from ops.settings import Settings
from streams.app import build_app


@pytest.fixture
def pipe(tmp_path: Any) -> Any:
    settings = Settings(app_id="cb-unit", data_dir=tmp_path, kafka={"brokers": "kafka://127.0.0.1:9"})  # type: ignore[arg-type]
    return build_app(settings, roadnet.grid_city(2, 2), broker_url="kafka://127.0.0.1:9")


def capture_sends(
    pipe: Any, monkeypatch: pytest.MonkeyPatch, sent: list[tuple[str, Any, Any]], rename: dict[str, str] | None = None
) -> None:
    """Replace ``pipe.send_raw`` (the boundary to Kafka, which these in-memory tests do not run) by a recorder of
    (topic, key or else partition, value), already delivered. ``rename`` maps topic names to short ones."""

    async def capture(
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        *,
        source: tuple[str, int],
    ) -> asyncio.Future[None]:
        sent.append(((rename or {}).get(topic, topic), key if key is not None else partition, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    monkeypatch.setattr(pipe, "send_raw", capture)


async def test_validate_ingest_routes_valid_and_invalid(pipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, Any, Any]] = []
    names = {pipe.settings.topics.name(n): n for n in ("events", "dead_letter")}

    capture_sends(pipe, monkeypatch, sent, rename=names)

    det = next(d for d in pipe.graph.graph["detectors"].values() if d["kind"] == "loop")
    good = {
        "type": "loop",
        "detector_id": det["detector_id"],
        "segment_id": det["segment_id"],
        "lane": det["lane"],
        "lane_index": det["lane_index"],
        "role": det["role"],
        "ts": "2025-01-06T07:30:00Z",
        "interval_s": 30,
        "count": 4,
        "occupancy": 0.05,
        "speed_kmh": 42.0,
    }
    agent = pipe.app.agents["validate-ingest"]
    async with agent.test_context() as ctx:
        await ctx.put(orjson.dumps(good))
        await ctx.put(b"not json at all")
        await ctx.put(orjson.dumps({**good, "detector_id": "loop_elsewhere"}))
        for _ in range(100):  # the agent takes batches (up to 50 ms): wait for the third output
            if len(sent) >= 3:
                break
            await asyncio.sleep(0.05)
    # dead letters go out as they are found; valid readings at the end of the batch, one bundle per partition
    from streams.topics import KeyPartitions

    assert sorted(s[0] for s in sent) == ["dead_letter", "dead_letter", "events"]
    (bundle,) = [s for s in sent if s[0] == "events"]
    (event,) = orjson.loads(bundle[2])
    # the bundle goes to the partition a keyed send of the segment id would (4 partitions by default)
    assert bundle[1] == KeyPartitions()(det["segment_id"].encode(), pipe.settings.kafka.partitions)
    assert event["count"] == 4 and "received_at" in event
    dead = [orjson.loads(v) for n, _, v in sent if n == "dead_letter"]
    assert dead[0]["reason_class"] == "not_json"
    assert dead[1]["reason_class"] == "unknown_device" and "loop_elsewhere" in dead[1]["reason"]
    assert pipe.ingest_metrics.invalid.labels("not_json")._value.get() == 1
    assert pipe.ingest_metrics.valid.labels("loop")._value.get() == 1


async def test_segment_windows_dead_letters_a_foreign_events_message(
    pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only citybrain writes ``events``; anything else there is dead-lettered with its bytes, and the agent goes on."""
    sent: list[tuple[str, Any, Any]] = []

    capture_sends(pipe, monkeypatch, sent)
    agent = pipe.app.agents["segment-windows"]
    async with agent.test_context() as ctx:
        await ctx.put(b"[1, 2, 3]")  # an array, but not of events
        await ctx.put(b'{"no": "segment id"}')
        for _ in range(100):
            if len(sent) >= 2:
                break
            await asyncio.sleep(0.05)
    dl_topic = pipe.settings.topics.name("dead_letter")
    dead = [orjson.loads(v) for t, _, v in sent if t == dl_topic]
    assert len(dead) == 2 and all(d["reason_class"] == "invalid" for d in dead)
    assert "not a citybrain events message" in dead[0]["reason"]
    assert pipe.worker_metrics.rejected.labels("invalid")._value.get() == 2
