"""Offline evaluation of ``models.incidents`` on the SUMO harness runs and on the MnDOT series.

For each run (``incident``, ``normal``) it feeds ``events.jsonl`` in stream order through
:class:`models.incidents.IncidentDetector`, writes the incident alarms as JSONL ``{"ts", "segment_id",
"lane"}`` and runs the harness scorer (``score_incidents.py``), then prints a table.

``--faults F --seed N`` makes a random share ``F`` of the loops of the normal run faulty from a random onset
(``--onset random``; ``start`` for the whole run): a third each ``silent`` (events dropped), ``stuck`` (the
first non-zero reading from the onset repeated) and ``zero`` (count 0, occupancy 0, no speed). It reports the
incidents raised on segments with a faulty loop after its onset (must be 0), the device faults reported per
injected kind, and the false-alarm rate of the faulty run. ``--seeds 1-20`` (or ``1,2,3``) repeats the faulty
run for several seeds and adds a one-line summary (the fault guarantee is a tail property: one seed says
little). ``--set NAME=VALUE`` overrides a parameter of ``models.incidents`` (trade-off sweeps).
``--mndot`` runs the univariate time-of-day baseline on the MnDOT series and reports, per labelled anomaly
window, whether it was flagged and how many flags fall outside the windows. ``--plot PATH`` writes an incident
timeline (needs matplotlib).

Run::

    .venv/bin/python -m bench.eval_incidents                        # both runs, scored
    .venv/bin/python -m bench.eval_incidents --faults 0.1 --seed 1  # plus a faulty normal run
    .venv/bin/python -m bench.eval_incidents --faults 0.1 --seeds 1-20 --set F_CORROBORATE=3.0   # sweep
    .venv/bin/python -m bench.eval_incidents --mndot                # plus the MnDOT series
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/eval_incidents.py`
    sys.path.insert(0, str(ROOT))

import models.incidents as incidents_model  # noqa: E402
from models.incidents import (  # noqa: E402
    CLEARED,
    FAULT,
    INCIDENT,
    IncidentDetector,
    new_baseline_state,
    parse_ts,
    segment_configs_from_graph,
    update_baseline,
)
from roadnet import load_trafficnet  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval" / "sumo"
DEFAULT_NETWORK = SHARED / "scenario" / "network.json"
DEFAULT_SUMO_PY = Path(os.environ.get("SUMO_PY", "python3"))
DEFAULT_RUNS = ROOT / "sumo_out"
DEFAULT_OUT = ROOT / "sumo_out" / "bench_incidents"
MNDOT = ROOT.parent / "shared" / "data" / "loops" / "mndot_nab_realtraffic"
FAULT_KINDS = ("silent", "stuck", "zero")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_events(path: Path) -> list[dict[str, Any]]:
    """Events of one run in file (time) order, with ``ts_s`` (Unix s) added."""
    out = []
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                ev = orjson.loads(line)
                ev["ts_s"] = parse_ts(ev["ts"])
                out.append(ev)
    return out


def inject_faults(
    events: list[dict[str, Any]], loop_ids: list[str], fraction: float, seed: int, onset: str
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, int]]]:
    """Make ``fraction`` of ``loop_ids`` faulty: silent / stuck / zero in turn, from an onset time.

    Returns
    -------
    events : list of dict
        The faulty stream.
    faults : dict of str to (str, int)
        Loop id → (kind, onset Unix s).
    """
    rng = random.Random(seed)
    chosen = rng.sample(sorted(loop_ids), round(fraction * len(loop_ids)))
    t0 = min(ev["ts_s"] for ev in events)
    t1 = max(ev["ts_s"] for ev in events)
    faults: dict[str, tuple[str, int]] = {}
    for i, d in enumerate(chosen):
        at = t0 if onset == "start" else t0 + 30 * rng.randrange(0, max(1, int((t1 - t0 - 600) / 30)))
        faults[d] = (FAULT_KINDS[i % 3], at)
    frozen: dict[str, dict[str, Any]] = {}
    out = []
    for ev in events:
        did = ev.get("detector_id")
        f = faults.get(did) if did is not None else None
        if f is None or ev["ts_s"] < f[1]:
            out.append(ev)
            continue
        kind = f[0]
        if kind == "silent":
            continue
        if kind == "zero":
            ev = {**ev, "count": 0, "occupancy": 0.0, "speed_kmh": None}
        else:
            if str(did) not in frozen and (ev["count"] > 0 or ev["occupancy"] > 0):
                frozen[str(did)] = ev
            fr = frozen.get(str(did))
            if fr is not None:
                ev = {**ev, "count": fr["count"], "occupancy": fr["occupancy"], "speed_kmh": fr["speed_kmh"]}
        out.append(ev)
    return out, faults


def run_detector(events: list[dict[str, Any]], det: IncidentDetector) -> tuple[list[dict[str, Any]], float]:
    """All decisions for a stream, and the mean processing time per event (µs)."""
    t = time.perf_counter()
    out = det.process_all(events)
    dt = time.perf_counter() - t
    return out, 1e6 * dt / max(len(events), 1)


def write_alarms(decisions: list[dict[str, Any]], path: Path) -> int:
    """Incident decisions as scorer alarms ``{"ts", "segment_id", "lane"}``; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for d in decisions:
            if d["type"] == INCIDENT:
                f.write(json.dumps({"ts": d["ts"], "segment_id": d["segment_id"], "lane": d["lane"]}) + "\n")
                n += 1
    return n


