"""``make bench``: the pipeline's speed, measured, with the raw-consumer ceiling, in one run on one machine.

1. **models** — per-event cost of validation, windowing and incident detection, per-window cost of detector
   health + congestion estimate (µs), on the events file;
2. **ceiling** — a raw aiokafka consumer decoding the same JSON from the embedded broker (events/s);
3. **end to end** — ``citybrain replay`` through Kafka (devices producing to Kafka) and through MQTT (bridge):
   sustained events/s, worker peak RSS, and the worker's processing-latency percentiles;
4. **simulator** — ``bench.bench_sim`` (detector readings per second against real time).

Events: the SUMO harness's normal run when present (``$SUMO_OUT/normal/events.jsonl``), else a simulated hour
of the demo city. Prints a markdown table with the command and machine; ``--json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
HARNESS_NET = ROOT.parent / "shared" / "eval" / "sumo" / "scenario" / "network.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def events_source(out: Path) -> tuple[Path, Path | None]:
    harness = Path(os.environ.get("SUMO_OUT", ROOT / "sumo_out")) / "normal" / "events.jsonl"
    if harness.exists() and HARNESS_NET.exists():
        return harness, HARNESS_NET
    path = out / "sim_events.jsonl"
    if not path.exists():
        log("no harness events: simulating an hour of the demo city …")
        subprocess.run(
            [str(ROOT / ".venv/bin/citybrain"), "simulate", "--publish", "file", "--out", str(path)], check=True
        )
    return path, None


def bench_models(events_path: Path, network: Path | None) -> dict[str, float]:
    import roadnet
    from models.congestion import estimate_window, segment_models_from_graph
    from models.detector_health import assess_window, new_health_state
    from models.incidents import new_segment_state, segment_configs_from_graph, update_segment
    from streams.records import decode_device_payload
    from streams.windowing import add_reading, close_windows, new_state

    graph = roadnet.load_network(network) if network else roadnet.grid_city()
    raw = [ln for ln in events_path.read_bytes().splitlines() if ln.strip()]
    t0 = time.perf_counter()
    evs = [decode_device_payload(r, max_bytes=8192) for r in raw]
    t_validate = (time.perf_counter() - t0) / len(raw)
    states: dict[str, dict[str, Any]] = defaultdict(new_state)
    closed = []
    t0 = time.perf_counter()
    for ev in evs:
        st = states[ev["segment_id"]]
        add_reading(st, ev, size_s=60, now_s=2e9, max_future_s=300)
        closed += close_windows(st, ev["segment_id"], allowed_lateness_s=30, idle=False)
    t_window = (time.perf_counter() - t0) / len(evs)
    cfgs = segment_configs_from_graph(graph)
    inc: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for ev in evs:
        sid = ev["segment_id"]
        s = inc.get(sid) or inc.setdefault(sid, new_segment_state(cfgs[sid]))
        update_segment(cfgs[sid], s, ev)
    t_incident = (time.perf_counter() - t0) / len(evs)
    models = segment_models_from_graph(graph)
    health: dict[str, dict[str, Any]] = defaultdict(new_health_state)
    prior: dict[str, Any] = {}
    t0 = time.perf_counter()
    for cw in closed:
        m = models[cw.segment_id]
        _, excluded = assess_window(cw.readings, m, health[cw.segment_id], now_s=float(cw.end_s))
        _, prior[cw.segment_id] = estimate_window(
            cw.readings, m, prior.get(cw.segment_id), excluded=excluded, end_s=float(cw.end_s)
        )
    t_estimate = (time.perf_counter() - t0) / max(len(closed), 1)
    return {
        "validate_us_per_event": round(t_validate * 1e6, 1),
        "window_us_per_event": round(t_window * 1e6, 1),
        "incident_us_per_event": round(t_incident * 1e6, 1),
        "health_and_estimate_us_per_window": round(t_estimate * 1e6, 1),
        "events": len(evs),
        "windows": len(closed),
    }


async def raw_ceiling(events_path: Path) -> dict[str, Any]:
    """Produce the events to a fresh topic on the embedded broker, then time a raw consumer decoding JSON."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from ops.brokers import TansuBroker

    raw = [ln for ln in events_path.read_bytes().splitlines() if ln.strip()]
    with TansuBroker() as kafka:
        topic = f"ceiling-{uuid.uuid4().hex[:6]}"
        prod = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20, max_batch_size=256 * 1024)
        await prod.start()
        for r in raw:
            await prod.send(topic, r, key=orjson.loads(r)["segment_id"].encode())
        await prod.flush()
        await prod.stop()
        cons = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await cons.start()
        n, t0, t_first = 0, time.perf_counter(), None
        while n < len(raw) and time.perf_counter() - t0 < 120:
            batch = await cons.getmany(timeout_ms=500, max_records=10000)
            for msgs in batch.values():
                if t_first is None:
                    t_first = time.perf_counter()
                for m in msgs:
                    orjson.loads(m.value or b"null")
                    n += 1
        dt = time.perf_counter() - (t_first or t0)
        await cons.stop()
    return {"events": n, "seconds": round(dt, 2), "events_per_s": round(n / dt)}


