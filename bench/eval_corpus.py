"""Incidents and congestion over generated SUMO scenarios, through the real pipeline (``make eval-corpus``).

For each seed the harness (``../shared/eval/sumo``) generates a scenario (``generate.py``: network family, lanes,
signals, demand, 4-8 incidents, 0-3 sensor faults, reporting intervals ``--loop-s``/``--cam-s``), exports its
normal and incident runs (``export_events.py``) and runs its naive baseline detector and trivial state estimator
on both. ``citybrain replay`` then pushes both runs through MQTT → bridge → Kafka → worker on the seed's own
``network.json`` and writes the alarms and segment states in the layout of the harness's ``score_corpus.py``::

    <out>/gen/<seed>/{scenario,normal,incident}/     the harness scenario and runs (like `make corpus`)
    <out>/gen/baseline/<seed>/{alarms,states}_{normal,incident}.jsonl     the harness baseline
    <out>/citybrain/<seed>/{alarms,states}_{normal,incident}.jsonl, replay_<run>.json     citybrain

The baseline also runs at its strict operating point (``--min-other 12``, alarms in
``gen/baseline_strict/<seed>/``). ``score_corpus.py`` scores the systems over the seeds; the reports are kept in
``--results`` (one JSON per system, reporting interval and seed set), and every report there is rendered into one
markdown page (``--table``) and a time-to-detect against false-alarm-rate plot (``--plot``). Steps already done
are skipped (marker files ``.done_<step>``; replays by their summary file) unless ``--force``. Progress goes to
stderr.

Run::

    SUMO_PY=/path/to/sumo-venv/bin/python .venv/bin/python -m bench.eval_corpus --seeds "1 2 3" \\
        --loop-s 30 --cam-s 60 --out .cache/corpus/30-60
    .venv/bin/python -m bench.eval_corpus --render-only        # only the page and the plot from --results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/eval_corpus.py`
    sys.path.insert(0, str(ROOT))

from bench.corpus_report import load_results, render_page, result_name, seed_set  # noqa: E402

HARNESS = ROOT.parent / "shared" / "eval" / "sumo"
RUNS = ("normal", "incident")
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.0f} s] {msg}", file=sys.stderr, flush=True)


def sumo_py() -> str:
    return os.environ.get("SUMO_PY", "python3")


def harness(args: list[str], *, env: dict[str, str] | None = None, stdout: Path | None = None) -> None:
    """Run a harness script with ``SUMO_PY``; its output goes to ``stdout`` (or a log beside it)."""
    full_env = {**os.environ, **(env or {})}
    with open(stdout, "w") if stdout else open(os.devnull, "w") as fh:
        subprocess.run([sumo_py(), *args], check=True, cwd=HARNESS, env=full_env, stdout=fh)


def step(seed_dir: Path, name: str, force: bool) -> bool:
    """True if step ``name`` of this seed still has to run (no ``.done_<name>`` marker, or ``force``)."""
    return force or not (seed_dir / f".done_{name}").exists()


def done(seed_dir: Path, name: str) -> None:
    (seed_dir / f".done_{name}").touch()


def generate_seed(out: Path, seed: int, loop_s: int, cam_s: int, force: bool) -> None:
    """The harness scenario and runs of one seed, and its baseline detector and estimator outputs.

    The same files as the harness's ``make corpus-seed`` minus ``validate.py`` and the closed-loop runs.
    """
    sd = out / "gen" / str(seed)
    bd = out / "gen" / "baseline" / str(seed)
    sd.mkdir(parents=True, exist_ok=True)
    bd.mkdir(parents=True, exist_ok=True)
    env = {"SUMO_SCENARIO": str(sd / "scenario"), "SUMO_OUT": str(sd)}
    if step(sd, "generate", force):
        log(f"seed {seed}: generate.py (loops {loop_s} s, cameras {cam_s} s)")
        gen = ["generate.py", "--seed", str(seed), "--out", str(sd / "scenario")]
        harness([*gen, "--loop-interval-s", str(loop_s), "--camera-interval-s", str(cam_s)], stdout=sd / "generate.log")
        done(sd, "generate")
    meta = json.loads((sd / "scenario" / "scenario.json").read_text())
    if (meta["loop_interval_s"], meta["camera_interval_s"]) != (loop_s, cam_s):
        raise SystemExit(
            f"{sd} was generated with loops {meta['loop_interval_s']} s / cameras {meta['camera_interval_s']} s, "
            f"not {loop_s} / {cam_s}: use another --out"
        )
    for run in RUNS:
        if step(sd, run, force):
            log(f"seed {seed}: export_events.py, {run} run")
            flags = ["--incidents"] if run == "incident" else []
            harness(["export_events.py", *flags, "--sample-dir", ""], env=env, stdout=sd / f"export_{run}.log")
            done(sd, run)
    if step(sd, "baseline", force):
        log(f"seed {seed}: harness baseline detector and trivial estimator")
        for run in RUNS:
            events = str(sd / run / "events.jsonl")
            harness(["baseline_incident_detector.py", events], stdout=bd / f"alarms_{run}.jsonl")
            harness(["examples/trivial_state_estimator.py", events], env=env, stdout=bd / f"states_{run}.jsonl")
        done(sd, "baseline")
    if step(sd, "baseline_strict", force):
        strict = out / "gen" / "baseline_strict" / str(seed)
        strict.mkdir(parents=True, exist_ok=True)
        for run in RUNS:
            events = str(sd / run / "events.jsonl")
            detector = ["baseline_incident_detector.py", events, "--min-other", "12"]
            harness(detector, stdout=strict / f"alarms_{run}.jsonl")
        done(sd, "baseline_strict")


def replay_seed(out: Path, seed: int, force: bool, timeout_s: float) -> None:
    """``citybrain replay`` of both runs of one seed on the seed's network; skipped when its summary exists."""
    sd = out / "gen" / str(seed)
    cd = out / "citybrain" / str(seed)
    cd.mkdir(parents=True, exist_ok=True)
    for run in RUNS:
        summary = cd / f"replay_{run}.json"
        if summary.exists() and not force:
            continue
        n_events = sum(1 for _ in open(sd / run / "events.jsonl", "rb"))
        log(f"seed {seed}: citybrain replay, {run} run ({n_events:,} events)")
        cmd = [
            str(ROOT / ".venv" / "bin" / "citybrain"),
            "replay",
            "--network",
            str(sd / "scenario" / "network.json"),
            "--events",
            str(sd / run / "events.jsonl"),
            "--states-out",
            str(cd / f"states_{run}.jsonl"),
            "--alarms-out",
            str(cd / f"alarms_{run}.jsonl"),
            "--alerts-out",
            str(cd / f"alerts_{run}.jsonl"),
            "--dead-letters-out",
            str(cd / f"dead_letters_{run}.jsonl"),
            "--timeout-s",
            str(timeout_s),
            "--keep-logs",
            str(cd / f"logs_{run}"),
        ]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # replay's progress goes to stderr
        if res.returncode != 0:
            (cd / f"replay_{run}.failed.json").write_text(res.stdout)
            raise RuntimeError(f"citybrain replay failed on seed {seed}, {run} run (exit {res.returncode})")
        rep = json.loads(res.stdout)
        summary.write_text(json.dumps(rep, indent=1) + "\n")
        log(
            f"seed {seed}: {run} run replayed in {rep['wall_s']} s, {rep['incidents_raised']} incident(s) raised, "
            f"{rep['dead_lettered']} dead-lettered"
        )


