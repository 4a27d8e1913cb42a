"""How fast can *any* loop rule detect the harness's incidents, and at what false-alarm cost?

A model-free look at what the sensing allows, next to ``bench.eval_incidents`` (citybrain's detector). On the
mid-link loops of the SUMO harness runs (30-s steps; stop-line loops see signal queues and are left out) it
applies the simplest rules that fire on the two signatures of a lane incident, and scores each with the
harness's ``score_incidents.py`` on both runs:

- ``zeros m, others >= k``: a lane's loop reads exact zeros for ``m`` steps in a row while the other lanes of
  the same loop row count at least one vehicle in each of those steps and ``k`` in total (a blocked or avoided
  lane empties while its neighbours flow); one alarm when the condition starts to hold.
- ``slow < f``: a mid-link loop counts a vehicle whose mean speed is below ``f`` x the lane's limit.

A real detector can be smarter (lane shares, balance along the lane, camera, flow conservation), but every
alarm it raises at a step rests on readings like these, so the table shows the price of speed in false alarms
with these sensors. None of these rules can tell a blocked lane from a dead loop that reads exact zeros.

Run::

    .venv/bin/python -m bench.incident_limits            # needs the harness runs in sumo_out/ and SUMO_PY
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/incident_limits.py`
    sys.path.insert(0, str(ROOT))

import models.incidents as incidents_model  # noqa: E402
from bench.eval_incidents import (  # noqa: E402
    DEFAULT_NETWORK,
    DEFAULT_OUT,
    DEFAULT_RUNS,
    DEFAULT_SUMO_PY,
    fault_report,
    inject_faults,
    load_events,
    log,
    run_detector,
    score,
    set_parameter,
    write_alarms,
)
from models.incidents import IncidentDetector, segment_configs_from_graph  # noqa: E402
from roadnet import load_trafficnet  # noqa: E402

#: (m consecutive zero steps, k other-lane vehicles in total) of the zero rules in the table.
ZERO_RULES = [(1, 1), (1, 3), (1, 5), (1, 8), (2, 2), (2, 4), (2, 6), (2, 8), (3, 3), (3, 6), (3, 9), (4, 8)]
#: Speed fractions of the limit of the slow rules.
SLOW_RULES = [0.2, 0.35]
#: citybrain's detector at its defaults and with lower thresholds / without the dead-loop test (``--set``).
DETECTOR_SETTINGS = [
    [],
    ["H_FAST=4"],
    ["H_RAISE=5"],
    ["REQUIRE_NOT_DEAD=False"],
    ["REQUIRE_NOT_DEAD=False", "H_RAISE=4", "H_FAST=4"],
    ["REQUIRE_NOT_DEAD=False", "H_RAISE=3", "H_FAST=3"],
    ["REQUIRE_NOT_DEAD=False", "H_RAISE=2", "H_FAST=2"],
]
#: Fault seeds of the detector rows (10 % of the loops of the normal run faulty from a random onset).
FAULT_SEEDS = [1, 2, 3, 4, 5]


def mid_link_rows(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[int, tuple[int, float | None]]]:
    """``(segment, ts) -> lane index -> (count, speed_kmh)`` of the mid-link loops, in time order."""
    rows: dict[tuple[str, int], dict[int, tuple[int, float | None]]] = defaultdict(dict)
    for ev in events:
        if ev.get("type") == "loop" and ev.get("role") == "mid_link":
            rows[(ev["segment_id"], int(ev["ts_s"]))][int(ev["lane_index"])] = (int(ev["count"]), ev["speed_kmh"])
    return rows


def zero_alarms(
    rows: dict[tuple[str, int], dict[int, tuple[int, float | None]]], m: int, k: int
) -> list[tuple[int, str, int]]:
    """Alarms ``(ts, segment, lane)`` of the rule "zeros for m steps while the other lanes count >= k"."""
    per_seg: dict[str, list[tuple[int, dict[int, tuple[int, float | None]]]]] = defaultdict(list)
    for (seg, ts), lanes in rows.items():
        per_seg[seg].append((ts, lanes))
    out = []
    for seg, steps in per_seg.items():
        steps.sort(key=lambda x: x[0])
        lanes_of = sorted({i for _, lanes in steps for i in lanes})
        if len(lanes_of) < 2:
            continue  # one lane: nothing to compare it with
        for i in lanes_of:
            run: list[int] = []  # other-lane totals of the current run of informative zeros
            fired = False
            for ts, lanes in steps:
                own = lanes.get(i)
                others = sum(c for j, (c, _) in lanes.items() if j != i)
                if own is not None and own[0] == 0 and others >= 1:
                    run.append(others)
                elif own is not None and own[0] == 0 and others == 0:
                    continue  # an empty row says nothing either way: the run goes on
                else:
                    run, fired = [], False
                    continue
                if not fired and len(run) >= m and sum(run[-m:]) >= k:
                    out.append((ts, seg, i))
                    fired = True
    return out


def slow_alarms(
    rows: dict[tuple[str, int], dict[int, tuple[int, float | None]]], limits: dict[str, float], frac: float
) -> list[tuple[int, str, int]]:
    """Alarms of the rule "a counted vehicle below frac x the limit at a mid-link loop"."""
    out = []
    for (seg, ts), lanes in rows.items():
        for i, (c, v) in lanes.items():
            if c > 0 and v is not None and v < frac * limits.get(seg, 50.0):
                out.append((ts, seg, i))
    return out


def row(name: str, rep: dict[str, Any], extra: str = "") -> str:
    """One table row from a scorer report: detected, mean time to detect, FA/det-h of both runs, per incident."""
    inc, nor = rep["incident_run"], rep["normal_run"]
    per = " ".join("-" if p["time_to_detect_s"] is None else f"{p['time_to_detect_s']:g}" for p in inc["per_incident"])
    ttd = "-" if inc["mean_time_to_detect_s"] is None else f"{inc['mean_time_to_detect_s']:g}"
    return (
        f"{name} {inc['detected']:>2d}/{inc['incidents']:<1d} {ttd:>10} {inc['false_alarms_per_detector_hour']:>12.4f} "
        f"{nor['false_alarms_per_detector_hour']:>12.4f}{extra}  {per}"
    )


def write(alarms: list[tuple[int, str, int]], path: Path, t_iso: dict[int, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for ts, seg, i in sorted(alarms):
            f.write(json.dumps({"ts": t_iso[ts], "segment_id": seg, "lane": f"{seg}_{i}"}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="folder with normal/ and incident/")
    ap.add_argument("--network", type=Path, default=DEFAULT_NETWORK)
    ap.add_argument("--sumo-py", type=Path, default=DEFAULT_SUMO_PY)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT / "limits")
    ap.add_argument("--no-detector", action="store_true", help="only the model-free rules")
    a = ap.parse_args(argv)

    net = json.loads(a.network.read_text())
    limits = {e["id"]: float(e["speed_limit_kmh"]) for e in net["edges"]}
    truth = a.runs / "incident" / "incidents.json"
    rows: dict[str, dict[tuple[str, int], dict[int, tuple[int, float | None]]]] = {}
    t_iso: dict[int, str] = {}
    events_of: dict[str, list[dict[str, Any]]] = {}
    for run in ("incident", "normal"):
        events = events_of[run] = load_events(a.runs / run / "events.jsonl")
        t_iso.update({int(ev["ts_s"]): ev["ts"] for ev in events})
        rows[run] = mid_link_rows(events)
        log(f"{run}: {len(rows[run])} loop rows")
    rules: list[tuple[str, dict[str, list[tuple[int, str, int]]]]] = []
    for m, k in ZERO_RULES:
        rules.append((f"zeros {m}, others >= {k}", {r: zero_alarms(rows[r], m, k) for r in rows}))
    for f in SLOW_RULES:
        rules.append((f"slow < {f:g}", {r: slow_alarms(rows[r], limits, f) for r in rows}))
    # the fastest zero rule within the false-alarm goal, with the slow rule beside it
    print(f"{'rule':28s} {'det':>4s} {'mean TTD s':>10s} {'FA/det-h inc':>12s} {'FA/det-h nor':>12s}  per incident (s)")
    for i, (name, alarms) in enumerate(rules):
        write(alarms["incident"], a.out / "alarms_incident.jsonl", t_iso)
        write(alarms["normal"], a.out / "alarms_normal.jsonl", t_iso)
        rep = score(a.out / "alarms_incident.jsonl", a.out / "alarms_normal.jsonl", truth, a.sumo_py)
        print(row(f"{name:28s}", rep))
        log(f"rule {i + 1}/{len(rules)} scored")
    if not a.no_detector:
        print()
        detector_rows(a, events_of, truth)
    return 0


def detector_rows(a: argparse.Namespace, events_of: dict[str, list[dict[str, Any]]], truth: Path) -> None:
    """citybrain's detector over ``DETECTOR_SETTINGS``: scores, and incidents raised on faulty loops."""
    configs = segment_configs_from_graph(load_trafficnet(a.network))
    saved = {k: v for k, v in vars(incidents_model).items() if k.isupper()}
    loop_ids = [d for c in configs.values() for d in c["loops"]]
    print(
        f"{'citybrain detector, --set':44s} {'det':>4s} {'mean TTD s':>10s} {'FA/det-h inc':>12s} "
        f"{'FA/det-h nor':>12s} {'on faulty':>9s}  per incident (s)"
    )
    for n, setting in enumerate(DETECTOR_SETTINGS):
        for item in setting:
            set_parameter(item)
        try:
            for run, events in events_of.items():
                dec, _ = run_detector(events, IncidentDetector(configs))
                write_alarms(dec, a.out / f"alarms_{run}.jsonl")
            rep = score(a.out / "alarms_incident.jsonl", a.out / "alarms_normal.jsonl", truth, a.sumo_py)
            on_faulty = 0
            for seed in FAULT_SEEDS:
                faulty, faults = inject_faults(events_of["normal"], loop_ids, 0.1, seed, "random")
                dec, _ = run_detector(faulty, IncidentDetector(configs))
                on_faulty += int(fault_report(dec, faults, configs)["incidents_on_faulty_segments"])
        finally:
            vars(incidents_model).update(saved)
        print(row(f"{' '.join(setting) or '(defaults)':44s}", rep, f" {on_faulty:>9d}"))
        log(f"detector setting {n + 1}/{len(DETECTOR_SETTINGS)} scored")


if __name__ == "__main__":
    raise SystemExit(main())