def replay(events_path: Path, network: Path | None, via: str, out: Path) -> dict[str, Any]:
    cmd = [
        str(ROOT / ".venv/bin/citybrain"),
        "replay",
        "--events",
        str(events_path),
        "--states-out",
        str(out / f"states_{via}.jsonl"),
        "--via",
        via,
    ]
    cmd += ["--network", str(network)] if network else []
    if network is None:
        raise SystemExit("replay needs a network file")
    log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(res.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-sim", action="store_true")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    events_path, network = events_source(a.out)
    log(f"events: {events_path}")
    res: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"}
    log("models …")
    res["models"] = bench_models(events_path, network)
    log("raw consumer ceiling …")
    res["ceiling"] = asyncio.run(raw_ceiling(events_path))
    for via in ("kafka", "mqtt"):
        log(f"end to end via {via} …")
        res[f"replay_{via}"] = replay(events_path, network, via, a.out)
    if not a.skip_sim:
        log("simulator …")
        sim = subprocess.run(
            [sys.executable, "-m", "bench.bench_sim", "--sim-s", "600", "--json", str(a.out / "sim.json")],
            check=True,
            capture_output=True,
            text=True,
        )
        res["simulator"] = json.loads((a.out / "sim.json").read_text())
        log(sim.stdout[-500:])
    m, c = res["models"], res["ceiling"]
    rk, rm = res["replay_kafka"], res["replay_mqtt"]
    rows = [
        (
            "end to end via Kafka (ingest → validate → windows → health/estimate/incidents → outputs)",
            f"{rk['events_per_s']:,} events/s",
            f"{rk['events']:,} events, worker peak RSS {rk.get('worker_rss_mb', '?')} MB",
        ),
        (
            "end to end via MQTT (bridge → Kafka → worker)",
            f"{rm['events_per_s']:,} events/s",
            f"worker peak RSS {rm.get('worker_rss_mb', '?')} MB",
        ),
        (
            "raw aiokafka consumer decoding JSON (ceiling)",
            f"{c['events_per_s']:,} events/s",
            f"ratio via Kafka: {rk['events_per_s'] / c['events_per_s']:.1%}",
        ),
        ("validation (per event)", f"{m['validate_us_per_event']} µs", ""),
        ("windowing (per event)", f"{m['window_us_per_event']} µs", ""),
        ("incident detection (per event)", f"{m['incident_us_per_event']} µs", ""),
        (
            "detector health + congestion estimate (per segment-window)",
            f"{m['health_and_estimate_us_per_window']} µs",
            f"{m['windows']:,} windows",
        ),
    ]
    print(f"\nmachine: {res['machine']}; command: make bench (python -m bench.bench_pipeline)\n")
    print("| what | figure | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
