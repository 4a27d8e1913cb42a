"""Congestion and incident accuracy through the real pipeline, against SUMO ground truth (``make eval``).

For each harness run (normal, incident) and each detector condition (clean; 10 % of loops silent or stuck),
``citybrain replay`` pushes the harness events through MQTT → bridge → Kafka → worker, and the harness's
``score_states.py`` scores the segment states it wrote. The harness's trivial estimator is run and scored the
same way, side by side. The clean replays also write every raised incident, scored by ``score_incidents.py``.
Writes markdown tables (stdout, ``--table`` and ``--incident-table``), an estimated-vs-true speed plot and an
incident timeline plot.

Environment: ``SUMO_PY`` (a Python with ``../shared/eval/sumo/requirements.txt``; default python3) and
``SUMO_OUT`` (default ``./sumo_out``); missing harness outputs are generated with its Makefile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "eval" / "sumo"
NETWORK = HARNESS / "scenario" / "network.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sumo_py() -> str:
    return os.environ.get("SUMO_PY", "python3")


def ensure_harness(out: Path) -> None:
    for run, target in (("normal", "events"), ("incident", "incidents")):
        if not (out / run / "events.jsonl").exists():
            log(f"generating harness run {run} (make -C {HARNESS} {target}) …")
            subprocess.run(
                ["make", "-s", "-C", str(HARNESS), target],
                check=True,
                env={**os.environ, "SUMO_PY": sumo_py(), "SUMO_OUT": str(out)},
            )


def score(estimates: Path, truth: Path, out: Path) -> dict[str, Any]:
    subprocess.run(
        [
            sumo_py(),
            str(HARNESS / "score_states.py"),
            "--estimates",
            str(estimates),
            "--truth",
            str(truth),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return dict(json.loads(out.read_text()))


def replay(events: Path, states: Path, faults: float, seed: int, alarms: Path | None = None) -> dict[str, Any]:
    cmd = [
        str(ROOT / ".venv" / "bin" / "citybrain"),
        "replay",
        "--network",
        str(NETWORK),
        "--events",
        str(events),
        "--states-out",
        str(states),
        "--faults",
        str(faults),
        "--fault-seed",
        str(seed),
        *(["--alarms-out", str(alarms)] if alarms else []),
    ]
    log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)  # progress goes to stderr
    return dict(json.loads(res.stdout))


def trivial(events: Path, states: Path) -> None:
    with open(states, "w") as fh:
        subprocess.run(
            [sumo_py(), str(HARNESS / "examples" / "trivial_state_estimator.py"), str(events)], check=True, stdout=fh
        )


def speed_pairs(states: Path, truth: Path) -> tuple[list[float], list[float]]:
    gt = {}
    for line in truth.read_text().splitlines():
        r = json.loads(line)
        gt[(r["segment_id"], r["ts_end"])] = r["speed_kmh"]
    est, tru = [], []
    for line in states.read_text().splitlines():
        r = json.loads(line)
        t = gt.get((r["segment_id"], r["ts"]))
        if t is not None and r.get("speed_kmh") is not None:
            est.append(float(r["speed_kmh"]))
            tru.append(float(t))
    return est, tru


def plot(path: Path, series: dict[str, tuple[list[float], list[float]]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed (pip install 'citybrain[eval]'): no plot")
        return
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4.6), squeeze=False)
    for ax, (name, (est, tru)) in zip(axes[0], series.items(), strict=True):
        ax.scatter(tru, est, s=3, alpha=0.35)
        ax.plot([0, 60], [0, 60], "k--", lw=1)
        ax.set_xlim(0, 60)
        ax.set_ylim(0, 60)
        ax.set_xlabel("true space-mean speed (km/h, SUMO)")
        ax.set_ylabel("estimated speed (km/h)")
        ax.set_title(name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["normal", "incident"])
    ap.add_argument("--faults", type=float, default=0.1, help="share of loops made silent/stuck for the robustness row")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "speed_estimated_vs_true.png")
    ap.add_argument("--incident-table", type=Path, default=None)
    ap.add_argument("--timeline", type=Path, default=ROOT / "docs" / "img" / "incident_timeline.png")
    a = ap.parse_args(argv)
    out = Path(os.environ.get("SUMO_OUT", ROOT / "sumo_out")).resolve()
    ensure_harness(out)
    work = out / "citybrain"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, dict[str, Any], dict[str, Any] | None]] = []
    reports: dict[tuple[str, float], dict[str, Any]] = {}
    series: dict[str, tuple[list[float], list[float]]] = {}
    for run in a.runs:
        events, truth = out / run / "events.jsonl", out / run / "ground_truth_edges.jsonl"
        triv = work / f"trivial_states_{run}.jsonl"
        trivial(events, triv)
        rows.append(
            ("harness trivial (all loops)", run, "clean", score(triv, truth, work / f"trivial_score_{run}.json"), None)
        )
        for faults in (0.0, a.faults):
            tag = "clean" if faults == 0 else f"{faults:.0%} loops silent/stuck"
            states = work / f"states_{run}{'' if faults == 0 else f'_faults{faults:g}'}.jsonl"
            alarms = work / f"alarms_{run}{'' if faults == 0 else '_faults'}.jsonl"
            rep = replay(events, states, faults, a.seed, alarms)
            reports[(run, faults)] = rep
            sc = score(states, truth, work / f"states_score_{run}{'' if faults == 0 else '_faults'}.json")
            rows.append(("citybrain (replay via MQTT)", run, tag, sc, rep))
            if faults == 0:
                series[f"citybrain, {run} run"] = speed_pairs(states, truth)
    head = ["estimator", "run", "detectors", "speed MAE km/h", "RMSE", "bias", "congested P / R / F1", "coverage"]
    lines = ["| " + " | ".join([*head, "events accounted"]) + " |", "|" + "---|" * (len(head) + 1)]
    for name, run, tag, sc, report in rows:
        acc = "–" if report is None else f"{report['events'] - report['unaccounted']:,}/{report['events']:,}"
        prf = f"{sc['congested_precision']:.3f} / {sc['congested_recall']:.3f} / {sc['congested_f1']:.3f}"
        cells = [name, run, tag, f"{sc['speed_mae_kmh']:.2f}", f"{sc['speed_rmse_kmh']:.2f}"]
        cells += [f"{sc['speed_bias_kmh']:+.2f}", prf, f"{sc['coverage']:.3f}", acc]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if a.table:
        a.table.parent.mkdir(parents=True, exist_ok=True)
        a.table.write_text(table + "\n")
    plot(a.plot, series)
    if {"normal", "incident"} <= set(a.runs):
        inc = score_incidents(work, out)
        head = ["run", "incidents detected", "mean time to detect", "false alarms / detector-hour"]
        lines = ["| " + " | ".join([*head, "incidents raised"]) + " |", "|---|---|---|---|---|"]
        ir, nr = inc["incident_run"], inc["normal_run"]
        on_faults = reports.get(("normal", a.faults), {}).get("incidents_raised", "–")
        per = ", ".join(
            f"{p['incident_id']} {p['time_to_detect_s']:.0f} s" for p in ir["per_incident"] if p["detected"]
        )
        lines.append(
            f"| incident | {ir['detected']}/{ir['incidents']} | {ir['mean_time_to_detect_s']:.0f} s ({per}) | "
            f"{ir['false_alarms_per_detector_hour']:.4f} | – |"
        )
        fa_normal = nr["false_alarms_per_detector_hour"]
        lines.append(f"| normal | – | – | {fa_normal:.4f} | {nr.get('alarm_episodes', '–')} |")
        lines.append(f"| normal, {a.faults:.0%} loops silent/stuck | – | – | – | {on_faults} |")
        table = "\n".join(lines)
        print("\n" + table)
        if a.incident_table:
            a.incident_table.write_text(table + "\n")
        timeline(
            a.timeline,
            out / "incident" / "incidents.json",
            work / "alarms_incident.jsonl",
            work / "alarms_normal.jsonl",
        )
    return 0


def score_incidents(work: Path, out: Path) -> dict[str, Any]:
    res = subprocess.run(
        [
            sumo_py(),
            str(HARNESS / "score_incidents.py"),
            "--alarms",
            str(work / "alarms_incident.jsonl"),
            "--normal-alarms",
            str(work / "alarms_normal.jsonl"),
            "--truth",
            str(out / "incident" / "incidents.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=HARNESS,
    )
    return dict(json.loads(res.stdout))


def timeline(path: Path, truth: Path, alarms: Path, normal_alarms: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from datetime import datetime

    def t(ts: str) -> datetime:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))

    incs: list[dict[str, Any]] = json.loads(truth.read_text())
    al = [json.loads(x) for x in alarms.read_text().splitlines() if x.strip()]
    na = [json.loads(x) for x in normal_alarms.read_text().splitlines() if x.strip()]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    base = min(t(x["start_ts"]) for x in incs).replace(minute=0, second=0)

    def minutes(ts: str) -> float:
        return (t(ts) - base).total_seconds() / 60

    for i, inc in enumerate(incs):
        start, end = minutes(inc["start_ts"]), minutes(inc["end_ts"])
        ax.barh(i, end - start, left=start, height=0.5, color="#fdae6b")
        for a in (a for a in al if a["segment_id"] == inc["segment_id"]):
            ax.plot(minutes(a["ts"]), i, "kv")
    for a in na:
        ax.axvline(minutes(a["ts"]), color="#d73027", lw=1, ls=":")
    ax.set_yticks(range(len(incs)), [f"{x['incident_id']} {x['segment_id']}" for x in incs])
    ax.set_xlabel(
        f"minutes after {base:%H:%M} UTC — bars: true incidents, triangles: citybrain alarms, dotted: normal-run alarms"
    )
    ax.set_title(f"incident timeline (normal run: {len(na)} alarm(s))")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
