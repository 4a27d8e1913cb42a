"""Where citybrain misses the corpus's incidents and where its false alarms come from (``bench.eval_corpus`` data).

For every seed of an ``eval_corpus`` output folder it matches citybrain's alarms to the true incidents with the
harness's rules (``score_incidents.py``: the incident's segment or a segment feeding it, from the start to
``grace`` after the end; alarms on a segment less than ``merge`` apart are one episode) and prints two tables:

- **missed incidents**: category, network family, demand, the segment's lanes, where the stall was, and what
  the loops of the incident lane read during the incident against the other lanes of the segment (the lane's
  share of the counted vehicles before and during, its zero steps, its mean speed), the camera's peak queue,
  how much of the incident the ground truth calls congested, and citybrain's own alerts on the segment
  (suspicions, device faults, late alarms);
- **false-alarm episodes**: run, segment, lane, the alarm's hypothesis and rules (from ``alerts_<run>.jsonl``,
  ``citybrain replay --alerts-out``), the truth at that minute (speed ratio, congested), a sensor fault or a
  true incident nearby, and the lane's last mid-link readings against its neighbours' (last ``READINGS`` steps).

Run::

    .venv/bin/python -m bench.corpus_explain --out .cache/corpus/30-60 --seeds 1-6 [--md docs/eval/corpus_explain.md]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.eval_corpus import parse_seeds

Rec = dict[str, Any]
READINGS = 4  # mid-link readings shown before a false alarm, per lane


def t_of(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def read_jsonl(path: Path) -> list[Rec]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def upstream_of(edges: list[Rec]) -> dict[str, set[str]]:
    """Edges feeding each edge (not its U-turn twin): the harness's ``--neighbours 1`` rule."""
    by_to: dict[str, list[Rec]] = defaultdict(list)
    for e in edges:
        by_to[e["to"]].append(e)
    return {e["id"]: {u["id"] for u in by_to[e["from"]] if u["from"] != e["to"]} for e in edges}


def matches(alarm_t: float, seg: str, inc: Rec, t0: float, up: dict[str, set[str]], grace_s: float) -> bool:
    if inc.get("start_s") is None:
        return False
    end = inc["end_s"] if inc.get("end_s") is not None else float("inf")
    segs = {inc["segment_id"]} | up.get(inc["segment_id"], set())
    return seg in segs and inc["start_s"] <= alarm_t - t0 <= end + grace_s


def episodes(alarms: list[Rec], merge_s: float) -> list[list[Rec]]:
    """Alarms (with ``_t``) on one segment less than ``merge_s`` apart form one episode (score_incidents.py)."""
    last: dict[str, list[Rec]] = {}
    eps: list[list[Rec]] = []
    for a in sorted(alarms, key=lambda a: a["_t"]):
        seg = a["segment_id"]
        if seg in last and a["_t"] - last[seg][-1]["_t"] < merge_s:
            last[seg].append(a)
        else:
            last[seg] = [a]
            eps.append(last[seg])
    return eps


def lane_share(loop_events: list[Rec], lane: str, t_from: float, t_to: float) -> tuple[float | None, int, int]:
    """The lane's share of the vehicles counted by the segment's mid-link loops in ``(t_from, t_to]``, the
    number of steps in which the lane read 0 while another lane counted, and the number of steps."""
    by_ts: dict[float, dict[str, int]] = defaultdict(dict)
    for e in loop_events:
        if t_from < e["_t"] <= t_to:
            by_ts[e["_t"]][e["lane"]] = int(e["count"])
    own = sum(v.get(lane, 0) for v in by_ts.values())
    total = sum(sum(v.values()) for v in by_ts.values())
    zeros = sum(1 for v in by_ts.values() if v.get(lane, 0) == 0 and sum(v.values()) > 0)
    return (own / total if total else None), zeros, len(by_ts)


