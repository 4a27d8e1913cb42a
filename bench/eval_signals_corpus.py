"""Closed-loop signal control on generated SUMO scenarios: citybrain against fixed, Webster and max-pressure.

For every seed (``--seeds "100-119"``; ranges and lists) the harness's ``closed_loop.py`` runs, with the
seed's ``SUMO_SCENARIO`` (and ``CITYBRAIN_NETWORK``), four controllers one after the other:

- ``fixed``: the scenario's own static plans (the harness);
- ``webster``: the harness's Webster baseline;
- ``maxpressure``: citybrain's cycle-based max-pressure baseline (``bench/eval_signals.py --serve-maxpressure``
  on the seed's network);
- ``citybrain``: ``citybrain controller --stdio`` (decisions logged to ``citybrain_decisions.jsonl``);
  ``citybrain_<label>`` runs the command in ``CITYBRAIN_CONTROLLER_CMD`` instead (e.g. another checkout) and
  stores it under that name, so variants sit beside each other in one table.

Scenarios are read from ``<corpus>/<seed>/scenario`` for each ``--corpus`` folder given, first match wins; a
seed found nowhere is generated (``generate.py --seed N``, 30 s loops / 60 s cameras) into
``<gen-dir>/<seed>/scenario``. Runs go to ``<out>/<seed>/closed_loop_<controller>/`` and are **resumable**:
a run whose ``result.json`` exists is read, not repeated (``--force`` repeats). Progress (run k of n,
elapsed, estimated time left) goes to stderr.

Report: per seed and controller the mean travel time, the total delay, the ratio of mean travel time (and
of total delay) to the fixed plan, teleports and vehicles unfinished at the cap; pooled per controller the
mean ratio with a 95 % t interval over the seeds, the seeds at or below fixed and at or below Webster, and
the summed teleports and unfinished vehicles. Seeds 1-99 are for fitting, seeds >= 100 are held out: the
table says which is which. Markdown to stdout and ``--md``, JSON to ``--json``, a PNG (ratio per seed) to
``--plot`` when matplotlib is installed.

Environment: ``SUMO_PY`` (the harness interpreter, default python3), ``SUMO_HARNESS`` (default
../shared/eval/sumo).

Run::

    .venv/bin/python bench/eval_signals_corpus.py --seeds "1 6" --corpus ../corpus/gen --out sumo_out/sc
    make eval-signals-corpus SEEDS="100-103"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SUMO_HARNESS", str(ROOT.parent / "shared" / "eval" / "sumo")))
SUMO_PY = os.environ.get("SUMO_PY", "python3")
VENV_PY = ROOT / ".venv" / "bin" / "python"
CITYBRAIN = ROOT / ".venv" / "bin" / "citybrain"
# the citybrain controller command (a variant, e.g. another checkout, can be named citybrain_<label>)
CITYBRAIN_CMD = os.environ.get("CITYBRAIN_CONTROLLER_CMD", f"{CITYBRAIN} controller --stdio")
CONTROLLERS = ("fixed", "webster", "maxpressure", "citybrain")
HELD_OUT_FROM = 100  # seeds >= this are held out (report only, never tuned on)
# two-sided 95 % Student t quantiles by degrees of freedom (1-30); 1.96 beyond
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]
T95 += [2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_seeds(text: str) -> list[int]:
    """``"1 6 100-103"`` or ``"1,6"`` -> ``[1, 6, 100, 101, 102, 103]`` (order kept, duplicates dropped).

    Raises
    ------
    ValueError
        On a token that is not an integer or an ``a-b`` range with ``a <= b``.
    """
    out: list[int] = []
    for tok in text.replace(",", " ").split():
        a, sep, b = tok.partition("-")
        if not a.isdigit() or (sep and not b.isdigit()):
            raise ValueError(f"seed {tok!r}: expected N or A-B")
        lo, hi = int(a), int(b) if sep else int(a)
        if hi < lo:
            raise ValueError(f"seed range {tok!r} is empty")
        out.extend(s for s in range(lo, hi + 1) if s not in out)
    return out


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of the mean (``(m, m, m)`` for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, m, m
    half = (T95[len(values) - 2] if len(values) - 1 <= len(T95) else 1.96) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return m, m - half, m + half


# ---------------------------------------------------------------------------------------------------------
# Scenarios and runs
# ---------------------------------------------------------------------------------------------------------


def find_scenario(seed: int, corpora: Sequence[Path], gen_dir: Path) -> Path:
    """The seed's scenario folder: the first ``<corpus>/<seed>/scenario`` with a network, else generated."""
    for c in [*corpora, gen_dir]:
        scen = c / str(seed) / "scenario"
        if (scen / "network.json").is_file() and (scen / "scenario.json").is_file():
            return scen
    scen = gen_dir / str(seed) / "scenario"
    log(f"seed {seed}: generating {scen} ...")
    cmd = [SUMO_PY, str(SHARED / "generate.py"), "--seed", str(seed), "--out", str(scen)]
    cmd += ["--loop-interval-s", "30", "--camera-interval-s", "60"]
    r = subprocess.run(cmd, cwd=SHARED, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"seed {seed}: generate.py failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return scen


def controller_args(name: str, network: Path) -> list[str]:
    """``closed_loop.py`` arguments for one controller on one network."""
    if name in ("fixed", "webster"):
        return ["--controller", name]
    if name == "maxpressure":
        me = ROOT / "bench" / "eval_signals.py"
        return ["--cmd", f"{VENV_PY} {me} --serve-maxpressure --network {network}"]
    if name == "citybrain" or name.startswith("citybrain_"):
        return ["--cmd", f"{CITYBRAIN_CMD} --network {network}"]
    raise ValueError(f"unknown controller {name!r}; choose from {CONTROLLERS}")


def run_closed_loop(seed: int, name: str, scen: Path, out_dir: Path, force: bool = False) -> dict[str, Any]:
    """One harness run, or its stored result when ``result.json`` exists (unless ``force``)."""
    res_path = out_dir / f"closed_loop_{name}" / "result.json"
    cmd = [SUMO_PY, str(SHARED / "closed_loop.py"), *controller_args(name, scen / "network.json"), "--name", name]
    env_txt = f"SUMO_SCENARIO={scen} SUMO_OUT={out_dir}"
    command = env_txt + " " + " ".join(shlex.quote(c) for c in cmd)
    if res_path.is_file() and not force:
        res: dict[str, Any] = json.loads(res_path.read_text())
        res.setdefault("command", command)
        return res
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / f"closed_loop_{name}.lock"
    try:  # another invocation may be running the same seed and controller: wait for its result
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        log(f"seed {seed} {name}: running elsewhere ({lock}), waiting for its result")
        while lock.exists() and not res_path.is_file():
            time.sleep(15)
        if res_path.is_file():
            return run_closed_loop(seed, name, scen, out_dir)
        return run_closed_loop(seed, name, scen, out_dir, force)
    try:
        return _run_harness(seed, name, scen, out_dir, cmd, command)
    finally:
        lock.unlink(missing_ok=True)


def _run_harness(seed: int, name: str, scen: Path, out_dir: Path, cmd: list[str], command: str) -> dict[str, Any]:
    res_path = out_dir / f"closed_loop_{name}" / "result.json"
    env = dict(os.environ, SUMO_SCENARIO=str(scen), SUMO_OUT=str(out_dir), CITYBRAIN_NETWORK=str(scen / "network.json"))
    if name.startswith("citybrain"):
        env["CITYBRAIN_CONTROLLER_LOG"] = str(out_dir / f"{name}_decisions.jsonl")
        (out_dir / f"{name}_decisions.jsonl").unlink(missing_ok=True)
    r = subprocess.run(cmd, cwd=SHARED, env=env, capture_output=True, text=True, check=False)
    (out_dir / f"{name}.stderr.log").write_text(r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"seed {seed} {name}: harness failed ({r.returncode}):\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["command"] = command
    res_path.write_text(json.dumps(res, indent=1))
    return res


@dataclass
class SeedResult:
    """All controllers' results on one seed."""

    seed: int
    family: str
    signals: int
    demand_level: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def held_out(self) -> bool:
        return self.seed >= HELD_OUT_FROM

    def ratio(self, name: str, metric: str = "mean_travel_time_s") -> float | None:
        """``name``'s metric over the fixed plan's (None when either run is missing or fixed is 0)."""
        a, b = self.runs.get(name), self.runs.get("fixed")
        if not a or not b or not b.get(metric):
            return None
        return float(a[metric]) / float(b[metric])


def scenario_info(scen: Path) -> tuple[str, int, str]:
    """(family, signals, demand level) from the scenario's ``scenario.json``."""
    p = json.loads((scen / "scenario.json").read_text()).get("params", {})
    return str(p.get("family", "?")), int(p.get("signals", 0)), str(p.get("demand_level", "?"))


def run_corpus(
    seeds: Sequence[int],
    controllers: Sequence[str],
    corpora: Sequence[Path],
    gen_dir: Path,
    out: Path,
    force: Sequence[str] = (),
) -> list[SeedResult]:
    """Every controller on every seed, one run at a time, with progress on stderr."""
    results: list[SeedResult] = []
    total, k, t0, ran = len(seeds) * len(controllers), 0, time.perf_counter(), 0
    for seed in seeds:
        scen = find_scenario(seed, corpora, gen_dir)
        sr = SeedResult(seed, *scenario_info(scen))
        for name in controllers:
            k += 1
            done = (out / str(seed) / f"closed_loop_{name}" / "result.json").is_file() and name not in force
            t1 = time.perf_counter()
            sr.runs[name] = run_closed_loop(seed, name, scen, out / str(seed), name in force)
            r = sr.runs[name]
            el = time.perf_counter() - t0
            if not done:
                ran += 1
            left = (total - k) * (el / ran) if ran else 0.0
            log(
                f"[{k}/{total}] seed {seed} {name}: {r['mean_travel_time_s']} s, {r['teleports']} teleports, "
                f"{r.get('unfinished', 0)} unfinished ({'stored' if done else f'{time.perf_counter() - t1:.0f} s'}; "
                f"elapsed {el / 60:.1f} min, ~{left / 60:.0f} min left)"
            )
        results.append(sr)
    return results


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def pooled(results: Sequence[SeedResult], name: str) -> dict[str, Any]:
    """Pooled figures of one controller over the seeds where it and the fixed plan ran."""
    rs = [r for r in results if r.ratio(name) is not None]
    if not rs:
        return {}
    tt = [r.ratio(name) or 0.0 for r in rs]
    dl = [r.ratio(name, "total_delay_veh_h") for r in rs]
    m, lo, hi = t_interval(tt)
    md, lod, hid = t_interval([d for d in dl if d is not None] or [math.nan])
    web = [r for r in rs if r.runs.get("webster")]
    return {
        "seeds": len(rs),
        "mean_travel_time_s": round(statistics.fmean(r.runs[name]["mean_travel_time_s"] for r in rs), 1),
        "tt_ratio": round(m, 3),
        "tt_ratio_ci95": [round(lo, 3), round(hi, 3)],
        "delay_ratio": round(md, 3),
        "delay_ratio_ci95": [round(lod, 3), round(hid, 3)],
        "seeds_le_fixed": sum(x <= 1.0 for x in tt),
        "seeds_le_webster": sum(
            r.runs[name]["mean_travel_time_s"] <= r.runs["webster"]["mean_travel_time_s"] for r in web
        ),
        "seeds_with_webster": len(web),
        "teleports": sum(int(r.runs[name].get("teleports", 0)) for r in rs),
        "unfinished": sum(int(r.runs[name].get("unfinished", 0)) for r in rs),
    }


def _fmt(x: float | None, nd: int = 2) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def markdown_report(results: Sequence[SeedResult], controllers: Sequence[str], command: str) -> str:
    """Per-seed table and pooled table (training and held-out seeds pooled separately)."""
    lines = [f"Command: `{command}`", ""]
    lines += ["### Per seed", ""]
    head = "| seed | set | family | signals | demand | controller | mean travel time s | ratio to fixed"
    head += " | total delay veh·h | delay ratio | teleports | unfinished |"
    lines += [head, "|" + "---|" * 12]
    for r in results:
        for name in controllers:
            x = r.runs.get(name)
            if not x:
                continue
            lines.append(
                f"| {r.seed} | {'held out' if r.held_out else 'training'} | {r.family} | {r.signals} | "
                f"{r.demand_level} | {name} | {x['mean_travel_time_s']} | {_fmt(r.ratio(name))} | "
                f"{x['total_delay_veh_h']} | {_fmt(r.ratio(name, 'total_delay_veh_h'))} | {x['teleports']} | "
                f"{x.get('unfinished', 0)} |"
            )
    for label, subset in (
        ("training seeds (1-99)", [r for r in results if not r.held_out]),
        ("held-out seeds (>= 100)", [r for r in results if r.held_out]),
    ):
        if not subset:
            continue
        seeds = " ".join(str(r.seed) for r in subset)
        lines += ["", f"### Pooled, {label}: {seeds}", ""]
        lines += [
            "| controller | mean travel time s | travel-time ratio to fixed (95 % CI) | delay ratio (95 % CI) "
            "| seeds ≤ fixed | seeds ≤ Webster | teleports | unfinished |",
            "|" + "---|" * 8,
        ]
        for name in controllers:
            p = pooled(subset, name)
            if not p:
                continue
            lo, hi = p["tt_ratio_ci95"]
            dlo, dhi = p["delay_ratio_ci95"]
            lines.append(
                f"| {name} | {p['mean_travel_time_s']} | {p['tt_ratio']:.3f} ({lo:.3f}–{hi:.3f}) | "
                f"{p['delay_ratio']:.3f} ({dlo:.3f}–{dhi:.3f}) | {p['seeds_le_fixed']}/{p['seeds']} | "
                f"{p['seeds_le_webster']}/{p['seeds_with_webster']} | {p['teleports']} | {p['unfinished']} |"
            )
    return "\n".join(lines)


def plot_ratios(results: Sequence[SeedResult], controllers: Sequence[str], path: Path) -> bool:
    """Grouped bars: travel-time ratio to fixed per seed and controller; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [c for c in controllers if c != "fixed"]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(results) + 2), 4))
    for k, name in enumerate(names):
        xs = [i + k * width for i in range(len(results))]
        ys = [r.ratio(name) or 0.0 for r in results]
        ax.bar(xs, ys, width=width, label=name)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ticks = [f"{r.seed}{'*' if r.held_out else ''}\n{r.family}" for r in results]
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(results))], ticks, fontsize=8)
    ax.set_ylabel("mean travel time / fixed plan")
    ax.set_title("Generated scenarios, closed loop (* = held-out seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


BEGIN, END = "<!-- eval_signals_corpus:begin -->", "<!-- eval_signals_corpus:end -->"


def write_report(path: Path, report: str) -> None:
    """Put the report between the markers of an existing document (prose around them is kept), or write a
    new document holding only the report."""
    block = f"{BEGIN}\n{report}\n{END}"
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = f"# Signal timing on generated scenarios (closed loop)\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="100-119", help='e.g. "1 6" or "100-119"')
    ap.add_argument("--controllers", default=",".join(CONTROLLERS))
    ap.add_argument("--corpus", type=Path, action="append", default=[], help="folder of <seed>/scenario (repeat)")
    ap.add_argument("--gen-dir", type=Path, default=ROOT / "sumo_out" / "signals_corpus" / "gen")
    ap.add_argument("--out", type=Path, default=ROOT / "sumo_out" / "signals_corpus")
    ap.add_argument("--force", default="", help="controllers to run again even when stored, comma-separated")
    ap.add_argument("--md", type=Path, default=None, help="also write the report here (between its markers)")
    ap.add_argument("--json", type=Path, default=None, help="default <out>/signals_corpus.json")
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args(argv)
    try:
        seeds = parse_seeds(a.seeds)
    except ValueError as exc:
        ap.error(str(exc))
    controllers = [c for c in a.controllers.split(",") if c]
    bad = [c for c in controllers if c not in CONTROLLERS and not c.startswith("citybrain_")]
    if bad:
        ap.error(f"controllers must be among {CONTROLLERS} (or citybrain_<label>); got {controllers}")
    out, gen_dir = a.out.resolve(), a.gen_dir.resolve()
    corpora = [c.resolve() for c in a.corpus]
    force = [c for c in a.force.split(",") if c]
    results = run_corpus(seeds, controllers, corpora, gen_dir, out, force)
    command = "bench/eval_signals_corpus.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    report = markdown_report(results, controllers, command)
    print(report)
    if a.md:
        write_report(a.md, report)
    js = a.json or out / "signals_corpus.json"
    js.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "seeds": {str(r.seed): {"family": r.family, "signals": r.signals, "runs": r.runs} for r in results},
        "pooled": {n: pooled(results, n) for n in controllers},
    }
    js.write_text(json.dumps(payload, indent=1))
    if a.plot:
        log(f"chart: {a.plot}" if plot_ratios(results, controllers, a.plot) else "matplotlib missing: no chart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
