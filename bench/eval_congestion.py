"""Offline evaluation of the congestion estimator against SUMO ground truth, without brokers.

For each run (``normal``, ``incident``) it reads ``events.jsonl``, validates every event as the pipeline does
(``streams.records.validate_event``), groups readings into per-segment event-time windows exactly like
``streams.windowing`` (window end ``ceil(ts / 60) · 60``), and walks the windows in stream order: per segment,
``models.detector_health.assess_window`` then ``models.congestion.estimate_window`` with the segment's
carried filter state. It writes the estimates in ``score_states.py`` format, runs the harness scorer and
prints a table.

``--faults F --seed N`` makes a random share ``F`` of the loops faulty before windowing: each one is either
silent (its events dropped) or stuck (every reading repeats its first reading's values), half and half.
``--no-cameras`` drops every camera event (exercises the signal-delay fallback). ``--plot PATH`` writes a
scatter of estimated against true speed (needs matplotlib).

Run::

    .venv/bin/python -m bench.eval_congestion                 # both runs, clean detectors
    .venv/bin/python -m bench.eval_congestion --faults 0.1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from sensors_sim.faults import apply_faults, choose_faults

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/eval_congestion.py`
    sys.path.insert(0, str(ROOT))

from models.congestion import SegmentModel, estimate_window, segment_models_from_graph  # noqa: E402
from models.detector_health import assess_window, new_health_state  # noqa: E402
from roadnet import load_trafficnet  # noqa: E402
from streams.records import format_ts, validate_event  # noqa: E402
from streams.windowing import window_end  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval" / "sumo"
DEFAULT_NETWORK = SHARED / "scenario" / "network.json"
DEFAULT_SCORER = SHARED / "score_states.py"
DEFAULT_SUMO_PY = Path(os.environ.get("SUMO_PY", "python3"))
WINDOW_S = 60


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_events(path: Path) -> list[dict[str, Any]]:
    """Validated events of one run, in file (time) order."""
    out = []
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                out.append(validate_event(orjson.loads(line)))
    return out


def inject_faults(
    events: list[dict[str, Any]], loop_ids: list[str], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Make ``fraction`` of ``loop_ids`` silent or stuck, half and half (``sensors_sim.faults``)."""
    faults = choose_faults(loop_ids, fraction, seed, kinds=("silent", "stuck"))
    return list(apply_faults(events, faults)), faults


