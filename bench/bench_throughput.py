"""Sustained worker throughput, with the raw-consumer ceiling, on the embedded broker or on Apache Kafka.

Device readings (the SUMO harness's normal run repeated with shifted timestamps, or a simulated demo city) are
produced to the ``ingest`` topic *before* the worker starts (devices producing to Kafka directly). Then one or
more ``citybrain worker`` processes start with every agent on and the benchmark polls their ``/metrics`` for
``citybrain_events_applied_total`` + ``citybrain_events_rejected_total``: the sustained rate is the slope between
10 % and 90 % of the readings, so start-up, group join and the idle tail are not counted. The ceiling is a raw
aiokafka consumer decoding the same topic's JSON, in the same run on the same machine.

``--profile`` wraps the (single) worker in ``py-spy record`` and writes a collapsed-stack profile plus a
summary of the hottest functions (own and cumulative samples).

Run: ``python -m bench.bench_throughput [--engine tansu|kafka] [--workers 1|2] [--events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.bench_pipeline import events_source
from ops.runtime import ChildProcess, settings_env
from ops.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_bundles(items: list[tuple[bytes, bytes]], n_partitions: int, per_batch: int = 500) -> list[tuple[int, bytes]]:
    """What the MQTT bridge writes to ``events`` for these readings: per batch of ``per_batch`` arrivals, one
    bundle of validated events per partition (``received_at`` = now), as (partition, value)."""
    from streams.records import bundle_events, encode_event
    from streams.topics import KeyPartitions

    part_of = KeyPartitions()
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(items), per_batch):
        by_part: dict[int, list[bytes]] = {}
        for k, v in items[i : i + per_batch]:
            ev = orjson.loads(v)
            ev["ts_s"] = _epoch(ev["ts"])
            by_part.setdefault(part_of(k, n_partitions), []).append(encode_event(ev, time.time()))
        out += [(p, b) for p, evs in by_part.items() for b in bundle_events(evs)]
    return out


def repeated_events(path: Path, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) device payloads: the file's readings, repeated later in time as often as needed.

    Each repetition is shifted by the file's span rounded up to whole hours, so readings never collide (no
    duplicates) and windows keep their one-minute alignment.
    """
    base = [orjson.loads(ln) for ln in path.read_bytes().splitlines() if ln.strip()]
    times = [_epoch(e["ts"]) for e in base]
    span = (max(times) - min(times)) + 3600.0
    shift_s = (int(span) // 3600 + 1) * 3600
    out: list[tuple[bytes, bytes]] = []
    k = 0
    while len(out) < n:
        for e, t in zip(base, times, strict=True):
            if len(out) >= n:
                break
            ev = dict(e)
            ev["ts"] = _iso(t + k * shift_s)
            out.append((str(ev["segment_id"]).encode(), orjson.dumps(ev)))
        k += 1
    return out


async def produce(bootstrap: str, topic: str, items: list[tuple[Any, bytes]], settings: Settings) -> float:
    """Produce (key, value) items, or (partition, value) when the first element is an int (bundles)."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics

    await ensure_topics(bootstrap, sorted({*settings.topics.all_names(), topic}), settings)
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await prod.start()
    t0 = time.perf_counter()
    try:
        for i, (k, v) in enumerate(items):
            if isinstance(k, int):
                await prod.send(topic, v, partition=k)
            else:
                await prod.send(topic, v, key=k)
            if i % 50_000 == 0:
                log(f"  produced {i:,}/{len(items):,}")
        await prod.flush()
    finally:
        await prod.stop()
    return time.perf_counter() - t0


async def produce_paced(bootstrap: str, topic: str, items: list[tuple[Any, bytes]], rate: float) -> float:
    """Produce ``items`` at ``rate`` per second (in 10 ms steps), as devices reporting live would."""
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await prod.start()
    t0 = time.perf_counter()
    sent = 0
    try:
        while sent < len(items):
            due = min(len(items), int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                k, v = items[sent]
                if isinstance(k, int):
                    await prod.send(topic, v, partition=k)
                else:
                    await prod.send(topic, v, key=k)
                sent += 1
            if sent % max(int(rate) * 10, 1) < max(int(rate) // 100, 1):
                log(f"  paced: {sent:,}/{len(items):,} sent")
            await asyncio.sleep(0.01)
        await prod.flush()
    finally:
        await prod.stop()
    return time.perf_counter() - t0


async def ceiling(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """A raw aiokafka consumer decoding the JSON of ``topic`` from the start (no group)."""
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await cons.start()
    got, t0, t_first = 0, time.perf_counter(), None
    try:
        while got < n and time.perf_counter() - t0 < 300:
            batch = await cons.getmany(timeout_ms=500, max_records=10000)
            for msgs in batch.values():
                if t_first is None:
                    t_first = time.perf_counter()
                for m in msgs:
                    orjson.loads(m.value or b"null")
                    got += 1
    finally:
        await cons.stop()
    dt = time.perf_counter() - (t_first or t0)
    return {"events": got, "seconds": round(dt, 2), "events_per_s": round(got / dt)}


_METRIC = re.compile(rb"^citybrain_events_(applied|rejected)_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def metrics_body(port: int, timeout_s: float) -> bytes:
    """A worker's ``/metrics`` page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        return bytes(r.read())


def processed(port: int) -> float | None:
    try:
        body = metrics_body(port, timeout_s=2.0)
    except OSError:
        return None
    return sum(float(v) for _, v in _METRIC.findall(body))


_RECEIVED_KAFKA = re.compile(r'^citybrain_events_received_total\{source="kafka"\} (\S+)$', re.M)


def received_kafka(port: int) -> float | None:
    """The bridge's ``ingest`` records consumed so far (its ``citybrain_events_received_total{source="kafka"}``)."""
    try:
        body = metrics_body(port, timeout_s=2.0)
    except OSError:
        return None
    return sum(float(v) for v in _RECEIVED_KAFKA.findall(body.decode()))


def histogram_quantiles(body: str, name: str, labels: str = "", qs: tuple[float, ...] = (0.5, 0.99)) -> dict[str, Any]:
    """Quantiles of a Prometheus histogram read from a ``/metrics`` body, as the upper bound of the bucket
    holding each quantile (so "p99 ≤ 0.1 s" is exact about the bucket, not finer)."""
    buckets: list[tuple[float, float]] = []
    for line in body.splitlines():
        if not line.startswith(name + "_bucket{") or (labels and labels not in line):
            continue
        le = line.split('le="')[1].split('"')[0]
        buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, Any] = {"count": int(total)}
    for q in qs:
        out[f"p{round(q * 100)}_le_s"] = next((le for le, c in buckets if c >= q * total), None) if total else None
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (s)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += [int(c), *_children(int(c))]
    except OSError:
        pass
    return out


