"""Render ``score_corpus.py`` reports (citybrain and the harness baseline, per reporting interval and seed set)
into markdown tables and a time-to-detect against false-alarm-rate plot. Used by ``bench.eval_corpus``.

A result is a ``score_corpus.py`` report (``--out`` JSON) with a ``setting`` added:
``{"system": "citybrain"|"baseline", "loop_s": 30, "cam_s": 60, "seeds": [1, 2], "failed": []}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Result = dict[str, Any]
SYSTEMS = ("citybrain", "baseline")  # side by side in the breakdown tables
ALL_SYSTEMS = (*SYSTEMS, "baseline_strict")  # rows of the overall table, points of the plot
SYSTEM_LABEL = {
    "citybrain": "citybrain (replay)",
    "baseline": "harness baseline",
    "baseline_strict": "harness baseline, `--min-other 12`",
}
TRAINING_MAX_SEED = 99  # seeds 1-99 may be used to fit; 100-129 are held out (issue #16)


def seed_set(seeds: Iterable[int]) -> str:
    """A short, file-name-safe name of a seed list: ``1-6`` when contiguous, else ``1_2_5``."""
    s = sorted(set(seeds))
    if not s:
        return "none"
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 1:
        return f"{s[0]}-{s[-1]}"
    return "_".join(map(str, s))


def seed_role(seeds: Iterable[int]) -> str:
    """``training`` (all ≤ 99), ``held out`` (all ≥ 100) or ``mixed``."""
    s = list(seeds)
    if all(x <= TRAINING_MAX_SEED for x in s):
        return "training"
    if all(x > TRAINING_MAX_SEED for x in s):
        return "held out"
    return "mixed"


def result_name(system: str, loop_s: int, cam_s: int, seeds: Iterable[int]) -> str:
    return f"{loop_s}-{cam_s}_{seed_set(seeds)}_{system}.json"


def load_results(folder: Path) -> list[Result]:
    """Every result JSON in ``folder`` (with a ``setting``), in file-name order."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json")):
        rep = json.loads(p.read_text())
        if "setting" in rep and rep.get("incidents"):
            out.append(rep)
    return out


def _key(r: Result) -> tuple[int, int, tuple[int, ...]]:
    st = r["setting"]
    return (-int(st["loop_s"]), -int(st["cam_s"]), tuple(st["seeds"]))


def pair_results(results: list[Result]) -> list[tuple[tuple[int, int, tuple[int, ...]], dict[str, Result]]]:
    """Results grouped by (reporting intervals, seed list), coarsest interval first, training seeds first."""
    groups: dict[tuple[int, int, tuple[int, ...]], dict[str, Result]] = {}
    for r in results:
        groups.setdefault(_key(r), {})[r["setting"]["system"]] = r
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], min(kv[0][2]), len(kv[0][2])))
    return [((-k[0], -k[1], k[2]), v) for k, v in ordered]


def _num(x: float | None, fmt: str = ".0f", unit: str = "") -> str:
    return "–" if x is None else f"{x:{fmt}}{unit}"


def detection_cell(block: dict[str, Any] | None) -> str:
    """``18/36 = 0.50 (0.34–0.66)`` from a ``score_corpus`` detection block."""
    if not block or not block.get("incidents"):
        return "–"
    ci = block.get("detection_rate_ci95") or [None, None]
    return (
        f"{block['detected']}/{block['incidents']} = {block['detection_rate']:.2f} "
        f"({_num(ci[0], '.2f')}–{_num(ci[1], '.2f')})"
    )


def ttd_cell(block: dict[str, Any] | None) -> str:
    """``mean / median`` time to detect in seconds."""
    if not block:
        return "–"
    return f"{_num(block.get('mean_time_to_detect_s'))} / {_num(block.get('median_time_to_detect_s'))} s"


