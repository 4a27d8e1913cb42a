"""Compare two runs (e.g. sensors_sim against the SUMO harness) on the same network: speeds, flows, queues.

::

    .venv/bin/python -m sensors_sim.compare --network ../shared/eval/sumo/scenario/network.json \\
        --a sumo=sumo_out/normal --b sensors_sim=out/sim \\
        --group corridor_E=A2B2,B2C2,C2D2,D2E2 --group corridor_W=E2D2,D2C2,C2B2,B2A2

Each run folder holds ``ground_truth_edges.jsonl`` and ``events.jsonl``. Segments are grouped into ``entry``
(leaving a fringe node), ``exit`` (entering one), the named ``--group`` s, and ``inner`` (the rest). Per group
and run it prints the segment-minute speed (mean and percentiles), flow, density, the congested share and
the camera queues (mean and 95th percentile of ``queue_max_veh``), and a 10-minute profile of the mean speed.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import roadnet


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue


def summarise(run_dir: Path, group_of: Mapping[str, str]) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Per-group statistics of one run, and its 10-minute mean-speed profile.

    Parameters
    ----------
    run_dir : pathlib.Path
        Folder with ``ground_truth_edges.jsonl`` and (optionally) ``events.jsonl``.
    group_of : mapping of str to str
        Segment id → group name.

    Returns
    -------
    tuple of (dict, dict)
        ``{group: {statistic: value}}`` (speeds km/h, flows veh/h, densities veh/km, queues vehicles) and
        ``{group: [mean speed per 10 minutes]}``.
    """
    speeds: dict[str, list[float]] = collections.defaultdict(list)
    flow: dict[str, list[float]] = collections.defaultdict(list)
    dens: dict[str, list[float]] = collections.defaultdict(list)
    cong: dict[str, list[bool]] = collections.defaultdict(list)
    prof: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in _lines(run_dir / "ground_truth_edges.jsonl"):
        g = group_of.get(r["segment_id"], "inner")
        if r["speed_kmh"] is not None:
            speeds[g].append(r["speed_kmh"])
            prof[g][r["ts_start"][11:15]].append(r["speed_kmh"])
        flow[g].append(r["flow_veh_h"])
        dens[g].append(r["density_veh_km"])
        cong[g].append(bool(r["congested"]))
    queues: dict[str, list[int]] = collections.defaultdict(list)
    loops: dict[str, list[tuple[int, float, float | None]]] = collections.defaultdict(list)
    cams: list[tuple[int, float, float | None]] = []
    events = run_dir / "events.jsonl"
    if events.exists():
        for e in _lines(events):
            if e.get("type") == "camera" and "queue_max_veh" in e:
                queues[group_of.get(e["segment_id"], "inner")].append(int(e["queue_max_veh"]))
                cams.append((int(e["count_total"]), float(e["occupancy"]), e["speed_kmh"]))
            elif e.get("type") == "loop" and "count" in e:
                loops[str(e["role"])].append((int(e["count"]), float(e["occupancy"]), e["speed_kmh"]))
    out: dict[str, dict[str, float]] = {}
    for g in sorted(set(speeds) | set(flow)):
        sp = np.array(speeds[g]) if speeds[g] else np.array([np.nan])
        q = np.array(queues[g]) if queues[g] else np.array([np.nan])
        out[g] = {
            "segment_minutes": float(len(flow[g])),
            "speed_mean": float(np.mean(sp)),
            "speed_p10": float(np.percentile(sp, 10)),
            "speed_p50": float(np.percentile(sp, 50)),
            "speed_p90": float(np.percentile(sp, 90)),
            "flow_mean": float(np.mean(flow[g])),
            "density_mean": float(np.mean(dens[g])),
            "congested_share": float(np.mean(cong[g])),
            "cam_queue_max_mean": float(np.mean(q)),
            "cam_queue_max_p95": float(np.percentile(q, 95)),
        }
    for name, rows in [*((f"loop:{k}", v) for k, v in sorted(loops.items())), ("camera", cams)]:
        if rows:
            spot = [float(x[2]) for x in rows if x[2] is not None]
            out[name] = {
                "readings": float(len(rows)),
                "count_mean": float(np.mean([x[0] for x in rows])),
                "occupancy_mean": float(np.mean([x[1] for x in rows])),
                "speed_mean": float(np.mean(spot)) if spot else float("nan"),
                "speed_null_share": 1.0 - len(spot) / len(rows),
            }
    profile = {g: [float(np.mean(v)) for _, v in sorted(p.items())] for g, p in prof.items()}
    return out, profile


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table (see the module docstring).

    Parameters
    ----------
    argv : list of str, optional
        Arguments.

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m sensors_sim.compare")
    ap.add_argument("--network", required=True)
    ap.add_argument("--a", required=True, help="NAME=FOLDER")
    ap.add_argument("--b", required=True, help="NAME=FOLDER")
    ap.add_argument("--group", action="append", default=[], help="NAME=seg,seg,...")
    a = ap.parse_args(argv)
    G = roadnet.load_network(a.network)
    fringe = {n for n, d in G.nodes(data=True) if d.get("fringe")}
    group_of: dict[str, str] = {}
    for u, v, sid in G.edges(keys=True):
        if u in fringe:
            group_of[sid] = "entry"
        elif v in fringe:
            group_of[sid] = "exit"
    for spec in a.group:
        name, _, segs = spec.partition("=")
        for s in segs.split(","):
            group_of[s] = name
    runs = [x.partition("=") for x in (a.a, a.b)]
    results = {name: summarise(Path(folder), group_of) for name, _, folder in runs}
    first = next(iter(results.values()))[0]
    keys = [g for g in first if not g.startswith(("loop:", "camera"))]
    for table in (keys, [g for g in first if g.startswith(("loop:", "camera"))]):
        if not table:
            continue
        cols = list(first[table[0]])
        print("\n| group | run | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for g in table:
            for name, (stats, _) in results.items():
                if g in stats:
                    print(f"| {g} | {name} | " + " | ".join(f"{stats[g][c]:.3g}" for c in cols) + " |")
    print("\nmean speed per 10 minutes (km/h):")
    for g in keys:
        for name, (_, profile) in results.items():
            print(f"  {g:12s} {name:12s} " + " ".join(f"{x:5.1f}" for x in profile.get(g, [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