def score(alarms: Path, normal_alarms: Path, truth: Path, sumo_py: Path) -> dict[str, Any]:
    """Run the harness scorer (from its folder) and return its report."""
    res = subprocess.run(
        [
            str(sumo_py),
            "score_incidents.py",
            "--alarms",
            str(alarms),
            "--normal-alarms",
            str(normal_alarms),
            "--truth",
            str(truth),
        ],
        cwd=SHARED,
        check=True,
        capture_output=True,
        text=True,
    )
    rep: dict[str, Any] = json.loads(res.stdout)
    return rep


def print_table(rep: dict[str, Any], us: dict[str, float]) -> None:
    inc, nor = rep["incident_run"], rep["normal_run"]
    print(f"{'run':10s} {'detected':>9s} {'mean TTD s':>11s} {'alarms':>7s} {'false eps':>10s} {'FA/det-h':>9s}")
    print(
        f"{'incident':10s} {inc['detected']:>4d}/{inc['incidents']:<4d} {inc['mean_time_to_detect_s'] or '-':>11} "
        f"{inc['alarms']:>7d} {inc['false_alarm_episodes']:>10d} {inc['false_alarms_per_detector_hour']:>9.4f}"
    )
    print(
        f"{'normal':10s} {'':>9s} {'':>11s} {nor['alarms']:>7d} {nor['false_alarm_episodes']:>10d} "
        f"{nor['false_alarms_per_detector_hour']:>9.4f}"
    )
    print("per incident: " + ", ".join(f"{p['incident_id']} {p['time_to_detect_s']}" for p in inc["per_incident"]))
    print("cost: " + ", ".join(f"{k} {v:.1f} µs/event" for k, v in us.items()))


def clearing_report(
    decisions: list[dict[str, Any]], truth: list[dict[str, Any]], configs: dict[str, dict[str, Any]], t0: int
) -> list[str]:
    """Per true incident: first matching alarm (scorer's rule), its estimated start and when it cleared."""
    cleared = {d["incident_id"]: parse_ts(d["ts"]) - t0 for d in decisions if d["type"] == CLEARED}
    end_of_run = max((parse_ts(d["ts"]) - t0 for d in decisions), default=0)
    lines = []
    shares = []
    for inc in truth:
        segs = {inc["segment_id"], *configs[inc["segment_id"]]["upstream"]}
        hit = next(
            (
                d
                for d in decisions
                if d["type"] == INCIDENT
                and d["segment_id"] in segs
                and inc["start_s"] <= parse_ts(d["ts"]) - t0 <= inc["end_s"] + 300
            ),
            None,
        )
        if hit is None:
            lines.append(f"{inc['incident_id']}: missed")
            continue
        c = cleared.get(hit["incident_id"])
        # share of the true incident time with an alarm open on its segment (or a feeder): what an operator sees
        spans = [
            (float(parse_ts(d["ts"]) - t0), float(cleared.get(d["incident_id"], max(end_of_run, inc["end_s"]))))
            for d in decisions
            if d["type"] == INCIDENT and d["segment_id"] in segs
        ]
        shares.append(open_share(spans, float(inc["start_s"]), float(inc["end_s"])))
        lines.append(
            f"{inc['incident_id']} {hit['segment_id']}/{hit['lane']}: true {inc['start_s']:.0f}-{inc['end_s']:.0f} s, "
            f"alarm {parse_ts(hit['ts']) - t0} s (est. start {parse_ts(hit['start_ts']) - t0} s, "
            f"{hit['evidence']['hypothesis']}, {hit['severity']}, conf {hit['confidence']}), "
            f"cleared {c if c is not None else '-'} s, alarm open {shares[-1]:.0%} of the incident"
        )
    if shares:
        lines.append(f"alarm open for {sum(shares) / len(truth):.0%} of the true incident time (mean over incidents)")
    return lines