def run_estimator(
    events: list[dict[str, Any]], models: dict[str, SegmentModel], *, use_health: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Window the events per segment and estimate every window in stream order.

    Returns
    -------
    estimates : list of dict
        ``{"segment_id", "ts", "speed_kmh", "congested"}`` per segment window, plus ``density_veh_km``.
    stats : dict
        Calls, estimator seconds, health statuses seen (detector-windows per status).
    """
    windows: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for ev in events:
        windows[window_end(ev["ts_s"], WINDOW_S)][ev["segment_id"]].append(ev)
    priors: dict[str, dict[str, Any] | None] = {}
    health: dict[str, dict[str, Any]] = {}
    status_count: dict[str, int] = defaultdict(int)
    excluded_by_det: dict[str, set[str]] = defaultdict(set)
    out: list[dict[str, Any]] = []
    t_est = t_health = 0.0
    calls = 0
    ends = sorted(windows)
    for i, end in enumerate(ends):
        segs = windows[end]
        for sid in sorted(models):
            model = models[sid]
            readings = segs.get(sid, [])
            excluded: frozenset[str] = frozenset()
            if use_health:
                t0 = time.perf_counter()
                hs = health.setdefault(sid, new_health_state())
                status, excluded = assess_window(readings, model, hs, float(end))
                t_health += time.perf_counter() - t0
                for did, st in status.items():
                    status_count[st] += 1
                    if st != "ok":
                        excluded_by_det[did].add(st)
            t0 = time.perf_counter()
            state, priors[sid] = estimate_window(
                readings, model, priors.get(sid), excluded=excluded, end_s=float(end), window_s=WINDOW_S
            )
            t_est += time.perf_counter() - t0
            calls += 1
            out.append(
                {
                    "segment_id": sid,
                    "ts": format_ts(end),
                    "speed_kmh": state.speed_kmh,
                    "congested": state.congested,
                    "density_veh_km": state.density_veh_km,
                }
            )
        if (i + 1) % 10 == 0 or i + 1 == len(ends):
            log(f"  window {i + 1}/{len(ends)}")
    stats = {
        "calls": calls,
        "estimate_us_per_call": 1e6 * t_est / max(calls, 1),
        "health_us_per_call": 1e6 * t_health / max(calls, 1),
        "status_detector_windows": dict(status_count),
        "excluded_detectors": {d: sorted(s) for d, s in excluded_by_det.items()},
    }
    return out, stats


def score(estimates_path: Path, truth_path: Path, sumo_py: Path, scorer: Path) -> dict[str, Any]:
    """Run the harness scorer and return its report."""
    res = subprocess.run(
        [str(sumo_py), str(scorer), "--estimates", str(estimates_path), "--truth", str(truth_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    rep: dict[str, Any] = json.loads(res.stdout)
    return rep


def fmt(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}"


def write_plot(path: Path, pairs: dict[str, tuple[list[float], list[float]]]) -> None:
    """Scatter of estimated vs true speed per run (km/h)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 5.5), squeeze=False)
    for ax, (name, (truth, est)) in zip(axes[0], pairs.items(), strict=True):
        ax.scatter(truth, est, s=3, alpha=0.3)
        ax.plot([0, 60], [0, 60], "k--", lw=1)
        ax.set_xlabel("true space-mean speed, km/h")
        ax.set_ylabel("estimated speed, km/h")
        ax.set_title(name)
        ax.set_xlim(0, 60)
        ax.set_ylim(0, 60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot: {path}")


def speed_pairs(estimates: list[dict[str, Any]], truth_path: Path) -> tuple[list[float], list[float]]:
    truth = {}
    with truth_path.open("rb") as f:
        for line in f:
            r = orjson.loads(line)
            truth[(r["segment_id"], r["ts_end"])] = r["speed_kmh"]
    xs, ys = [], []
    for e in estimates:
        t = truth.get((e["segment_id"], e["ts"]))
        if t is not None and e["speed_kmh"] is not None:
            xs.append(t)
            ys.append(e["speed_kmh"])
    return xs, ys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sumo-out", type=Path, default=ROOT / "sumo_out", help="folder with normal/ and incident/")
    ap.add_argument("--runs", nargs="+", default=["normal", "incident"])
    ap.add_argument("--network", type=Path, default=DEFAULT_NETWORK)
    ap.add_argument("--out-dir", type=Path, default=None, help="estimates and reports (default SUMO_OUT/bench)")
    ap.add_argument("--faults", type=float, default=0.0, help="share of loops made silent or stuck")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-health", action="store_true", help="do not exclude unhealthy detectors")
    ap.add_argument("--no-cameras", action="store_true", help="drop all camera events")
    ap.add_argument("--sumo-python", type=Path, default=DEFAULT_SUMO_PY)
    ap.add_argument("--scorer", type=Path, default=DEFAULT_SCORER)
    ap.add_argument("--plot", type=Path, default=None, help="write an estimated-vs-true speed scatter (PNG)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    a = ap.parse_args(argv)

    graph = load_trafficnet(a.network)
    models = segment_models_from_graph(graph)
    loop_ids = [d for d, rec in graph.graph["detectors"].items() if rec["kind"] == "loop"]
    out_dir = a.out_dir or a.sumo_out / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"faults{a.faults:g}_seed{a.seed}" if a.faults > 0 else "clean"
    if a.no_cameras:
        tag += "_nocam"
    rows: list[dict[str, Any]] = []
    pairs: dict[str, tuple[list[float], list[float]]] = {}
    for run in a.runs:
        run_dir = a.sumo_out / run
        log(f"{run}: reading {run_dir / 'events.jsonl'}")
        events = load_events(run_dir / "events.jsonl")
        if a.no_cameras:
            events = [e for e in events if e["type"] != "camera"]
        faults: dict[str, str] = {}
        if a.faults > 0:
            events, faults = inject_faults(events, loop_ids, a.faults, a.seed)
            n_silent = sum(1 for v in faults.values() if v == "silent")
            log(f"{run}: faults on {len(faults)} loops ({n_silent} silent, {len(faults) - n_silent} stuck)")
        log(f"{run}: estimating {len(events)} events")
        estimates, stats = run_estimator(events, models, use_health=not a.no_health)
        est_path = out_dir / f"estimates_{run}_{tag}.jsonl"
        with est_path.open("wb") as f:
            for e in estimates:
                f.write(orjson.dumps({k: e[k] for k in ("segment_id", "ts", "speed_kmh", "congested")}) + b"\n")
        rep = score(est_path, run_dir / "ground_truth_edges.jsonl", a.sumo_python, a.scorer)
        if faults:
            flagged = {d: s for d, s in stats["excluded_detectors"].items() if d in faults}
            rep["faults_flagged"] = f"{len(flagged)}/{len(faults)}"
            rep["false_flags"] = sorted(d for d in stats["excluded_detectors"] if d not in faults)
        else:
            rep["false_flags"] = sorted(stats["excluded_detectors"])
        rep.update(run=run, tag=tag, **{k: v for k, v in stats.items() if k != "excluded_detectors"})
        rows.append(rep)
        if a.plot:
            pairs[run] = speed_pairs(estimates, run_dir / "ground_truth_edges.jsonl")
        us_est, us_health = stats["estimate_us_per_call"], stats["health_us_per_call"]
        log(f"{run}: done ({us_est:.0f} µs/estimate, {us_health:.0f} µs/health)")

    print(f"\nestimator: models/congestion.py   detectors: {tag}   health: {'off' if a.no_health else 'on'}")
    hdr = "| run | MAE km/h | RMSE | bias | P | R | F1 | coverage | speed pairs | flagged faults | false flags |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        print(
            f"| {r['run']} | {fmt(r['speed_mae_kmh'])} | {fmt(r['speed_rmse_kmh'])} | {fmt(r['speed_bias_kmh'])} "
            f"| {fmt(r['congested_precision'], 3)} | {fmt(r['congested_recall'], 3)} | {fmt(r['congested_f1'], 3)} "
            f"| {fmt(r['coverage'], 3)} | {r['counts']['speed_pairs']} | {r.get('faults_flagged', '-')} "
            f"| {len(r['false_flags'])} |"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    if a.plot and pairs:
        write_plot(a.plot, pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
