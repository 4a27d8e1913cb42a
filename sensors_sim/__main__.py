"""Run the simulator from the command line: events to a file (or MQTT / Kafka) and the ground truth to a folder.

::

    .venv/bin/python -m sensors_sim --network ../shared/eval/sumo/scenario/network.json \\
        --scenario sensors_sim/scenarios/sumo_grid.json --start 2025-01-06T07:00:00Z --duration-s 3600 \\
        --out-dir out/sim

``--network grid:RxC`` uses :func:`roadnet.grid_city`. Writes ``events.jsonl`` (unless ``--mqtt`` or
``--kafka``), ``ground_truth_edges.jsonl``, ``incidents.json`` and ``device_faults.jsonl`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import networkx as nx

import roadnet
from sensors_sim.publish import JsonlPublisher, KafkaPublisher, MqttPublisher, Publisher
from sensors_sim.run import simulate
from sensors_sim.scenario import Scenario, load_scenario


def load_graph(spec: str) -> nx.MultiDiGraph:
    """A road graph from a file (any format :func:`roadnet.load_network` reads) or ``grid:RxC``.

    Parameters
    ----------
    spec : str
        Path, or ``grid:<rows>x<cols>``.

    Returns
    -------
    networkx.MultiDiGraph
        The graph.
    """
    if spec.startswith("grid:"):
        rows, cols = (int(x) for x in spec[5:].lower().split("x"))
        return roadnet.grid_city(rows, cols)
    return roadnet.load_network(spec)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run (see the module docstring).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m sensors_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--network", default="grid:4x4", help="road network file, or grid:RxC")
    ap.add_argument("--scenario", type=Path, help="scenario JSON (docs/simulator.md)")
    ap.add_argument("--start", default="2025-01-06T07:00:00Z", help="simulated start, ISO UTC")
    ap.add_argument("--duration-s", type=float, default=3600.0, help="simulated seconds")
    ap.add_argument("--speed", type=float, default=0.0, help="simulated s per wall s; 0 = as fast as possible")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's, else 0)")
    ap.add_argument("--out-dir", type=Path, default=Path("sim_out"), help="folder for events and ground truth")
    ap.add_argument("--mqtt", metavar="HOST:PORT", help="publish to this MQTT broker instead of events.jsonl")
    ap.add_argument("--kafka", metavar="BOOTSTRAP", help="produce to this Kafka cluster instead")
    ap.add_argument("--topic", default="ingest", help="Kafka topic")
    ap.add_argument("--city", default="demo", help="city id in MQTT topics")
    ap.add_argument("--topic-root", default="city", help="first MQTT topic level")
    a = ap.parse_args(argv)

    G = load_graph(a.network)
    scenario = load_scenario(a.scenario) if a.scenario else Scenario()
    start = datetime.fromisoformat(a.start.replace("Z", "+00:00"))
    a.out_dir.mkdir(parents=True, exist_ok=True)
    pub: Publisher
    if a.mqtt:
        host, _, port = a.mqtt.rpartition(":")
        pub = MqttPublisher(host, int(port), a.city, topic_root=a.topic_root)
    elif a.kafka:
        pub = KafkaPublisher(a.kafka, a.topic)
    else:
        pub = JsonlPublisher(a.out_dir / "events.jsonl")
    t0 = time.monotonic()
    try:
        n = simulate(
            G,
            pub,
            start=start,
            duration_s=a.duration_s,
            speed=a.speed,
            seed=a.seed,
            scenario=scenario,
            truth_dir=a.out_dir,
        )
    finally:
        pub.close()
    wall = time.monotonic() - t0
    print(
        f"{n} messages, {len(G.graph.get('detectors', {}))} devices, {a.duration_s:g} simulated s in {wall:.1f} s "
        f"-> {a.out_dir}/",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
