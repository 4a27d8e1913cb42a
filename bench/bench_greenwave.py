"""Timing of the emergency green wave on a 1,000-intersection grid city (target: <= 1 s per trip).

Builds ``roadnet.grid_city(40, 25)`` (1,000 signals; ``grid_city`` allows at most 26 columns), then plans
trips between random fringe nodes at random departure times with random current travel times (free flow x
U(1, 2)), and reports the wall time per plan (median, p95, max), the route length and how many signals
needed a change. Every plan is checked: each arrival window lies inside the green it was given.

Run::

    .venv/bin/python bench/bench_greenwave.py [--trips 50] [--rows 40 --cols 25] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/bench_greenwave.py`
    sys.path.insert(0, str(ROOT))

from models.greenwave import plan_green_wave  # noqa: E402
from roadnet import grid_city  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--cols", type=int, default=25)
    ap.add_argument("--trips", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    G = grid_city(a.rows, a.cols)
    build_s = time.perf_counter() - t0
    n_tls = len(G.graph["traffic_lights"])
    rng = random.Random(a.seed)
    fringe = sorted(n for n, d in G.nodes(data=True) if d["fringe"])
    times: list[float] = []
    lengths: list[int] = []
    changed: list[int] = []
    waits = 0
    for _ in range(a.trips):
        o, d = rng.sample(fringe, 2)
        tt = {
            k: attrs["free_flow_travel_time_s"] * rng.uniform(1.0, 2.0)
            for _, _, k, attrs in G.edges(keys=True, data=True)
        }
        dep = rng.uniform(0, 3600)
        t1 = time.perf_counter()
        plan = plan_green_wave(G, o, d, dep, tt)
        times.append(time.perf_counter() - t1)
        lengths.append(len(plan.actions))
        changed.append(sum(1 for x in plan.actions if x.action != "none"))
        waits += sum(1 for x in plan.actions if x.action == "wait")
        for x in plan.actions:
            if x.action != "wait":
                assert x.green_s[0] <= x.window_s[0] + 1e-9 and x.window_s[1] <= x.green_s[1] + 1e-9, x
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"grid_city({a.rows}, {a.cols}): {n_tls} signals, {G.number_of_edges()} segments (built in {build_s:.2f} s)")
    print(
        f"{a.trips} trips: plan time median {statistics.median(times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.1f} ms (target <= 1000 ms)"
    )
    print(
        f"signals per route: median {statistics.median(lengths):.0f}, max {max(lengths)}; "
        f"changed per route: median {statistics.median(changed):.0f}; unmet windows (waits): {waits}"
    )
    return 0 if times[-1] <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