def measure_workers(
    settings: Settings,
    n_workers: int,
    n: int,
    log_dir: Path,
    profile: Path | None,
    timeout_s: float,
    paced: Any = None,
) -> dict[str, Any]:
    """Start the workers; measure until ``n`` readings are processed. ``paced``: a callable started (in a
    thread) once every worker is healthy, producing the readings live; latency quantiles are then reported."""
    from ops.brokers import free_port

    workers: list[ChildProcess] = []
    ports: list[int] = []
    for i in range(n_workers):
        port = free_port()
        s = settings.model_copy(update={"web_port": port, "data_dir": log_dir / f"data{i}"})
        args = ["worker"]
        env = settings_env(s)
        wrapper = None
        if profile is not None:
            spy = Path(sys.executable).parent / "py-spy"
            wrapper = [str(spy), "record", "-r", "200", "-f", "raw", "-o", str(profile), "--"]
        child = ChildProcess(f"worker{i}", args, env, log_dir / f"worker{i}.log", wrapper=wrapper)
        workers.append(child)
        ports.append(port)
    bridge = None
    if settings.kafka_ingest == "bridge":  # the bridge validates `ingest` (no MQTT side here)
        bs = settings.model_copy(
            update={"bridge_web_port": free_port(), "mqtt": settings.mqtt.model_copy(update={"host": ""})}
        )
        bridge = ChildProcess("bridge", ["bridge"], settings_env(bs), log_dir / "bridge.log")
        bridge_port = bs.bridge_web_port
    if paced is not None:
        import threading

        from ops.runtime import http_json

        deadline = time.monotonic() + 120
        for p in ports:
            while time.monotonic() < deadline:
                try:
                    if http_json(f"http://127.0.0.1:{p}/health")[0] == 200:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.5)
        time.sleep(3)  # the planner's and the console view's consumers are up too
        threading.Thread(target=paced, daemon=True).start()
    samples: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []  # (processed, worker CPU s)
    bridge_cpu: list[tuple[float, float, float]] = []  # (time, bridge's records consumed, bridge CPU s)
    peak_rss = 0.0
    metrics_bodies: list[str] = []
    t_start = time.monotonic()
    last_change = t_start
    last = -1.0
    try:
        while time.monotonic() - t_start < timeout_s:
            time.sleep(0.25)
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited; log:\n{w.tail()}")
            vals = [processed(p) for p in ports]
            total = sum(v or 0.0 for v in vals)
            now = time.monotonic()
            samples.append((now, total))
            cpu.append((total, sum(cpu_s(w.proc.pid) for w in workers)))
            if bridge is not None:  # the bridge runs ahead of the worker: timed on its own progress
                bridge_cpu.append((now, received_kafka(bridge_port) or 0.0, cpu_s(bridge.proc.pid)))
            peak_rss = max(peak_rss, sum(rss_mb(w.proc.pid) for w in workers))
            if total != last:
                last, last_change = total, now
                if len(samples) % 20 == 0:
                    log(f"  processed {total:,.0f}/{n:,} ({total / n:.0%}), RSS {peak_rss:.0f} MB")
            if total >= n or (total > 0 and now - last_change > 30):
                break
        for p in ports:
            try:
                metrics_bodies.append(metrics_body(p, timeout_s=5.0).decode())
            except OSError:
                pass
    finally:
        if profile is not None:  # py-spy writes its profile on SIGINT (the group's SIGTERM would lose it)
            for w in workers:
                os.kill(w.proc.pid, signal.SIGINT)
            deadline = time.monotonic() + 60
            while not profile.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
        for w in workers:
            w.stop(grace_s=30)
        if bridge is not None:
            bridge.stop(grace_s=30)
    lo = next((t for t, v in samples if v >= 0.1 * n), None)
    hi = next((t for t, v in samples if v >= 0.9 * n), None)
    first = next((t for t, v in samples if v > 0), None)
    done = samples[-1][1] if samples else 0.0
    # too short a measurement (the 0.25 s polling cannot time it) gives no rate rather than a wrong one
    rate = round(0.8 * n / (hi - lo)) if lo is not None and hi is not None and hi - lo >= 2.0 else None
    c_lo = next((c for v, c in cpu if v >= 0.1 * n), None)
    c_hi = next((c for v, c in cpu if v >= 0.9 * n), None)
    cpu_us = round((c_hi - c_lo) / (0.8 * n) * 1e6, 1) if c_lo is not None and c_hi is not None else None
    b_lo = next(((t, c) for t, v, c in bridge_cpu if v >= 0.1 * n), None)
    b_hi = next(((t, c) for t, v, c in bridge_cpu if v >= 0.9 * n), None)
    bridge_us = bridge_rate = None
    if b_lo is not None and b_hi is not None and b_hi[0] - b_lo[0] >= 1.0:  # the 0.25 s polling can time it
        bridge_us = round((b_hi[1] - b_lo[1]) / (0.8 * n) * 1e6, 1)
        bridge_rate = round(0.8 * n / (b_hi[0] - b_lo[0]))
    body = "\n".join(metrics_bodies) if n_workers == 1 else ""
    latency = {
        "reading_applied": histogram_quantiles(body, "citybrain_processing_latency_seconds"),
        "window_close_to_state": histogram_quantiles(
            body, "citybrain_output_latency_seconds", 'output="segment_state"'
        ),
        "reading_to_alert": histogram_quantiles(body, "citybrain_output_latency_seconds", 'output="alert"'),
    }
    return {
        "latency": latency if body else None,
        "workers": n_workers,
        "events": n,
        "processed": int(done),
        "sustained_events_per_s": rate,
        "first_event_after_s": round(first - t_start, 1) if first else None,
        "peak_rss_mb": round(peak_rss, 1),
        "cpu_us_per_event": cpu_us,
        "cpu_utilisation": round(cpu_us * rate / 1e6, 2) if cpu_us and rate else None,
        "bridge_cpu_us_per_event": bridge_us,
        "bridge_events_per_s": bridge_rate,
    }


