"""Benchmark of the device simulator: detector readings per second and real-time factor, single-threaded.

Runs ``sensors_sim`` (traffic model + every device + ground truth) as fast as possible on the real Hangzhou
network (CBEngine, 896 segments, 6,104 detectors) and on ``roadnet.grid_city(25, 25)`` (2,600 segments,
12,700 detectors), then writes every reading as JSONL to ``/dev/null`` (the cost of a file publisher). Reports,
per network: simulated seconds per wall second (the real-time factor: > 1 keeps up with real time), readings
per wall second, and how many detectors one core could therefore simulate in real time.

::

    .venv/bin/python -m bench.bench_sim [--sim-s 1800] [--warmup-s 300] [--hangzhou PATH]

BLAS/OpenMP thread pools are limited to one thread before numpy is imported (the model uses none anyway).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

import roadnet  # noqa: E402
from sensors_sim import Simulator  # noqa: E402
from sensors_sim.events import event_bytes  # noqa: E402

HANGZHOU = Path(__file__).resolve().parents[2] / "shared/data/hangzhou/geo_roadnet_cbengine/hangzhou.txt"
START = datetime(2025, 1, 6, 7, 30, tzinfo=UTC)


def bench(name: str, G: nx.MultiDiGraph, sim_s: float, warmup_s: float) -> dict[str, Any]:
    """Time one network.

    Parameters
    ----------
    name : str
        Label.
    G : networkx.MultiDiGraph
        Road graph.
    sim_s : float
        Simulated seconds timed, seconds.
    warmup_s : float
        Simulated seconds run first, untimed, seconds.

    Returns
    -------
    dict
        Sizes, wall times (s), real-time factors and readings per second.
    """
    t = time.perf_counter()
    truth = [0]
    sim = Simulator(G, START, seed=1, on_truth=lambda recs: truth.__setitem__(0, truth[0] + len(recs)))
    build_s = time.perf_counter() - t
    while sim.t_s < START.timestamp() + warmup_s:
        sim.advance()
    t0 = sim.t_s
    readings = 0
    t_model = t_publish = 0.0
    with open(os.devnull, "wb") as sink:
        while sim.t_s < t0 + sim_s:
            a = time.perf_counter()
            _, events = sim.advance()
            b = time.perf_counter()
            sink.write(b"".join(event_bytes(e) + b"\n" for e in events))
            t_model += b - a
            t_publish += time.perf_counter() - b
            readings += len(events)
    simulated = sim.t_s - t0
    wall = t_model + t_publish
    n_det = len(G.graph["detectors"])
    m = sim.model
    return {
        "network": name,
        "segments": m.net.n_segments,
        "cells": len(m.n),
        "movements": len(m.q),
        "detectors": n_det,
        "build_s": build_s,
        "simulated_s": simulated,
        "wall_s": wall,
        "model_devices_truth_s": t_model,
        "jsonl_s": t_publish,
        "readings": readings,
        "readings_per_s": readings / wall,
        "rtf": simulated / wall,
        "rtf_without_jsonl": simulated / t_model,
        "realtime_detectors": n_det * simulated / wall,
        "vehicles": m.vehicles(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the command, the environment and a results table.

    Parameters
    ----------
    argv : list of str, optional
        Arguments.

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m bench.bench_sim")
    ap.add_argument("--sim-s", type=float, default=1800.0, help="simulated seconds timed per network")
    ap.add_argument("--warmup-s", type=float, default=300.0, help="simulated seconds run first, untimed")
    ap.add_argument("--hangzhou", type=Path, default=HANGZHOU, help="CBEngine roadnet file of Hangzhou")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)

    print(
        "command:", shlex.join([sys.executable, "-m", "bench.bench_sim", *(argv if argv is not None else sys.argv[1:])])
    )
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {cpu}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}, threads: OMP/OPENBLAS/MKL = 1, single process"
    )
    nets: list[tuple[str, nx.MultiDiGraph]] = []
    if a.hangzhou.exists():
        nets.append(("Hangzhou (CBEngine)", roadnet.load_network(a.hangzhou)))
    else:
        print(f"(skipping Hangzhou: {a.hangzhou} not found)")
    nets.append(("grid_city(25, 25)", roadnet.grid_city(25, 25)))
    results = [bench(name, G, a.sim_s, a.warmup_s) for name, G in nets]

    print(
        "\n| network | segments | cells | detectors | simulated s | wall s | real-time factor "
        "| RTF without JSONL | readings/s | detectors per core in real time (linear) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['network']} | {r['segments']:,} | {r['cells']:,} | {r['detectors']:,} | {r['simulated_s']:.0f} "
            f"| {r['wall_s']:.2f} | {r['rtf']:.0f} | {r['rtf_without_jsonl']:.0f} | {r['readings_per_s']:,.0f} "
            f"| {r['realtime_detectors']:,.0f} |"
        )
    if a.json:
        a.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
