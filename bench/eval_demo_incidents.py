"""False incidents, suspicions and device faults in the simulated demo city, offline (no brokers).

``citybrain demo`` runs ``sensors_sim`` on ``roadnet.grid_city()`` with ``sensors_sim/scenarios/demo.json`` (a
blocked lane, a slowdown, three faulty loops) and feeds the events through the pipeline; here the same events go
straight into :class:`models.incidents.IncidentDetector`, one seed at a time (about 2 s per simulated hour).

Per seed it reports the confirmed incidents that match an injected one (same segment, from its start to 5 min
after its end) and the false ones (per simulated hour), the suspicions raised and expired and the most open at
once, and the device faults by kind (on the injected faulty loops and on others).

Run::

    .venv/bin/python -m bench.eval_demo_incidents [--seeds 7,1,2,3] [--hours 2] [-v]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python bench/eval_demo_incidents.py`
    sys.path.insert(0, str(ROOT))

import roadnet  # noqa: E402
from models.incidents import (  # noqa: E402
    FAULT,
    INCIDENT,
    SUSPECTED,
    SUSPICION_EXPIRED,
    IncidentDetector,
    parse_ts,
)
from sensors_sim import Simulator  # noqa: E402
from sensors_sim.scenario import load_scenario  # noqa: E402

DEMO_SCENARIO = ROOT / "sensors_sim" / "scenarios" / "demo.json"
#: The demo's simulated start (``citybrain demo`` starts yesterday at 06:30 UTC; the date does not matter).
START = datetime(2025, 1, 6, 6, 30, tzinfo=UTC)
#: An alarm on an injected incident's segment up to this long after its end still counts as that incident, s.
MATCH_AFTER_S = 300.0


def run_seed(seed: int, hours: float, verbose: bool = False) -> dict[str, Any]:
    """Simulate the demo city for ``hours`` with ``seed`` and score the detector's decisions.

    Parameters
    ----------
    seed : int
        The simulator's seed.
    hours : float
        Simulated hours.
    verbose : bool
        Print every false incident.

    Returns
    -------
    dict
        Counts: ``incidents``, ``true``, ``false``, ``injected``, ``detected``, ``suspected``, ``expired``,
        ``max_open_suspicions``, ``open_suspicions_at_end``, ``faults_injected`` (faults on injected loops by
        kind), ``faults_other`` (by kind).
    """
    G = roadnet.grid_city()
    sim = Simulator(G, START, seed=seed, scenario=load_scenario(DEMO_SCENARIO))
    det = IncidentDetector.from_graph(G)
    end_s = START.timestamp() + hours * 3600.0
    decisions: list[dict[str, Any]] = []
    while sim._next_tick <= end_s + 1e-9:
        _, events = sim.advance()
        for ev in events:
            if isinstance(ev, dict):
                decisions += det.process(ev)
    decisions += det.flush(end_s)
    truth = sim.incident_records()
    faulty = set(sim.faults)
    t0 = START.timestamp()
    incs = [d for d in decisions if d["type"] == INCIDENT]
    detected: set[str] = set()
    false: list[dict[str, Any]] = []
    for d in incs:
        ts = parse_ts(d["ts"]) - t0
        hit = [
            r
            for r in truth
            if r["segment_id"] == d["segment_id"] and r["start_s"] <= ts <= (r.get("end_s") or 1e12) + MATCH_AFTER_S
        ]
        if hit:
            detected |= {str(r["incident_id"]) for r in hit}
        else:
            false.append(d)
            if verbose:
                ev = d.get("evidence") or {}
                print(
                    f"  seed {seed} false {d['incident_id']} {d['lane']} at {ts:.0f} s: {ev.get('hypothesis')} "
                    f"{ev.get('corroboration')} {ev.get('scores')}",
                    file=sys.stderr,
                )
    open_now: set[str] = set()
    most = 0
    for d in decisions:
        # (before suspicions had ids and expired, a lane was suspected again only after its evidence had gone)
        key = d.get("incident_id") or f"{d['segment_id']}~{d.get('lane')}"
        if d["type"] == SUSPECTED:
            open_now.add(key)
            most = max(most, len(open_now))
        elif d["type"] == SUSPICION_EXPIRED:
            open_now.discard(key)
    faults = [d for d in decisions if d["type"] == FAULT]
    return {
        "incidents": len(incs),
        "true": len(incs) - len(false),
        "false": len(false),
        "injected": len(truth),
        "detected": len(detected),
        "suspected": sum(d["type"] == SUSPECTED for d in decisions),
        "expired": sum(d["type"] == SUSPICION_EXPIRED for d in decisions),
        "max_open_suspicions": most,
        "open_suspicions_at_end": len(open_now),
        "faults_injected": dict(Counter(d["fault"] for d in faults if d["detector_id"] in faulty)),
        "faults_other": dict(Counter(d["fault"] for d in faults if d["detector_id"] not in faulty)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the seeds and print one line each and the mean false incidents per simulated hour."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="7,1,2,3", help="simulator seeds (7 is the demo's)")
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours per seed")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the false incidents")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    print("seed  incidents  true  false  FA/h  injected  detected  suspected  expired  max-open  open@end  faults")
    total_false = 0
    for seed in seeds:
        r = run_seed(seed, a.hours, a.verbose)
        total_false += r["false"]
        print(
            f"{seed:>4}  {r['incidents']:>9}  {r['true']:>4}  {r['false']:>5}  {r['false'] / a.hours:>4.1f}  "
            f"{r['injected']:>8}  {r['detected']:>8}  {r['suspected']:>9}  {r['expired']:>7}  "
            f"{r['max_open_suspicions']:>8}  {r['open_suspicions_at_end']:>8}  "
            f"injected {r['faults_injected']} other {r['faults_other']}"
        )
    print(f"false incidents per simulated hour, mean over {len(seeds)} seeds: {total_false / a.hours / len(seeds):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