def _frame(f: str) -> str:
    """``func (path/to/file.py:12)`` → ``func (file.py``."""
    name, _, where = f.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]}"


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Hottest functions of a py-spy ``raw`` (collapsed stacks) profile: own and cumulative share."""
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += c
        for f in set(frames):
            cum[f] += c
    lines = [f"{total} samples", "own:"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    lines += ["cumulative:"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in cum.most_common(top * 2)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_throughput", description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["tansu", "kafka"], default="tansu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument(
        "--path",
        choices=["ingest", "events"],
        default="ingest",
        help="ingest: raw device payloads (devices producing to Kafka, validated by the worker); events: what "
        "the MQTT bridge writes (validated, bundled per segment)",
    )
    ap.add_argument(
        "--kafka-ingest",
        choices=["worker", "bridge"],
        default="worker",
        help="with --path ingest: who validates `ingest` (bridge: a `citybrain bridge` beside the worker)",
    )
    ap.add_argument("--events-file", type=Path, default=None, help="device readings (JSONL); default: harness/sim")
    ap.add_argument("--network", type=Path, default=None, help="the readings' network (with --events-file)")
    ap.add_argument("--rate", type=float, default=0.0, help="produce live at this many readings/s (latency)")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    ap.add_argument("--profile", action="store_true", help="py-spy the worker (needs `pip install py-spy`)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--timeout-s", type=float, default=900.0)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    events_path, network = (a.events_file, a.network) if a.events_file else events_source(a.out)
    log(f"events: {events_path} (×{a.events:,})")
    items = repeated_events(events_path, a.events)
    run = uuid.uuid4().hex[:6]
    log_dir = a.out / f"throughput-{run}"
    log_dir.mkdir(parents=True)
    broker: Any
    if a.engine == "kafka":
        from ops.real_brokers import ApacheKafkaBroker

        broker = ApacheKafkaBroker(log_dir=log_dir)
    else:
        from ops.brokers import TansuBroker

        broker = TansuBroker(log_dir=log_dir)
    res: dict[str, Any] = {
        "path": a.path,
        "kafka_ingest": a.kafka_ingest,
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "engine": a.engine,
        "command": "python -m bench.bench_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    with broker:
        settings = Settings(
            app_id=f"bench-{run}",
            network=network,
            topics={"prefix": f"b{run}."},  # type: ignore[arg-type]
            kafka={"brokers": broker.url, "partitions": a.partitions},  # type: ignore[arg-type]
            mqtt={"host": "127.0.0.1", "port": 1},  # type: ignore[arg-type]  # the worker does not use MQTT
            window={"idle_close_s": 5.0},  # type: ignore[arg-type]
            log_level="warning",
            kafka_ingest=a.kafka_ingest,
        )
        topic = settings.topics.name(a.path)
        records = as_bundles(items, a.partitions) if a.path == "events" else items
        prof = log_dir / "worker.pyspy.txt" if a.profile else None
        if a.rate > 0:
            # live: a raw-consumer ceiling on a scratch topic first, then the worker with readings paced in
            scratch = settings.topics.prefix + "ceiling"
            asyncio.run(produce(broker.bootstrap, scratch, items[: min(len(items), 100_000)], settings))
            res["ceiling"] = asyncio.run(ceiling(broker.bootstrap, scratch, min(len(items), 100_000)))
            res["rate"] = a.rate

            def paced() -> None:
                res["paced_s"] = round(asyncio.run(produce_paced(broker.bootstrap, topic, records, a.rate)), 1)

            log(f"starting {a.workers} worker(s); then {len(items):,} readings at {a.rate:,.0f}/s to {topic} …")
            res["worker"] = measure_workers(settings, a.workers, len(items), log_dir, prof, a.timeout_s, paced)
        else:
            log(f"producing {len(items):,} readings ({len(records):,} records) to {topic} …")
            res["produce_s"] = round(asyncio.run(produce(broker.bootstrap, topic, records, settings)), 2)
            log("raw consumer ceiling …")
            res["ceiling"] = asyncio.run(ceiling(broker.bootstrap, topic, len(records)))
            if a.path == "events":  # the ceiling counts readings, not bundles
                res["ceiling"]["events_per_s"] = round(len(items) / res["ceiling"]["seconds"])
            log(f"ceiling {res['ceiling']['events_per_s']:,} events/s; starting {a.workers} worker(s) …")
            res["worker"] = measure_workers(settings, a.workers, len(items), log_dir, prof, a.timeout_s)
    w, c = res["worker"], res["ceiling"]
    if w["sustained_events_per_s"]:
        res["ratio_to_ceiling"] = round(w["sustained_events_per_s"] / c["events_per_s"], 4)
    print(json.dumps(res, indent=2))
    if prof is not None and prof.exists():
        summary = summarize_profile(prof)
        (log_dir / "worker.profile-summary.txt").write_text(summary)
        print(summary)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