class Seed:
    """One seed's scenario, truth, events and citybrain outputs."""

    def __init__(self, out: Path, seed: int) -> None:
        sd = out / "gen" / str(seed)
        self.seed = seed
        self.net = json.loads((sd / "scenario" / "network.json").read_text())
        self.meta = json.loads((sd / "scenario" / "scenario.json").read_text())
        self.t0 = t_of(self.meta["start_utc"])
        self.edges = {e["id"]: e for e in self.net["edges"]}
        self.up = upstream_of(self.net["edges"])
        self.truth = json.loads((sd / "incident" / "incidents.json").read_text())
        fpath = sd / "incident" / "sensor_faults.json"
        self.faults = json.loads(fpath.read_text()) if fpath.exists() else []
        self.sd, self.cd = sd, out / "citybrain" / str(seed)
        self._events: dict[str, dict[str, list[Rec]]] = {}
        self._gt: dict[str, dict[tuple[str, float], Rec]] = {}

    @property
    def family(self) -> str:
        return str(self.meta["params"].get("family"))

    @property
    def demand(self) -> str:
        return str(self.meta["params"].get("demand_level"))

    def events(self, run: str) -> dict[str, list[Rec]]:
        """Mid-link loop and camera events of a run, per segment (``_t`` = epoch seconds)."""
        if run not in self._events:
            by_seg: dict[str, list[Rec]] = defaultdict(list)
            for e in read_jsonl(self.sd / run / "events.jsonl"):
                if e["type"] == "camera" or e.get("role") == "mid_link":
                    e["_t"] = t_of(e["ts"])
                    by_seg[e["segment_id"]].append(e)
            self._events[run] = by_seg
        return self._events[run]

    def truth_at(self, run: str, seg: str, t: float) -> Rec | None:
        if run not in self._gt:
            self._gt[run] = {
                (g["segment_id"], t_of(g["ts_end"])): g for g in read_jsonl(self.sd / run / "ground_truth_edges.jsonl")
            }
        minute_end = self.t0 + 60 * (int((t - self.t0) // 60) + 1)
        return self._gt[run].get((seg, minute_end))

    def alerts(self, run: str) -> list[Rec]:
        out = read_jsonl(self.cd / f"alerts_{run}.jsonl")
        for a in out:
            a["_t"] = t_of(a["time"])
        return out

    def alarms(self, run: str) -> list[Rec]:
        out = read_jsonl(self.cd / f"alarms_{run}.jsonl")
        for a in out:
            a["_t"] = t_of(a["ts"])
        return out


def explain_miss(s: Seed, inc: Rec, alarms: list[Rec], alerts: list[Rec], grace_s: float) -> Rec:
    """What the detectors read during one missed incident, and what citybrain said about its segment."""
    seg, lane = inc["segment_id"], inc["lane"]
    e = s.edges[seg]
    start, end = s.t0 + inc["start_s"], s.t0 + (inc["end_s"] if inc.get("end_s") is not None else s.meta["end_s"])
    evs = s.events("incident").get(seg, [])
    loops = [x for x in evs if x["type"] == "loop"]
    share_before, _, _ = lane_share(loops, lane, start - 900, start)
    share_during, zeros, steps = lane_share(loops, lane, start, end)
    speeds = [x["speed_kmh"] for x in loops if x["lane"] == lane and start < x["_t"] <= end and x["speed_kmh"]]
    cams = [x for x in evs if x["type"] == "camera"]
    q_before = max((x["queue_max_veh"] for x in cams if start - 900 < x["_t"] <= start), default=None)
    q_during = max((x["queue_max_veh"] for x in cams if start < x["_t"] <= end), default=None)
    cong = [s.truth_at("incident", seg, t) for t in range(int(start) + 60, int(end), 60)]
    cong_share = sum(1 for g in cong if g and g["congested"]) / max(len(cong), 1)
    on_seg = [a for a in alerts if a["data"].get("segment_id") == seg and start - 60 <= a["_t"] <= end + grace_s]
    said = sorted({a["type"].replace("incident.", "").replace("device_fault.", "fault.") for a in on_seg})
    late = [a for a in alarms if a["segment_id"] == seg and a["_t"] > end + grace_s]
    if late:
        said.append(f"alarm {len(late)}x after the window")
    lane_len = next((d["length_m"] for d in e["lane_detail"] if d["id"] == lane), e["length_m"])
    where = (
        f"{inc['from_pos_m']:.0f}-{inc['to_pos_m']:.0f} m"
        if inc.get("from_pos_m") is not None
        else ("–" if inc.get("pos_m") is None else f"{inc['pos_m']:.0f} m")
    )
    loop_pos = next((d["pos_m"] for d in s.net["detectors"] if d["id"] == f"loop_mid_{lane}"), None)
    return {
        "seed": s.seed,
        "family": s.family,
        "demand": s.demand,
        "category": inc.get("category") or inc["kind"],
        "incident": f"{inc['incident_id']} {lane}",
        "lanes": e["lanes"],
        "turns": turns(e, lane),
        "where": f"{where} of {lane_len:.0f} m",
        "vs mid loop": relative_to_loop(inc, loop_pos),
        "minutes": round((end - start) / 60),
        "share before → during": f"{_pct(share_before)} → {_pct(share_during)}",
        "zero steps": f"{zeros}/{steps}",
        "lane speed km/h": f"{sum(speeds) / len(speeds):.0f}" if speeds else "–",
        "cam queue before / during": f"{_n(q_before)} / {_n(q_during)}",
        "truth congested": _pct(cong_share),
        "citybrain on segment": ", ".join(said) or "–",
    }


def explain_false(s: Seed, run: str, ep: list[Rec], alerts: list[Rec]) -> Rec:
    """The first alarm of a false episode: its evidence, the truth, faults and incidents nearby, the readings."""
    a = ep[0]
    seg, lane, t = a["segment_id"], a.get("lane"), a["_t"]
    new = next((x for x in alerts if x["type"] == "incident.new" and x["data"].get("segment_id") == seg
                and abs(x["_t"] - t) < 1), None)  # fmt: skip
    ev = (new or {}).get("data", {}).get("evidence", {})
    g = s.truth_at(run, seg, t - 1)
    rel = t - s.t0
    rules = "+".join(ev.get("rules", []))
    truth = "–" if not g or g["speed_ratio"] is None else f"{g['speed_ratio']:.2f}, {g['congested']}"
    run_faults = s.faults if run == "incident" else []  # the faults exist only in the incident run
    faults = [f for f in run_faults if f["segment_id"] == seg and f["start_s"] <= rel <= f["end_s"] + 300]
    faults_up = [
        f
        for f in run_faults
        if f["start_s"] <= rel <= f["end_s"] + 300
        and (seg in s.up.get(f["segment_id"], set()) or f["segment_id"] in s.up.get(seg, set()))
    ]
    near = []
    if run == "incident":
        for inc in s.truth:
            if inc.get("start_s") is None or not inc["start_s"] - 300 <= t - s.t0 <= (inc["end_s"] or 1e9) + 900:
                continue
            if (
                seg in s.up.get(inc["segment_id"], set())
                or inc["segment_id"] in s.up.get(seg, set())
                or any(seg in s.up.get(u, set()) for u in s.up.get(inc["segment_id"], set()))
            ):
                near.append(inc["incident_id"])
    span = READINGS * int(s.meta["loop_interval_s"])
    loops = [x for x in s.events(run).get(seg, []) if x["type"] == "loop" and t - span < x["_t"] <= t]
    reads: dict[str, list[str]] = defaultdict(list)
    for x in sorted(loops, key=lambda x: (x["lane"], x["_t"])):
        sp = "" if x["speed_kmh"] is None else f"@{x['speed_kmh']:.0f}"
        reads[x["lane"]].append(f"{x['count']}{sp}")
    others = "; ".join(" ".join(v) for k, v in sorted(reads.items()) if k != lane)
    return {
        "seed": s.seed,
        "family": s.family,
        "run": run,
        "segment (lanes)": f"{seg} ({s.edges[seg]['lanes']})",
        "lane (turns)": f"{lane or '–'} ({turns(s.edges[seg], lane)})",
        "min": round((t - s.t0) / 60),
        "hypothesis / rules": f"{ev.get('hypothesis', '?')} / {rules} ({ev.get('section', '?')})",
        "truth ratio, congested": truth,
        "cause nearby": ", ".join(
            [f"fault {f['kind']} {f['detector_id']}" for f in faults]
            + [f"fault next door {f['kind']}" for f in faults_up if f not in faults]
            + [f"incident {i}" for i in near]
        )
        or "–",
        f"lane / other lanes, last {READINGS} readings (count@km/h)": f"{' '.join(reads[lane or ''])} / {others}",
    }


def relative_to_loop(inc: Rec, loop_pos: float | None) -> str:
    """Where the stall or slowed stretch is against the lane's mid-link loop: upstream, covering, downstream."""
    lo = inc["from_pos_m"] if inc.get("from_pos_m") is not None else inc.get("pos_m")
    hi = inc["to_pos_m"] if inc.get("to_pos_m") is not None else inc.get("pos_m")
    if loop_pos is None or lo is None or hi is None:
        return "–"
    if hi < loop_pos:
        return f"upstream ({loop_pos:.0f} m)"
    return f"downstream ({loop_pos:.0f} m)" if lo > loop_pos else f"covers ({loop_pos:.0f} m)"


def turns(edge: Rec, lane: str | None) -> str:
    """The lane's movements (``l``, ``s``, ``r``) from ``network.json``."""
    d = next((d for d in edge["lane_detail"] if d["id"] == lane), None)
    return "".join(sorted(d.get("turns") or [])) if d else "?"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _n(x: Any) -> str:
    return "–" if x is None else str(x)


def md_table(rows: list[Rec]) -> str:
    if not rows:
        return "(none)\n"
    head = list(rows[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(out) + "\n"


def explain(out: Path, seeds: list[int], grace_s: float = 300, merge_s: float = 300) -> tuple[list[Rec], list[Rec]]:
    misses, falses = [], []
    for seed in seeds:
        s = Seed(out, seed)
        for run in ("incident", "normal"):
            alarms, alerts = s.alarms(run), s.alerts(run)
            truth = s.truth if run == "incident" else []
            if run == "incident":
                for inc in truth:
                    if inc.get("start_s") is None:
                        continue
                    if not any(matches(a["_t"], a["segment_id"], inc, s.t0, s.up, grace_s) for a in alarms):
                        misses.append(explain_miss(s, inc, alarms, alerts, grace_s))
            for ep in episodes(alarms, merge_s):
                if not any(matches(a["_t"], a["segment_id"], inc, s.t0, s.up, grace_s) for a in ep for inc in truth):
                    falses.append(explain_false(s, run, ep, alerts))
    return misses, falses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="an eval_corpus output folder (gen/, citybrain/)")
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--md", type=Path, default=None, help="also append the tables to this markdown file")
    a = ap.parse_args(argv)
    misses, falses = explain(a.out, parse_seeds(a.seeds))
    text = (
        f"### {a.out.name}, seeds {a.seeds}: missed incidents ({len(misses)})\n\n{md_table(misses)}\n"
        f"### {a.out.name}, seeds {a.seeds}: false-alarm episodes ({len(falses)})\n\n{md_table(falses)}"
    )
    print(text)
    if a.md:
        with open(a.md, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