def open_share(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Share of ``[start, end]`` covered by the union of the ``(opened, cleared)`` spans."""
    covered, cursor = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return covered / (end - start) if end > start else 0.0


def describe(decisions: list[dict[str, Any]], t0: int) -> None:
    """One line per incident / cleared decision (sim seconds from ``t0``)."""
    for d in decisions:
        if d["type"] == INCIDENT:
            ev = d["evidence"]
            log(
                f"  +{parse_ts(d['ts']) - t0:5d}s {d['segment_id']:10s} {d['lane'] or '-':12s} start "
                f"+{parse_ts(d['start_ts']) - t0}s {d['severity']:6s} conf {d['confidence']:.2f} "
                f"delay {d['delay_s_per_veh']}s {'/'.join(ev['rules'])} [{','.join(ev['corroboration'])}] "
                f"{ev['scores']}"
            )
        elif d["type"] == CLEARED:
            log(f"  +{parse_ts(d['ts']) - t0:5d}s {d['segment_id']:10s} cleared after {d['duration_s']}s")


def fault_report(
    decisions: list[dict[str, Any]], faults: dict[str, tuple[str, int]], configs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Incidents on segments with a faulty loop (after onset) and device faults reported per kind."""
    seg_of = {d: sid for sid, c in configs.items() for d in c["loops"]}
    onset_by_seg: dict[str, int] = {}
    for det, (_, at) in faults.items():
        s = seg_of[det]
        onset_by_seg[s] = min(onset_by_seg.get(s, at), at)
    on_faulty = [
        d
        for d in decisions
        if d["type"] == INCIDENT
        and d["segment_id"] in onset_by_seg
        and parse_ts(d["ts"]) >= onset_by_seg[d["segment_id"]]
    ]
    reported: dict[str, list[tuple[str, int]]] = {}
    for d in decisions:
        if d["type"] == FAULT:
            reported.setdefault(d["detector_id"], []).append((d["fault"], parse_ts(d["ts"])))
    per_kind: dict[str, Counter[str]] = {k: Counter() for k in FAULT_KINDS}
    delays: dict[str, list[int]] = {k: [] for k in FAULT_KINDS}
    for det, (kind, at) in faults.items():
        got = [(f, t) for f, t in reported.get(det, []) if t >= at]
        per_kind[kind]["injected"] += 1
        if got:
            per_kind[kind]["reported"] += 1
            per_kind[kind][f"as_{got[0][0]}"] += 1
            delays[kind].append(got[0][1] - at)
        else:
            per_kind[kind]["missed"] += 1
    false_faults = sum(1 for d, rs in reported.items() for f, t in rs if d not in faults or t < faults[d][1])
    return {
        "incidents_on_faulty_segments": len(on_faulty),
        "incidents_on_faulty": [(d["segment_id"], d["lane"], d["ts"]) for d in on_faulty],
        "faults": {k: dict(v) for k, v in per_kind.items()},
        "median_report_delay_s": {k: (sorted(v)[len(v) // 2] if v else None) for k, v in delays.items()},
        "fault_reports_on_healthy_detectors": false_faults,
    }


# ------------------------------------------------------------------------------------------------ MnDOT


def mndot(path: Path = MNDOT) -> list[dict[str, Any]]:
    """Run the univariate baseline on every MnDOT series; one result per series."""
    windows = json.loads((path / "combined_windows_ALL_NAB.json").read_text())
    results = []
    for csv_path in sorted(path.glob("*.csv")):
        key = f"realTraffic/{csv_path.name}"
        wins = [
            (
                datetime.fromisoformat(a).replace(tzinfo=UTC).timestamp(),
                datetime.fromisoformat(b).replace(tzinfo=UTC).timestamp(),
            )
            for a, b in windows.get(key, [])
        ]
        # the quantity is in the file name (MnDOT export): speed is bad when low, occupancy and travel time
        # when high; travel time is ratio-scale with multiplicative spikes (modelled in log)
        name = csv_path.name.lower()
        st = new_baseline_state(-1 if name.startswith("speed") else 1, log_scale=name.startswith("traveltime"))
        flags: list[float] = []
        n = 0
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                ts = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
                dec = update_baseline(st, ts, float(row["value"]))
                n += 1
                if dec is not None and dec["type"] == "anomaly":
                    flags.append(float(dec["ts"]))
        hit = [any(a <= t <= b for t in flags) for a, b in wins]
        outside = sum(1 for t in flags if not any(a <= t <= b for a, b in wins))
        results.append(
            {
                "series": csv_path.name,
                "samples": n,
                "windows": len(wins),
                "flagged": hit,
                "flags": len(flags),
                "outside": outside,
            }
        )
    return results


def print_mndot(results: list[dict[str, Any]]) -> None:
    print(f"{'series':22s} {'samples':>7s} {'windows flagged':>16s} {'flags':>6s} {'outside':>8s}")
    tw = tf = to = th = 0
    for r in results:
        marks = "".join("x" if h else "." for h in r["flagged"])
        print(
            f"{r['series']:22s} {r['samples']:>7d} {sum(r['flagged']):>3d}/{r['windows']:<3d} {marks:>8s} "
            f"{r['flags']:>6d} {r['outside']:>8d}"
        )
        tw += r["windows"]
        th += sum(r["flagged"])
        tf += r["flags"]
        to += r["outside"]
    print(f"{'total':22s} {'':>7s} {th:>3d}/{tw:<3d} {'':>8s} {tf:>6d} {to:>8d}")


# ------------------------------------------------------------------------------------------------ plot


def write_plot(path: Path, decisions: list[dict[str, Any]], truth: list[dict[str, Any]], t0: int) -> None:
    """Timeline: true incidents (bars) and alarms / clears per segment (markers)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return
    segs = sorted({t["segment_id"] for t in truth} | {d["segment_id"] for d in decisions if d["type"] == INCIDENT})
    y = {s: i for i, s in enumerate(segs)}
    fig, ax = plt.subplots(figsize=(11, 0.4 * len(segs) + 1.5))
    for t in truth:
        ax.barh(y[t["segment_id"]], t["end_s"] - t["start_s"], left=t["start_s"], color="tab:orange", alpha=0.4)
    for d in decisions:
        if d["segment_id"] not in y:
            continue
        if d["type"] == INCIDENT:
            ax.plot(parse_ts(d["ts"]) - t0, y[d["segment_id"]], "rv")
            ax.plot(parse_ts(d["start_ts"]) - t0, y[d["segment_id"]], "k|")
        elif d["type"] == CLEARED:
            ax.plot(parse_ts(d["ts"]) - t0, y[d["segment_id"]], "g^")
    ax.set_yticks(range(len(segs)), segs)
    ax.set_xlabel("simulated time, s (bars: true incidents; red: alarm; black: estimated start; green: cleared)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot: {path}")


# ------------------------------------------------------------------------------------------------ main


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"1-20"`` (inclusive range) or ``"1,2,3"``."""
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",") if x.strip()]


def set_parameter(item: str) -> None:
    """Override a module-level parameter of ``models.incidents`` from ``NAME=VALUE`` (type of the default)."""
    name, _, value = item.partition("=")
    old = getattr(incidents_model, name)  # AttributeError: not a parameter
    new: Any
    if isinstance(old, bool):
        new = value.strip().lower() in ("1", "true", "yes")
    elif isinstance(old, tuple):
        new = tuple(float(x) for x in value.split(","))
    else:
        new = type(old)(value)
    setattr(incidents_model, name, new)
    log(f"parameter {name} = {new!r} (default {old!r})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="folder with normal/ and incident/")
    ap.add_argument("--network", type=Path, default=DEFAULT_NETWORK)
    ap.add_argument("--sumo-py", type=Path, default=DEFAULT_SUMO_PY)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--faults", type=float, default=0.0, help="share of loops made faulty in the normal run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", default=None, help="fault seeds, e.g. 1-20 or 1,2,3 (overrides --seed)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a model parameter")
    ap.add_argument("--onset", choices=("random", "start"), default="random")
    ap.add_argument("--mndot", action="store_true")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every alarm and clear")
    a = ap.parse_args(argv)

    for item in a.set:
        set_parameter(item)
    G = load_trafficnet(a.network)
    configs = segment_configs_from_graph(G)
    truth_path = a.runs / "incident" / "incidents.json"
    truth = json.loads(truth_path.read_text())
    decisions: dict[str, list[dict[str, Any]]] = {}
    us: dict[str, float] = {}
    t0 = 0
    for run in ("incident", "normal"):
        events = load_events(a.runs / run / "events.jsonl")
        t0 = min(ev["ts_s"] for ev in events) - 30
        decisions[run], us[run] = run_detector(events, IncidentDetector(configs))
        n = write_alarms(decisions[run], a.out / f"alarms_{run}.jsonl")
        log(f"{run}: {len(events)} events, {n} alarms")
        if a.verbose:
            describe(decisions[run], t0)
    rep = score(a.out / "alarms_incident.jsonl", a.out / "alarms_normal.jsonl", truth_path, a.sumo_py)
    (a.out / "score.json").write_text(json.dumps(rep, indent=1))
    print_table(rep, us)
    for line in clearing_report(decisions["incident"], truth, configs, t0):
        print("  " + line)
    for run in ("incident", "normal"):
        kinds = Counter(d["type"] if d["type"] != FAULT else f"fault:{d['fault']}" for d in decisions[run])
        print(f"  {run} decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))

    if a.faults > 0:
        events = load_events(a.runs / "normal" / "events.jsonl")
        loop_ids = [d for c in configs.values() for d in c["loops"]]
        seeds = parse_seeds(a.seeds) if a.seeds else [a.seed]
        on_faulty: list[int] = []
        for seed in seeds:
            faulty, faults = inject_faults(events, loop_ids, a.faults, seed, a.onset)
            dec, us_f = run_detector(faulty, IncidentDetector(configs))
            write_alarms(dec, a.out / "alarms_normal_faults.jsonl")
            if a.verbose:
                describe(dec, t0)
            frep = fault_report(dec, faults, configs)
            on_faulty.append(int(frep["incidents_on_faulty_segments"]))
            rep_f = score(a.out / "alarms_incident.jsonl", a.out / "alarms_normal_faults.jsonl", truth_path, a.sumo_py)
            print(
                f"\nfaults {a.faults:.0%} of loops (seed {seed}, onset {a.onset}): "
                f"incidents on faulty segments {frep['incidents_on_faulty_segments']} "
                f"{frep['incidents_on_faulty'] or ''}; normal-run false episodes "
                f"{rep_f['normal_run']['false_alarm_episodes']} "
                f"({rep_f['normal_run']['false_alarms_per_detector_hour']:.4f}/det-h); {us_f:.1f} µs/event"
            )
            for kind, c in frep["faults"].items():
                print(
                    f"  {kind:7s} injected {c.get('injected', 0):3d}  reported {c.get('reported', 0):3d} "
                    f"({', '.join(f'{k[3:]} {v}' for k, v in c.items() if k.startswith('as_'))}) "
                    f"median delay {frep['median_report_delay_s'][kind]} s"
                )
            print(f"  fault reports on healthy detectors: {frep['fault_reports_on_healthy_detectors']}")
            (a.out / "faults.json").write_text(json.dumps(frep, indent=1))
        if len(seeds) > 1:
            print(
                f"\nseeds {seeds[0]}-{seeds[-1]}: incidents on faulty segments {sum(on_faulty)} "
                f"(seeds with any: {sum(1 for x in on_faulty if x)}/{len(seeds)})"
            )

    if a.mndot:
        print()
        print_mndot(mndot())

    if a.plot is not None:
        write_plot(a.plot, decisions["incident"], truth, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