def _setting(key: tuple[int, int, tuple[int, ...]]) -> list[str]:
    loop_s, cam_s, seeds = key
    return [f"{loop_s} s / {cam_s} s", f"{seed_set(seeds)} ({seed_role(seeds)})"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def overall_table(results: list[Result]) -> list[str]:
    head = ["loops / cameras", "seeds", "system", "detected (95 % CI)", "TTD mean / median"]
    head += ["FA / det-h incident run (episodes)", "FA / det-h normal run (episodes)"]
    head += ["sensor faults alarmed (episodes; normal run same window)", "speed MAE km/h normal / incident"]
    head += ["congested F1 normal / incident"]
    rows = []
    for key, by_system in pair_results(results):
        for system in ALL_SYSTEMS:
            if system not in by_system:
                continue
            r = by_system[system]
            inc = r["incidents"]
            sf = inc["sensor_faults"]
            st = r.get("states", {})
            fa_i_rate = inc["false_alarms_per_detector_hour_incident_run"]
            fa_i = f"{fa_i_rate:.4f} ({inc['false_alarm_episodes_incident_run']})"
            fa_n = inc.get("false_alarms_per_detector_hour_normal_run")
            fa_n_cell = "–" if fa_n is None else f"{fa_n:.4f} ({inc['false_alarm_episodes_normal_run']})"
            faults = (
                f"{sf['faults_alarmed']}/{sf['faults']} ({sf['false_alarm_episodes_on_faulty_segments']}; "
                f"{sf['same_window_normal_run_episodes']})"
            )
            mae = " / ".join(_num(st.get(run, {}).get("speed_mae_kmh"), ".2f") for run in ("normal", "incident"))
            f1 = " / ".join(_num(st.get(run, {}).get("congested_f1"), ".3f") for run in ("normal", "incident"))
            cells = [*_setting(key), SYSTEM_LABEL[system], detection_cell(inc), ttd_cell(inc), fa_i, fa_n_cell]
            rows.append([*cells, faults, mae, f1])
    return _table(head, rows)


def breakdown_table(results: list[Result], field: str, label: str) -> list[str]:
    """Detection per ``field`` (``per_category`` or ``per_family``): citybrain and baseline side by side."""
    head = ["loops / cameras", "seeds", label]
    for system in SYSTEMS:
        head += [f"{SYSTEM_LABEL[system]}: detected (95 % CI)", "TTD mean / median"]
    rows = []
    for key, by_system in pair_results(results):
        names = sorted({str(k) for r in by_system.values() for k in r["incidents"][field]})
        for name in names:
            cells = [*_setting(key), name]
            for system in SYSTEMS:
                block = by_system.get(system, {}).get("incidents", {}).get(field, {}).get(name)
                cells += [detection_cell(block), ttd_cell(block)]
            rows.append(cells)
    return _table(head, rows)


def faults_table(results: list[Result]) -> list[str]:
    """Per sensor-fault kind: faults, and per system the faults with false-alarm episodes on their segment."""
    head = ["loops / cameras", "seeds", "fault kind", "faults"]
    head += [f"{SYSTEM_LABEL[s]}: alarmed (episodes)" for s in SYSTEMS]
    rows = []
    for key, by_system in pair_results(results):
        kinds = sorted({k for r in by_system.values() for k in r["incidents"]["sensor_faults"]["per_kind"]})
        for kind in kinds:
            cells = [*_setting(key), kind]
            n = "–"
            for system in SYSTEMS:
                pk = by_system.get(system, {}).get("incidents", {}).get("sensor_faults", {}).get("per_kind", {})
                v = pk.get(kind)
                if v is None:
                    cells.append("–")
                    continue
                n = str(v["faults"])
                cells.append(f"{v['alarmed']} ({v['episodes']})")
            rows.append([*cells[:3], n, *cells[3:]])
    return _table(head, rows)


def render_page(results: list[Result], plot_path: str = "../img/corpus_ttd_fa.png") -> str:
    """The markdown page: overall, per category, per network family, per sensor-fault kind, and the plot."""
    lines = [
        "# Incidents and congestion over generated SUMO scenarios",
        "",
        "Generated by `make eval-corpus` (`bench/eval_corpus.py`); do not edit by hand. Each seed is a scenario of",
        "`../shared/eval/sumo/generate.py`; citybrain runs through `citybrain replay` (MQTT → bridge → Kafka →",
        "worker) on the seed's own network, the harness baseline is its naive `baseline_incident_detector.py`",
        "(`--min-other 6`, and `--min-other 12` for a stricter point) and `trivial_state_estimator.py`. All are",
        "scored by the harness's `score_corpus.py`",
        "(an alarm matches an incident on its segment or an upstream neighbour, from its start to 300 s after",
        "its end; alarms on a segment less than 300 s apart are one episode). Seeds 1–99 may be used for",
        "tuning; seeds 100–129 are held out. TTD: time to detect. FA / det-h: false-alarm episodes per",
        "detector-hour. Sensor faults alarmed: faults with a false-alarm episode on the faulty detector's",
        "segment during the fault (+300 s); in brackets the episodes, and those in the same window of the",
        "fault-free normal run.",
        "",
        "## Overall",
        "",
        *overall_table(results),
        "",
        f"![time to detect against false alarms]({plot_path})",
        "",
        "## Per incident category",
        "",
        *breakdown_table(results, "per_category", "category"),
        "",
        "## Per network family",
        "",
        *breakdown_table(results, "per_family", "family"),
        "",
        "## Per sensor-fault kind (incident run)",
        "",
        *faults_table(results),
        "",
    ]
    return "\n".join(lines)


def plot_points(results: list[Result]) -> list[dict[str, Any]]:
    """One point per result: normal-run FA / det-h (x), mean and median TTD (y), detection rate, label."""
    pts = []
    for key, by_system in pair_results(results):
        for system, r in by_system.items():
            inc = r["incidents"]
            fa = inc.get("false_alarms_per_detector_hour_normal_run")
            if fa is None:
                fa = inc["false_alarms_per_detector_hour_incident_run"]
            pts.append(
                {
                    "system": system,
                    "loop_s": key[0],
                    "cam_s": key[1],
                    "seeds": seed_set(key[2]),
                    "role": seed_role(key[2]),
                    "fa_per_det_h": fa,
                    "ttd_mean_s": inc.get("mean_time_to_detect_s"),
                    "ttd_median_s": inc.get("median_time_to_detect_s"),
                    "detection_rate": inc.get("detection_rate"),
                }
            )
    return pts


def plot_ttd_fa(results: list[Result], path: Path) -> bool:
    """Median (filled) and mean (hollow) time to detect against the normal-run false-alarm rate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [p for p in plot_points(results) if p["ttd_median_s"] is not None]
    if not pts:
        return False
    colours = {"citybrain": "#1f77b4", "baseline": "#d62728", "baseline_strict": "#ff9896"}
    markers = {"training": "o", "held out": "s", "mixed": "^"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for p in pts:
        c, m = colours[p["system"]], markers[p["role"]]
        ax.plot(p["fa_per_det_h"], p["ttd_median_s"], m, color=c, ms=8)
        ax.plot(p["fa_per_det_h"], p["ttd_mean_s"], m, color=c, ms=8, mfc="none")
        ax.annotate(
            f"{p['loop_s']}/{p['cam_s']} s, seeds {p['seeds']}: {p['detection_rate']:.0%}",
            (p["fa_per_det_h"], p["ttd_median_s"]),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize=7,
            color=c,
        )
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per detector-hour, normal run (log)")
    ax.set_ylabel("time to detect, s (filled: median, hollow: mean)")
    ax.set_title(
        "citybrain (blue) vs harness baseline (red; light: --min-other 12); o training seeds, □ held out; "
        "label: detected share"
    )
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