def score(out: Path, system_dir: Path, seeds: list[int], report: Path) -> dict[str, Any]:
    """``score_corpus.py`` over ``seeds`` for the alarms and states in ``system_dir``."""
    args = ["score_corpus.py", "--corpus", str(out / "gen"), "--alarms-dir", str(system_dir)]
    if any(system_dir.glob("*/states_*.jsonl")):
        args += ["--states-dir", str(system_dir)]
    args += ["--seeds", " ".join(map(str, seeds)), "--out", str(report)]
    harness(args, stdout=report.with_suffix(".txt"))
    return dict(json.loads(report.read_text()))


def parse_seeds(text: str) -> list[int]:
    """``"1 2 5-7"`` or ``"1,2,5-7"`` → ``[1, 2, 5, 6, 7]``."""
    seeds: list[int] = []
    for part in text.replace(",", " ").split():
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def measure(a: argparse.Namespace) -> None:
    out = a.out.resolve()
    seeds = parse_seeds(a.seeds)
    failed: list[int] = []
    for i, seed in enumerate(seeds, 1):
        log(f"=== seed {seed} ({i}/{len(seeds)}) ===")
        try:
            generate_seed(out, seed, a.loop_s, a.cam_s, a.force)
            replay_seed(out, seed, a.force, a.timeout_s)
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            log(f"seed {seed} FAILED: {exc}")
            failed.append(seed)
    ok = [s for s in seeds if s not in failed]
    if not ok:
        raise SystemExit("no seed went through")
    a.results.mkdir(parents=True, exist_ok=True)
    systems = [("citybrain", out / "citybrain"), ("baseline", out / "gen" / "baseline")]
    systems.append(("baseline_strict", out / "gen" / "baseline_strict"))
    for system, sdir in systems:
        log(f"scoring {system} over {len(ok)} seed(s)")
        rep = score(out, sdir, ok, out / f"score_{system}_{seed_set(ok)}.json")
        rep["setting"] = {"system": system, "loop_s": a.loop_s, "cam_s": a.cam_s, "seeds": ok, "failed": failed}
        (a.results / result_name(system, a.loop_s, a.cam_s, ok)).write_text(json.dumps(rep, indent=1) + "\n")
    if failed:
        log(f"failed seeds: {failed} (logs under {out})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-6", help='e.g. "1 2 3" or "100-105"')
    ap.add_argument("--loop-s", type=int, default=30, help="loop reporting interval of the generated scenarios")
    ap.add_argument("--cam-s", type=int, default=60, help="camera reporting interval")
    ap.add_argument("--out", type=Path, default=None, help="default: $SUMO_OUT or .cache/corpus/<loop>-<cam>")
    ap.add_argument("--force", action="store_true", help="redo every step, even those already done")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="replay: give up after this long without progress")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "eval" / "corpus", help="score reports kept here")
    ap.add_argument("--table", type=Path, default=ROOT / "docs" / "eval" / "corpus.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "corpus_ttd_fa.png")
    ap.add_argument("--render-only", action="store_true", help="only render --table and --plot from --results")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = Path(os.environ.get("SUMO_OUT") or ROOT / ".cache" / "corpus" / f"{a.loop_s}-{a.cam_s}")
    if not a.render_only:
        measure(a)
    results = load_results(a.results)
    a.table.parent.mkdir(parents=True, exist_ok=True)
    a.table.write_text(render_page(results, plot_path=os.path.relpath(a.plot, a.table.parent)))
    log(f"wrote {a.table}")
    from bench.corpus_report import plot_ttd_fa

    if plot_ttd_fa(results, a.plot):
        log(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
