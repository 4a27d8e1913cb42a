"""``make bench``: the pipeline's speed, measured, with the raw-consumer ceiling, in one run on one machine.

1. **models** — per-event cost of validation, windowing and incident detection, per-window cost of detector
   health + congestion estimate (µs), on the events file;
2. **throughput** (``bench.bench_throughput``) — sustained events/s of one worker with every agent on, readings
   produced before it starts: devices producing to Kafka (``ingest``, validated by the worker) and behind MQTT
   bridges (validated bundles on ``events``), each with a raw aiokafka consumer's rate on the same topic (the
   ceiling), worker CPU µs per reading and peak RSS;
3. **latency** — readings produced live at 1,000/s on Apache Kafka: reading → applied, window close → segment
   state acknowledged, decisive reading → alert acknowledged (p50/p99, histogram bucket bounds);
4. **scale** — 1 worker vs 2 workers on Apache Kafka; a 10,440-segment city (peak RSS);
5. **end to end via MQTT** — ``citybrain replay --via mqtt`` (devices → MQTT → bridge → Kafka → worker);
6. **simulator** — ``bench.bench_sim`` (detector readings per second against real time).

Apache Kafka runs need Java 17 (the jars come from Maven Central; ``ops/kafka/pom.xml``) and are skipped
without it. Events: the SUMO harness's normal run when present (``$SUMO_OUT/normal/events.jsonl``), else a
simulated hour of the demo city. Prints a markdown table with the command and machine; ``--json`` keeps the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

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


def throughput(name: str, args: list[str], out: Path) -> dict[str, Any] | None:
    """One ``bench.bench_throughput`` run; None (with the reason logged) when it cannot run here."""
    path = out / f"throughput_{name}.json"
    cmd = [sys.executable, "-m", "bench.bench_throughput", *args, "--json", str(path)]
    log("$ python -m bench.bench_throughput " + " ".join(args))
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        log(f"  {name}: failed ({res.returncode}): {res.stderr[-1500:]}")
        return None
    return dict(json.loads(path.read_text()))


def city_10k(out: Path) -> tuple[Path, Path, int]:
    """A 98 × 26 grid (10,440 segments, 30,824 detectors, 2,548 signals) and 5 simulated minutes of it."""
    import roadnet

    net, events = out / "grid10k.json", out / "grid10k_events.jsonl"
    if not net.exists():
        net.write_text(json.dumps(roadnet.dump_trafficnet(roadnet.grid_city(98, 26, lanes=1))))
    if not events.exists():
        subprocess.run(
            [
                *(str(ROOT / ".venv/bin/citybrain"), "simulate", "--network", str(net), "--duration-s", "300"),
                *("--publish", "file", "--out", str(events)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return net, events, sum(1 for _ in events.open("rb"))


HANGZHOU = ROOT.parent / "shared/data/hangzhou/geo_roadnet_cbengine/hangzhou.txt"


def hangzhou_1s(out: Path) -> tuple[Path, Path] | None:
    """Real Hangzhou (CBEngine) with its 5,250 loops reporting every second (854 cameras every 60 s): ≈ 5,264
    readings/s in real time, the issue's live load; 120 simulated seconds of it. None without the data."""
    if not HANGZHOU.exists():
        log(f"no {HANGZHOU}: skipping the Hangzhou 1 s row")
        return None
    import roadnet

    net, events = out / "hangzhou_loops_1s.json", out / "hangzhou_1s_events.jsonl"
    if not net.exists():
        g = roadnet.load_network(HANGZHOU)
        for d in g.graph["detectors"].values():
            if d["kind"] == "loop":
                d["interval_s"] = 1
        net.write_text(json.dumps(roadnet.dump_trafficnet(g)))
    if not events.exists():
        subprocess.run(
            [
                *(str(ROOT / ".venv/bin/citybrain"), "simulate", "--network", str(net), "--duration-s", "120"),
                *("--publish", "file", "--out", str(events)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return net, events


def java_available() -> bool:
    from ops.real_brokers import ApacheKafkaBroker

    try:
        ApacheKafkaBroker.java()
    except Exception as exc:  # no Java 17: the Apache Kafka rows are skipped
        log(f"no Java for Apache Kafka ({exc}): skipping its rows")
        return False
    return True


def _fmt(x: Any, unit: str = "") -> str:
    return "–" if x is None else f"{x:,}{unit}"


def _lat(q: dict[str, Any] | None) -> str:
    if not q or not q.get("count"):
        return "–"
    return f"p50 ≤ {q['p50_le_s'] * 1000:.0f} ms, p99 ≤ {q['p99_le_s'] * 1000:.0f} ms ({q['count']:,})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-kafka", action="store_true", help="no Apache Kafka rows (latency, 2 workers)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    events_path, network = events_source(a.out)
    log(f"events: {events_path}")
    res: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"}
    log("models …")
    res["models"] = bench_models(events_path, network)
    src = ["--events-file", str(events_path)] + (["--network", str(network)] if network else [])
    res["ingest"] = throughput("ingest", ["--events", "100000", *src], a.out)
    res["ingest_bridge"] = throughput("ingest_bridge", ["--events", "100000", "--kafka-ingest", "bridge", *src], a.out)
    res["events"] = throughput("events", ["--events", "100000", "--path", "events", *src], a.out)
    if not a.skip_kafka and java_available():
        res["live_kafka"] = throughput(
            "live_kafka", ["--engine", "kafka", "--events", "30000", "--rate", "1000", *src], a.out
        )
        res["live_kafka_5000"] = throughput(
            "live_kafka_5000",
            ["--engine", "kafka", "--events", "60000", "--rate", "5000", "--kafka-ingest", "bridge", *src],
            a.out,
        )
        hz = hangzhou_1s(a.out)
        if hz is not None:
            res["live_hangzhou_1s"] = throughput(
                "live_hangzhou_1s",
                [
                    *("--engine", "kafka", "--events", "600000", "--rate", "5264", "--kafka-ingest", "bridge"),
                    *("--events-file", str(hz[1]), "--network", str(hz[0]), "--timeout-s", "300"),
                ],
                a.out,
            )
        res["kafka_w1"] = throughput("kafka_w1", ["--engine", "kafka", "--events", "100000", *src], a.out)
        res["kafka_w2"] = throughput(
            "kafka_w2", ["--engine", "kafka", "--workers", "2", "--events", "100000", *src], a.out
        )
    log("a 10,440-segment city …")
    net10k, ev10k, n10k = city_10k(a.out)
    res["city_10k"] = throughput(
        "city_10k", ["--events", str(n10k), "--events-file", str(ev10k), "--network", str(net10k)], a.out
    )
    log("end to end via MQTT …")
    res["replay_mqtt"] = replay(events_path, network, "mqtt", a.out)
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
    m = res["models"]
    rows: list[tuple[str, str, str]] = []

    def tp_row(label: str, r: dict[str, Any] | None) -> None:
        if r is None:
            rows.append((label, "not run", ""))
            return
        w, c = r["worker"], r["ceiling"]
        rate = w["sustained_events_per_s"]
        rows.append(
            (
                label,
                f"{_fmt(rate)} events/s",
                f"{_fmt(w['cpu_us_per_event'])} µs CPU per reading; peak RSS {w['peak_rss_mb']:.0f} MB; "
                f"ceiling {c['events_per_s']:,} events/s ({rate / c['events_per_s']:.1%})"
                if rate
                else "",
            )
        )

    tp_row(
        "one worker, devices producing to Kafka (`ingest` → validate → windows → models → outputs), Tansu",
        res["ingest"],
    )
    tp_row(
        "one worker, devices producing to Kafka, validated by a bridge (`kafka_ingest = bridge`), Tansu",
        res["ingest_bridge"],
    )
    ib = (res["ingest_bridge"] or {}).get("worker") or {}
    if ib.get("bridge_cpu_us_per_event"):
        bridge_note = (
            f"; the bridge: {_fmt(ib.get('bridge_events_per_s'))} readings/s, "
            f"{ib['bridge_cpu_us_per_event']} µs CPU per reading"
        )
        rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][2] + bridge_note)
    tp_row("one worker behind MQTT bridges (validated bundles on `events`), Tansu", res["events"])
    for key, label in (
        ("live_kafka", "latency at 1,000 readings/s live (the harness hour at ≈ 60× real time), Apache Kafka"),
        ("live_kafka_5000", "latency at 5,000 readings/s live (≈ 300× real time), Apache Kafka, a bridge validating"),
    ):
        live = res.get(key)
        if not live:
            continue
        lat = live["worker"]["latency"] or {}
        rows.append((f"{label}: reading → applied", _lat(lat.get("reading_applied")), ""))
        rows.append(
            ("… window close (watermark) → segment state acknowledged", _lat(lat.get("window_close_to_state")), "")
        )
        rows.append(("… decisive reading → alert acknowledged", _lat(lat.get("reading_to_alert")), ""))
    hz_res = res.get("live_hangzhou_1s")
    if hz_res:
        w = hz_res["worker"]
        lat = w["latency"] or {}
        rows.append(
            (
                "live: real Hangzhou, 5,250 loops at 1 s (5,264 readings/s in real time), Apache Kafka, a bridge "
                "validating: reading → applied",
                _lat(lat.get("reading_applied")),
                f"sustained {_fmt(w['sustained_events_per_s'])}/s at {_fmt(w['cpu_us_per_event'])} µs CPU per "
                f"reading; peak RSS {w['peak_rss_mb']:.0f} MB; window close → state: "
                f"{_lat(lat.get('window_close_to_state'))}",
            )
        )
    w1, w2 = res.get("kafka_w1"), res.get("kafka_w2")
    if w1 and w2:
        r1, r2 = w1["worker"]["sustained_events_per_s"], w2["worker"]["sustained_events_per_s"]
        rows.append(
            (
                "2 workers vs 1 (devices producing to Kafka), Apache Kafka",
                f"{_fmt(r2)} vs {_fmt(r1)} events/s ({r2 / r1:.2f}×)" if r1 and r2 else "–",
                f"CPU used: {w2['worker']['cpu_utilisation']} vs {w1['worker']['cpu_utilisation']} cores of "
                f"{os.cpu_count()}",
            )
        )
    c10 = res.get("city_10k")
    if c10:
        w = c10["worker"]
        rows.append(
            (
                "10,440-segment city (98 × 26 grid, 30,824 detectors, 2,548 signals), Tansu",
                f"peak RSS {w['peak_rss_mb']:.0f} MB",
                f"worker + planner process; {_fmt(w['sustained_events_per_s'])} events/s over {w['events']:,} readings",
            )
        )
    rm = res["replay_mqtt"]
    rows.append(
        (
            "end to end via MQTT (`citybrain replay --via mqtt`: MQTT → bridge → Kafka → worker), Tansu",
            f"{rm['events_per_s']:,} events/s",
            f"{rm['events']:,} readings incl. start-up and the final idle close; worker peak RSS "
            f"{rm.get('worker_rss_mb', '?')} MB",
        )
    )
    rows += [
        ("validation (per reading)", f"{m['validate_us_per_event']} µs", ""),
        ("windowing (per reading)", f"{m['window_us_per_event']} µs", ""),
        ("incident detection (per reading)", f"{m['incident_us_per_event']} µs", ""),
        (
            "detector health + congestion estimate (per segment-window)",
            f"{m['health_and_estimate_us_per_window']} µs",
            f"{m['windows']:,} windows",
        ),
    ]
    for sr in res.get("simulator") or []:
        rows.append(
            (
                f"simulator, one core: {sr['network']} ({sr['detectors']:,} detectors)",
                f"{sr['readings_per_s']:,.0f} readings/s",
                f"≈ {sr['realtime_detectors']:,.0f} detectors at their reporting interval in real time",
            )
        )
    print(f"\nmachine: {res['machine']}; command: make bench (python -m bench.bench_pipeline)\n")
    print("| what | figure | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
