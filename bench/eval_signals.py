"""Closed-loop evaluation of the signal-timing policy on the SUMO harness, and a check on real Hangzhou counts.

Closed loop (``closed_loop.py`` of the SUMO harness, same demand and seed for every controller): the
harness's fixed plan and Webster baselines, a cycle-based **max-pressure** baseline (served by this script,
``--serve-maxpressure``) and **citybrain** (``citybrain controller --stdio``), on the normal and the incident
run. Prints a markdown table (mean travel time, waiting, time loss, total delay, teleports, arrived) and, when
matplotlib is installed, writes a bar chart of the mean travel time per controller.

Max-pressure baseline (Le et al. 2015, cycle-based): every period each signal gets greens in proportion to
its phase pressures ``Σ s (Q_upstream - Q_downstream)`` (vehicles on the link: camera queue plus what the
mid-link loops' occupancy holds upstream of the camera zone; period means), under the same
constraints as citybrain (:class:`models.signals.SignalConstraints`), split moves smoothed (half way from the
running split per period; unsmoothed proportional splits oscillate with 5-minute periods), on a fixed common
cycle (``--mp-cycle``, default 40 s, the lower bound of the harness's Webster; ``--mp-extra-cycles`` adds runs
at other cycles, e.g. citybrain's). Every signal starts aligned and keeps one cycle, so its timing stays
aligned too.

Hangzhou (``--hangzhou``, no SUMO): for each of the real intersections in
``../shared/data/hangzhou/intersections_1x1_cityflow/*/`` the hour's turning counts (from ``flow.json``
routes) are the demand; the site's template plan (``signal_plan_template.txt``: the CityFlow phase shown each
second) and the citybrain plan (the subset of the CityFlow phases that serves every movement with the lowest
delay, Webster greens under the same constraints) are scored with the same HCM model
(:func:`models.signals.interval_delay`).

Environment: ``SUMO_PY`` (default python3), ``SUMO_OUT`` (default ./sumo_out, made
absolute), ``SUMO_HARNESS`` (the harness folder, default ../shared/eval/sumo). Runs go one at a time.

Run::

    .venv/bin/python bench/eval_signals.py                      # all controllers, normal + incidents
    .venv/bin/python bench/eval_signals.py --mp-extra-cycles 23  # + max-pressure on citybrain's cycle
    .venv/bin/python bench/eval_signals.py --controllers citybrain --runs normal
    .venv/bin/python bench/eval_signals.py --hangzhou
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/eval_signals.py`
    sys.path.insert(0, str(ROOT))

from models.signals import (  # noqa: E402
    DemandEstimator,
    IntersectionModel,
    LaneModel,
    SignalClock,
    SignalConstraints,
    SignalNetwork,
    check_greens,
    interval_delay,
    max_pressure_greens,
    webster_plan,
)

SHARED = Path(os.environ.get("SUMO_HARNESS", str(ROOT.parent / "shared" / "eval" / "sumo")))
HANGZHOU = ROOT.parent / "shared" / "data" / "hangzhou" / "intersections_1x1_cityflow"
SUMO_PY = Path(os.environ.get("SUMO_PY", "python3"))
SUMO_OUT = Path(os.environ.get("SUMO_OUT", str(ROOT / "sumo_out"))).resolve()
VENV_PY = ROOT / ".venv" / "bin" / "python"
CITYBRAIN = ROOT / ".venv" / "bin" / "citybrain"
VEHICLE_LENGTH_M = 5.5  # mean vehicle length of an urban mix (as models.congestion), m
METRICS = [
    ("mean_travel_time_s", "mean travel time s"),
    ("mean_waiting_time_s", "mean waiting s"),
    ("mean_time_loss_s", "mean time loss s"),
    ("total_delay_veh_h", "total delay veh·h"),
    ("teleports", "teleports"),
    ("arrived", "arrived"),
    ("arrived_by_3600s", "arrived by 3600 s"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Max-pressure baseline (served over the harness protocol)
# ---------------------------------------------------------------------------------------------------------


def serve_maxpressure(
    network: Path, cycle_s: float, inp: IO[str], out: IO[str], smoothing: float = 0.5, floor_frac: float = 0.1
) -> None:
    """Answer the closed-loop protocol with cycle-based max-pressure plans (see the module docstring)."""
    from roadnet import load_trafficnet

    cons = SignalConstraints()
    net = SignalNetwork.from_graph(load_trafficnet(network), cons)
    est = DemandEstimator(net)
    clocks = {t: SignalClock.for_intersection(ix) for t, ix in net.intersections.items()}
    for line in inp:
        if not line.strip():
            continue
        msg = orjson.loads(line)
        if msg.get("type") != "plan_request":
            est.update(msg)
            continue
        t_s = float(msg["t_s"])
        snap = est.snapshot(t_s)
        # vehicles on each link: the camera queue plus, upstream of the camera zone, what the mid-link loops'
        # occupancy holds (a camera alone saturates at its zone and hides spill-back)
        link_q = dict(snap.queue_veh)
        for seg, occ in snap.occupancy.items():
            sm = net.segments[seg]
            zone = net.cameras.get(seg, {}).get("zone_m", 0.0)
            link_q[seg] = link_q.get(seg, 0.0) + occ * max(sm.length_m - zone, 0.0) * sm.lanes / VEHICLE_LENGTH_M
        plan: dict[str, Any] = {}
        for tid, ix in net.intersections.items():
            clk = clocks[tid]
            clk.advance(t_s)
            prev = [clk.durations_s[p] for p in ix.green_positions]
            lane_q: dict[str, float] = {}
            for seg, lanes in ix.approaches.items():
                shares = [snap.lane_demand_veh_h.get(ln, 0.0) for ln in lanes]
                tot = sum(shares)
                for ln, sh in zip(lanes, shares, strict=True):
                    frac = sh / tot if tot > 0 else 1.0 / len(lanes)
                    lane_q[ln] = link_q.get(seg, 0.0) * frac
            greens, _ = max_pressure_greens(
                ix, lane_q, link_q, net.segment_lanes, cycle_s, cons, prev, smoothing, floor_frac
            )
            plan[tid] = {"green_s": greens}
            clk.send(t_s, ix.durations(greens))
        out.write(orjson.dumps(plan).decode() + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------------------
# Closed-loop runs
# ---------------------------------------------------------------------------------------------------------


def controller_specs(network: Path, mp_cycles_s: Sequence[float], mp_smoothing: float = 0.5) -> dict[str, list[str]]:
    """Harness arguments per controller name (absolute paths, so the harness may run from its folder).

    The max-pressure baseline appears once per cycle: ``maxpressure`` for the first, ``maxpressure_<C>s``
    for the others (e.g. citybrain's common cycle, to separate the split policy from the cycle choice).
    """
    me = Path(__file__).resolve()
    specs = {"fixed": ["--controller", "fixed"], "webster": ["--controller", "webster"]}
    for i, c in enumerate(mp_cycles_s):
        mp = f"{VENV_PY} {me} --serve-maxpressure --network {network} --mp-cycle {c:g} --mp-smoothing {mp_smoothing:g}"
        specs["maxpressure" if i == 0 else f"maxpressure_{c:g}s"] = ["--cmd", mp]
    specs["citybrain"] = ["--cmd", f"{CITYBRAIN} controller --stdio --network {network}"]
    return specs


def run_closed_loop(name: str, args: Sequence[str], incidents: bool, tag: str) -> dict[str, Any]:
    """One harness run (one at a time: the machine is shared); returns its result.json record."""
    cmd = [str(SUMO_PY), str(SHARED / "closed_loop.py"), *args, "--name", f"{tag}{name}"]
    if incidents:
        cmd.append("--incidents")
    env = dict(os.environ, SUMO_OUT=str(SUMO_OUT))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=SHARED, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: harness failed ({r.returncode}):\n{r.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    res["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    res["command"] = " ".join(shlex.quote(c) for c in cmd)
    return res


def markdown_table(rows: Mapping[str, Mapping[str, Any]], baseline: str = "fixed") -> str:
    """Markdown table of the closed-loop metrics, with the travel-time change against ``baseline``."""
    head = ["controller", *[label for _, label in METRICS], f"Δ travel time vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows.get(baseline, {}).get("mean_travel_time_s")
    for name, r in rows.items():
        cells = [name] + [str(r.get(k, "")) for k, _ in METRICS]
        tt = r.get("mean_travel_time_s")
        cells.append(f"{(tt - base) / base * 100:+.1f} %" if base and tt is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_travel_times(results: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> bool:
    """Bar chart of mean travel time per controller and run; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = list(results)
    names = list(dict.fromkeys(n for r in results.values() for n in r))
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, run in enumerate(runs):
        xs = [i + k * width for i in range(len(names))]
        ys = [results[run].get(n, {}).get("mean_travel_time_s", 0.0) for n in names]
        bars = ax.bar(xs, ys, width=width, label=run)
        for b, y in zip(bars, ys, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, y + 2, f"{y:.0f}", ha="center", fontsize=8)
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("mean travel time (s)")
    ax.set_title("SUMO closed loop: mean travel time by controller")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------------------
# Hangzhou (CityFlow 1x1) comparison
# ---------------------------------------------------------------------------------------------------------


def _cityflow_intersection(roadnet: Mapping[str, Any]) -> Mapping[str, Any]:
    real = [i for i in roadnet["intersections"] if not i.get("virtual")]
    if len(real) != 1:
        raise ValueError(f"expected one signalised intersection, found {len(real)}")
    return real[0]


def hangzhou_model(
    roadnet: Mapping[str, Any], flows: Iterable[Mapping[str, Any]]
) -> tuple[IntersectionModel, dict[str, float], list[int], int]:
    """One CityFlow 1x1 site as a signal model: one lane group per road link (movement).

    Returns
    -------
    ix : IntersectionModel
        Lanes = movements (``<startRoad>-><endRoad>``); phases = the CityFlow light phases.
    movement_q : dict[str, float]
        Vehicles per hour per movement (routes over the hour).
    green_phase_ids : list[int]
        CityFlow light-phase index of each green phase (the all-red phase excluded).
    intergreen_s : int
        Duration of the all-red phase between greens, s.
    """
    inter = _cityflow_intersection(roadnet)
    links = inter["roadLinks"]
    phases = inter["trafficLight"]["lightphases"]
    phase_links = [list(p["availableRoadLinks"]) for p in phases]
    red = [i for i, p in enumerate(phase_links) if not p]
    intergreen = int(phases[red[0]]["time"]) if red else 0
    counts: Counter[str] = Counter()
    t_min, t_max = math.inf, -math.inf
    for v in flows:
        route = v["route"]
        start, end = float(v.get("startTime", 0)), float(v.get("endTime", v.get("startTime", 0)))
        step = float(v.get("interval") or 1.0)
        n_veh = 1 + max(0, int((end - start) // step)) if end > start else 1
        if len(route) >= 2:
            counts[f"{route[0]}->{route[1]}"] += n_veh
        t_min, t_max = min(t_min, start), max(t_max, end)
    # the files hold one hour of departures; a longer span is scaled to an hourly rate
    hours = max((t_max - t_min) / 3600.0, 1.0) if math.isfinite(t_min) else 1.0
    lanes: list[LaneModel] = []
    q: dict[str, float] = {}
    green_phases = [i for i, p in enumerate(phase_links) if p]
    for li, rl in enumerate(links):
        mid = f"{rl['startRoad']}->{rl['endRoad']}"
        n_lanes = len({ll["startLaneIndex"] for ll in rl.get("laneLinks", [])}) or 1
        serving = tuple(k for k, p in enumerate(green_phases) if li in phase_links[p])
        if not serving:
            continue
        lanes.append(LaneModel(mid, rl["startRoad"], serving, 1800.0 * n_lanes, (rl["endRoad"],), (rl["type"][:1],)))
        q[mid] = counts.get(mid, 0) / hours
    phase_durations = [float(phases[p]["time"]) for p in green_phases]
    ix = IntersectionModel(
        tls_id=inter["id"],
        node=inter["id"],
        phase_durations_s=[x for p in phase_durations for x in (p, float(intergreen))],
        green_positions=[2 * k for k in range(len(green_phases))],
        intergreen_s=[float(intergreen)] * len(green_phases),
        lanes=lanes,
        approaches={},
        ped_min_s=[0.0] * len(green_phases),
    )
    return ix, q, green_phases, intergreen


def template_intervals(template: Sequence[int]) -> tuple[int, dict[int, list[tuple[int, int]]]]:
    """Intervals per CityFlow phase id of a per-second template (one period of the repeating pattern).

    Returns
    -------
    cycle_s : int
        Length of the repeating pattern, s.
    intervals : dict[int, list[tuple[int, int]]]
        CityFlow light-phase index -> ``[(start, end), ...]`` s within the period.
    """
    seq = list(template)
    cycle = len(seq)
    for c in range(1, len(seq) + 1):
        if all(seq[i] == seq[i % c] for i in range(len(seq))):
            cycle = c
            break
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    i = 0
    while i < cycle:
        p = seq[i]
        j = i
        while j < cycle and seq[j] == p:
            j += 1
        out[p].append((i, j))
        i = j
    return cycle, dict(out)


def hangzhou_site(folder: Path, constraints: SignalConstraints) -> dict[str, Any]:
    """Template plan against the citybrain plan for one CityFlow site (HCM / deterministic-queue delay)."""
    roadnet = json.loads((folder / "roadnet.json").read_text())
    flows = json.loads((folder / "flow.json").read_text())
    lines = (folder / "signal_plan_template.txt").read_text().split()
    template = [int(x) for x in lines[1:]]
    ix, q, green_phase_ids, intergreen = hangzhou_model(roadnet, flows)
    n = ix.n_green
    cyc_t, ivals = template_intervals(template)
    lane_index = {ln.lane_id: ln for ln in ix.lanes}

    def served_intervals(k_set: Sequence[int], greens: Sequence[float]) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        t = 0.0
        for k, g in zip(k_set, greens, strict=True):
            for ln in ix.lanes:
                if k in ln.serving:
                    out[ln.lane_id].append((t, t + g))
            t += g + intergreen
        return out

    def score(ivs: Mapping[str, list[tuple[float, float]]], cycle: float) -> dict[str, Any]:
        tot_q = tot_d = 0.0
        per: dict[str, dict[str, float]] = {}
        for mid, ln in lane_index.items():
            qq = q.get(mid, 0.0)
            d, x = interval_delay(qq, ln.sat_flow_veh_h, ivs.get(mid, []), cycle)
            per[mid] = {"q_veh_h": round(qq), "delay_s": round(d, 1), "vc": round(x, 2)}
            tot_q += qq
            tot_d += qq * d
        return {"mean_delay_s": round(tot_d / tot_q, 1) if tot_q else 0.0, "per_movement": per}

    # template: intervals straight from the per-second pattern
    tmpl_ivs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for k in range(n):
        for ln in ix.lanes:
            if k in ln.serving:
                tmpl_ivs[ln.lane_id].extend((float(a), float(b)) for a, b in ivals.get(green_phase_ids[k], []))
    template_score = score(tmpl_ivs, float(cyc_t))
    # citybrain: the phase subset covering every movement with traffic, Webster greens, constrained
    best: dict[str, Any] | None = None
    for mask in range(1, 1 << n):
        ks = [k for k in range(n) if mask >> k & 1]
        if len(ks) < 2:
            continue
        covered = {ln.lane_id for ln in ix.lanes if any(k in ln.serving for k in ks)}
        if any(q.get(m, 0.0) > 0 and m not in covered for m in lane_index):
            continue
        sub = _sub_intersection(ix, ks, intergreen)
        greens, info = webster_plan(sub, q, constraints)
        assert not check_greens(sub, greens, constraints)
        ivs = served_intervals(ks, greens)
        cycle = sum(greens) + intergreen * len(ks)
        sc = score(ivs, cycle)
        if best is None or sc["mean_delay_s"] < best["score"]["mean_delay_s"]:
            best = {
                "phases": [green_phase_ids[k] for k in ks],
                "greens": greens,
                "cycle_s": cycle,
                "info": info,
                "score": sc,
            }
    assert best is not None
    return {
        "site": folder.name,
        "vehicles_per_h": round(sum(q.values())),
        "template_cycle_s": cyc_t,
        "template_mean_delay_s": template_score["mean_delay_s"],
        "citybrain_phases": best["phases"],
        "citybrain_greens_s": best["greens"],
        "citybrain_cycle_s": best["cycle_s"],
        "citybrain_mean_delay_s": best["score"]["mean_delay_s"],
        "Y": round(best["info"]["Y"], 3),
        "per_movement_template": template_score["per_movement"],
        "per_movement_citybrain": best["score"]["per_movement"],
    }


def _sub_intersection(ix: IntersectionModel, ks: Sequence[int], intergreen: int) -> IntersectionModel:
    """The intersection restricted to green phases ``ks`` (each followed by the all-red)."""
    remap = {k: i for i, k in enumerate(ks)}
    lanes = []
    for ln in ix.lanes:
        serving = tuple(remap[k] for k in ln.serving if k in remap)
        if serving:
            lanes.append(LaneModel(ln.lane_id, ln.segment_id, serving, ln.sat_flow_veh_h, ln.to_segments, ln.to_dirs))
    m = len(ks)
    return IntersectionModel(
        tls_id=ix.tls_id,
        node=ix.node,
        phase_durations_s=[x for _ in range(m) for x in (30.0, float(intergreen))],
        green_positions=[2 * i for i in range(m)],
        intergreen_s=[float(intergreen)] * m,
        lanes=lanes,
        approaches={},
        ped_min_s=[0.0] * m,
    )


def hangzhou_report(root: Path, constraints: SignalConstraints) -> str:
    """Markdown table: template plan against citybrain, per site-hour."""
    rows = []
    for folder in sorted(p for p in root.iterdir() if (p / "flow.json").exists()):
        rows.append(hangzhou_site(folder, constraints))
    head = (
        "| site-hour | veh/h | template cycle s | template delay s/veh | citybrain phases | greens s | cycle s "
        "| citybrain delay s/veh | change |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ch = (r["citybrain_mean_delay_s"] - r["template_mean_delay_s"]) / r["template_mean_delay_s"] * 100
        lines.append(
            f"| {r['site']} | {r['vehicles_per_h']} | {r['template_cycle_s']} | {r['template_mean_delay_s']} | "
            f"{r['citybrain_phases']} | {r['citybrain_greens_s']} | {r['citybrain_cycle_s']:g} | "
            f"{r['citybrain_mean_delay_s']} | {ch:+.0f} % |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controllers", default="all", help="comma-separated names, or all")
    ap.add_argument("--runs", default="normal,incidents")
    ap.add_argument("--network", type=Path, default=SHARED / "scenario" / "network.json")
    ap.add_argument("--mp-cycle", type=float, default=40.0, help="max-pressure baseline cycle, s")
    ap.add_argument("--mp-extra-cycles", default="", help="more max-pressure runs at these cycles (s), comma-separated")
    ap.add_argument("--mp-smoothing", type=float, default=0.5, help="max-pressure split smoothing (1 = none)")
    ap.add_argument("--tag", default="bench_", help="prefix of the harness run names")
    ap.add_argument("--plot", type=Path, default=SUMO_OUT / "signals_travel_time.png")
    ap.add_argument("--json", type=Path, default=SUMO_OUT / "signals_results.json")
    ap.add_argument("--hangzhou", action="store_true", help="only the Hangzhou comparison (no SUMO)")
    ap.add_argument("--hangzhou-root", type=Path, default=HANGZHOU)
    ap.add_argument("--serve-maxpressure", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve_maxpressure:
        serve_maxpressure(a.network, a.mp_cycle, sys.stdin, sys.stdout, a.mp_smoothing)
        return 0
    if a.hangzhou:
        print(hangzhou_report(a.hangzhou_root, SignalConstraints()))
        return 0
    cycles = [a.mp_cycle] + [float(x) for x in a.mp_extra_cycles.split(",") if x]
    specs = controller_specs(a.network.resolve(), cycles, a.mp_smoothing)
    names = list(specs) if a.controllers == "all" else [c for c in a.controllers.split(",") if c]
    unknown = [c for c in names if c not in specs]
    if unknown:
        ap.error(f"unknown controllers {unknown}; choose from {sorted(specs)}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for run in [r for r in a.runs.split(",") if r]:
        incidents = run == "incidents"
        results[run] = {}
        for name in names:
            log(f"{run}: {name} ...")
            results[run][name] = run_closed_loop(name, specs[name], incidents, a.tag)
            r = results[run][name]
            log(f"  {r['mean_travel_time_s']} s, {r['total_delay_veh_h']} veh·h, {r['teleports']} teleports")
    for run, rows in results.items():
        print(f"\n### {run}\n")
        print(markdown_table(rows))
        print()
        for name, r in rows.items():
            print(f"- {name}: `{r['command']}`")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=1))
    if plot_travel_times(results, a.plot):
        log(f"chart: {a.plot}")
    else:
        log("matplotlib not installed: no chart (.venv/bin/pip install matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
