"""Streaming incident detection per road segment, from loop and camera readings (device schema v1).

Pure Python (``math`` only): no Faust, Kafka or files. One segment's detector is a JSON-able ``state`` dict
plus a read-only ``cfg`` dict built from network metadata; every device event of the segment goes through
:func:`update_segment`, which returns *decisions* (dicts). :class:`IncidentDetector` wraps the per-segment
functions for a whole network (bench, tests, a single-process worker).

Interface (per-segment Faust agent)
-----------------------------------
::

    cfgs = segment_configs_from_graph(G)                  # once: dict segment_id -> cfg (JSON-able)
    state = new_segment_state(cfgs[sid])                  # per segment, keep in a changelogged table
    decisions = update_segment(cfgs[sid], state, event, downstream=summaries)   # per event, in time order
    decisions += flush_segment(cfgs[sid], state, now_s)   # on idle timers (closes a step missing a reading)
    summaries[sid] = segment_summary(cfgs[sid], state)    # ~100 bytes, shareable (e.g. a compacted topic)

``downstream`` (optional) maps the ids in ``cfg["downstream"]`` to their latest summaries. It is used only
to annotate an alarm as probable spill-back of an incident already open downstream; all evidence is local.

Decisions
---------
- ``{"type": "incident", "incident_id", "segment_id", "lane", "lanes", "start_ts", "detected_ts", "ts",
  "severity" (low/medium/high), "confidence" (0-1), "delay_s_per_veh", "delay_veh_h_per_h",
  "evidence": {"hypothesis", "rules", "corroboration", "detectors", "scores", "section"}}``: raised once per
  episode. ``ts`` = ``detected_ts`` = the event time of the reading that made the decision possible;
  ``start_ts`` = the start of the interval in which the evidence began (estimated onset).
- ``{"type": "incident_updated", "incident_id", "segment_id", "lane", "lanes", "start_ts", "ts", "severity",
  "delay_s_per_veh", "delay_veh_h_per_h", "changes", "update_seq"}`` when an open incident changes: another
  lane of the segment is raised while it is open (it joins that incident: ``changes`` has ``lanes``), one of
  its lanes clears while others stay blocked (``lanes``), or its severity rises (``severity``).
  ``update_seq`` numbers the segment's updates (stable across a replay of the same stream).
- ``{"type": "incident_cleared", "incident_id", "segment_id", "lane", "lanes", "start_ts", "ts",
  "duration_s"}`` when the signature has disappeared (from its last lane).
- ``{"type": "incident_suspected", "incident_id" (``{segment}#s{n}``), "segment_id", "kind", "lane", "lanes",
  "detector_id", "ts", "suspected_ts", "start_ts", "evidence"}``: a lane reads exact zeros while its neighbours
  flow, and nothing yet tells a blocked lane from a dead loop (for an operator to check on CCTV; not an alarm).
- ``{"type": "incident_suspicion_expired", ...the same fields..., "reason", "duration_s"}`` ends it, once:
  ``confirmed`` (an incident was raised on the lane; ``confirmed_incident_id``), ``device_fault`` (its loop is
  faulty), ``evidence_gone`` (below ``CLEAR_EVIDENCE``), ``lane_counts_again`` (the loop counted again and the
  evidence is below ``H_FAST``) or ``unconfirmed`` (nothing settled it within ``SUSPICION_MAX_S``).
- ``{"type": "device_fault", "segment_id", "detector_id", "lane", "fault", "ts", "since_ts", "evidence"}``
  with ``fault`` one of ``silent``, ``stuck``, ``zero``, ``implausible``; ``{"type": "device_restored", ...}``
  when the device reports plausibly again. A faulty device is excluded from every incident rule.

Rules (evidence in nats: log-likelihood ratios accumulated in one-sided CUSUMs, ``J = max(0, J + llr)``)
------------------------------------------------------------------------------------------------------
Loops are grouped per segment into *sections* (same role: mid-link, stop-line), one loop per lane. Every loop
interval (a *step*, 30 s here) is evaluated as soon as all expected loops of the segment have reported.
Per lane and section, three hypotheses each have a CUSUM of the sum of their per-step LLRs (one CUSUM per
hypothesis, so that the channels' noise cancels instead of adding up):

1. **Lane starvation** (all hypotheses): the share ``p`` of the section's vehicles using the lane is learned
   online (exponential forgetting, paused while anything is suspicious). Under a hypothesis the lane keeps
   only ``rho`` of it (binomial, ``rho`` = ``RHO_BLOCK``, ``RHO_PARTIAL``, ``RHO_SLOW``); the null is the
   beta-binomial of the learned share (concentration capped at ``SHARE_CONC_MAX``: shares drift, platoons
   pick lanes together). A blocked lane empties while its neighbours fill.
2. **Lane balance** (``block``, ``partial``; upstream/downstream along the lane): the lane's count at this
   loop against the same lane's loop downstream (learned ratio, the upstream count averaged over two steps
   for the travel time and the red). Drivers leave a blocked lane before the upstream loop and re-enter
   after the stall, so the downstream loop keeps counting; a random lull empties both.
3. **Slow lane** (``slow``): vehicles passing under ``VERY_SLOW_FRAC`` / ``SLOW_FRAC`` of the limit, or a
   standing vehicle on the loop, while the other lanes are not queued; a free-speed vehicle refutes it.
4. **Camera stall** (``block``, ``partial``; segment level): the halting-vehicle count at the camera's
   timestamp against that approach's learned rate *at the same position in the signal cycle* (the prior comes
   from the signal plan: a queue is expected during red, not after 20 s of green). A stalled vehicle in the
   zone keeps it >= 1. No evidence when the zone filled up during the interval (demand) or a stop-line loop
   was held most of the interval (a turn waiting for a gap).

Sections within ``MIN_EVIDENCE_DIST_M`` of the stop line (signal queues) only serve as references. A lane
raises an incident when its best CUSUM reaches ``H_RAISE`` (or ``H_FAST`` when evidence independent of the
loops agrees: a camera hint ``C_HINT`` or slow vehicles), **and** the evidence cannot be a dead loop (a loop
reading exact zeros is a blocked lane, a lull or a dead loop). Not dead: the loop counted during the episode
and has read at most ``ALIVE_MAX_ZERO_STEPS`` *informative* zeros in it (zeros while the other lanes counted:
a dropout that ends does not vouch for the evidence its zeros built; a loop held the whole interval with
nothing counted may be stuck on and is no sign of life), slow vehicles were seen passing, or flow is conserved
(rule 5): ``F >= F_CORROBORATE``, or ``F`` plus the camera's stall evidence ``>= FC_CORROBORATE``, unless the
latest readings favour a dead loop (a CUSUM, ``DIED_SINCE``). Conservation only vouches for the run up to its
latest reference reading, so the lane evidence it confirms is the one at that reading (a loop that dies after
a lull reads zeros that no reference has checked yet). Until then an ``incident_suspected`` decision says a
lane is empty:

5. **Conservation** (blocked lane vs dead loop): while a loop reads exact zeros, the other lanes' count at
   its section is compared with (a) the camera's entering count over its interval (every vehicle entering
   the zone crossed the section seconds earlier: the residual is 0 +- 1 vehicle) and (b) the reference
   section's total over one signal cycle ending mid-green (the queue is served then). Both residuals'
   pmfs are learned per section while quiet (``CONS_*``, ``REF_*``). A blocked lane moved its vehicles to the
   other lanes, so the residual keeps its pmf; a dead loop loses ``X ~ Binomial(count, p)`` of them, which
   shifts it. The LLR of each window whose whole span the zero run covers (capped ``CONS_LLR_CAP``) adds to
   ``F``; ``F <= -F_FAULT`` (with the lane starved) makes the loop a ``zero`` device fault.

A camera stall alone raises at ``H_CAMERA_ONLY`` (lane unknown). An incident clears when, for
``CLEAR_STEPS`` steps, the raised hypothesis' evidence is below ``CLEAR_EVIDENCE`` (or below
``CLEAR_EVIDENCE_BACK`` with the lane carrying half its share again) and a healthy camera shows no halting
vehicle at its latest clear position (or has no stall evidence left; ``CLEAR_NEEDS_CAMERA``). The loop alone
is not enough: a stall downstream of the loop soon has drivers queueing behind it in its lane, so the loop
counts again while the car still stands. CUSUMs are capped (``J_CAP``, ``C_CAP``) so that clearing is not
delayed.

Device health (own, O(1) per reading): ``silent`` after ``SILENT_INTERVALS`` intervals without a reading;
``stuck`` after ``STUCK_REPEATS`` identical readings with vehicles (untrusted from the first repeat), or
``STUCK_ON_REPEATS`` identical fully occupied ones (a standing vehicle until then); ``zero`` by rule 5, or
after ``ZERO_LONG_STEPS`` exact-zero steps with ``ZERO_LONG_DUE_VEH`` of the lane's vehicles due (log P(zeros)
<= -ZERO_LONG_DUE_VEH, the lane's learned share uncertain) and no confirmation as a blocked lane;
``implausible`` (more than one vehicle per second, speed far above the limit, vehicles with no occupancy).
Missing or untrusted readings never count as zeros.
(``models.detector_health`` classifies per 60-s window from a ``SegmentModel``; this per-step rule set is
self-contained so that a blocked lane, whose loops *disagree* exactly like a dead loop's, is told apart by
rule 5: its ``disagrees`` rule flags the blocked lane's upstream loop in the harness's INC4.)

Univariate baseline: :func:`new_baseline_state` / :func:`update_baseline` flag one detector series far from
its own hour-of-day baseline (robust z-score CUSUM). It needs days of history, so it is not part of the
segment rules above; it is what runs on single-detector archives such as the MnDOT series.

Cost: state is O(lanes x sections) numbers per segment (about 3 kB as JSON for two lanes and two sections);
an event costs a few dict operations, a step and a camera reading O(lanes) (a conservation test of a loop in
an exact-zero run O(count x residual support)): about 17-20 µs per event in CPython 3.11 (harness runs; 25-30
µs before the hot path, :func:`_step`, was written with locals and inline comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from math import lgamma, log
from typing import Any

# ---------------------------------------------------------------------------------------------- parameters
#: Share of its normal flow a lane still passes at a loop upstream of a full blockage (hypothesis "block").
RHO_BLOCK = 0.05
#: Share a partly avoided lane still passes (hypothesis "partial": heavy traffic queues behind the stall).
RHO_PARTIAL = 0.3
#: Share a slowed lane still passes (hypothesis "slow": drivers avoid a crawling lane).
RHO_SLOW = 0.3
#: Pseudo-vehicles of the uniform prior on a section's lane shares.
SHARE_PRIOR_VEH = 4.0
#: Half-life of the learned lane shares, in vehicles counted at the section.
SHARE_HALF_LIFE_VEH = 300.0
#: Largest concentration (vehicles) of the beta-binomial lane-share null: shares drift and platoons choose
#: lanes together, so even a long history does not make a lane's count binomial.
SHARE_CONC_MAX = 200.0
#: Vehicles (forgetting included) a section must have seen before its starvation terms arm.
SHARE_MIN_VEH = 30.0
#: Largest lane share used in the LLR (avoids log(0) on a lane that carries everything).
SHARE_MAX = 0.95
#: Pseudo-vehicles of the prior ratio 1 between a lane's upstream and downstream loop counts.
LANE_RATIO_PRIOR_VEH = 10.0
#: Downstream-loop vehicles (forgetting included) a lane must have seen before its balance term arms.
LANE_RATIO_MIN_VEH = 10.0
#: Forgetting per step of the learned lane ratio.
LANE_RATIO_FORGET = 0.99
#: Learning (shares, ratios, kappa, camera rates) pauses while any lane evidence exceeds this, nats.
LEARN_MAX_EVIDENCE = 2.0
#: Evidence needed to raise an incident on a lane, nats.
H_RAISE = 7.0
#: Evidence that raises early when evidence independent of the loops agrees (camera hint, slow vehicles).
H_FAST = 5.0
#: Camera evidence of one halting vehicle where the queue should have been served (a hint), nats: ln(0.95 / 0.15)
#: = 1.85 just after a long green (``P_QUEUE_AFTER_GREEN``), up to ``CAMERA_LLR_CAP`` later in green.
C_HINT = 1.5
#: Camera-only evidence needed to raise an incident with unknown lane, nats.
H_CAMERA_ONLY = 7.0
#: Raise on exact-zero starvation only once a dead loop is ruled out (False trades fault safety for speed).
REQUIRE_NOT_DEAD = True
#: A loop is alive (not dead) if it counted during the episode and has read at most this many informative
#: exact-zero steps since (zeros while the section's other lanes counted vehicles).
ALIVE_MAX_ZERO_STEPS = 1
#: Conservation LLR (nats) that rules out a dead loop on its own (odds e^1.75 ~ 6 : 1; one clean camera window
#: of a lane with a fair share gives about 2), and with the camera's stall CUSUM added (weight 0 disables).
F_CORROBORATE = 1.75
FC_CORROBORATE = 3.0
CAMERA_NOT_DEAD_WEIGHT = 1.0
#: A loop whose latest conservation readings favour a dead loop by this much (nats; a CUSUM) may have died
#: since its older readings vouched for it (a lull, then a fault): ``F`` confirms nothing until they recover.
DIED_SINCE = 1.5
#: Camera CUSUM (nats) reported as ``camera_stall`` (it also holds an incident open); not a dead-loop test
#: on its own (a turn waiting at a clear position looks the same).
C_CORROBORATE = 4.0
#: Conservation LLR (nats, negative) and exact-zero steps that make a starved loop a ``zero`` device fault.
F_FAULT = 4.0
ZERO_MIN_STEPS = 4
#: A loop reading exact zeros for this many steps while this many of its lane's vehicles were due (share x
#: other lanes' count, Poisson P(0) = e^-10; as a bound on log P(0) in nats with the share's uncertainty, so that
#: a share learned from a few vehicles does not make a long lull improbable) and never confirmed as a blocked
#: lane is a ``zero`` fault.
ZERO_LONG_STEPS = 30
ZERO_LONG_DUE_VEH = 10.0
#: Vehicles a lane's loop must have counted (forgetting included) for its own share to be trusted in the
#: conservation test; below, the lane's share at the reference section is used (a loop dead from the start).
LANE_SEEN_VEH = 5.0
#: Camera conservation (rule 5): residual support (vehicles), prior pmf by |residual| and its weight
#: (readings), probability floor, tail decay per vehicle beyond the support, and the LLR cap per reading.
CONS_K = 4
CONS_PRIOR = (0.4, 0.2, 0.06, 0.02, 0.01)
CONS_PRIOR_WEIGHT = 6.0
CONS_FLOOR = 0.01
CONS_TAIL = 0.3
CONS_LLR_CAP = 3.0
#: Conservation against the reference section (stop-line counts lag by up to a cycle; off: camera only):
#: window in steps when the approach has no signal plan (else one cycle, 2-6 steps, ending mid-green), prior
#: residual pmf by |residual| (wider than the camera's) and forgetting per window of the learned pmf.
REF_CONSERVATION = True
REF_WINDOW_STEPS = 3
REF_PRIOR = (0.25, 0.17, 0.1, 0.05, 0.04)
REF_FORGET = 0.97
#: Learning rate per step of a section's mean flow (vehicles per step; for the delay estimate).
FLOW_ALPHA = 0.05
#: Learning rate per step of a section's current flow, learned always (an open incident's severity follows
#: the demand arriving now, not the flow learned before it).
FLOW_NOW_ALPHA = 0.2
#: Prior weight (vehicles) of the cross-section ratio kappa = 1 (vehicles are conserved along a link).
KAPPA_PRIOR_VEH = 40.0
#: Clearing: lane evidence below CLEAR_EVIDENCE (nats) for ``CLEAR_STEPS`` steps in a row, or below
#: CLEAR_EVIDENCE_BACK with the lane's recent share back to half its learned share (recent counts decayed by
#: ``RECOVERY_DECAY`` per step); the camera must not show a stall.
CLEAR_EVIDENCE = 1.0
CLEAR_EVIDENCE_BACK = 4.0
CLEAR_STEPS = 2
#: Clearing also needs the camera to show the zone served at its latest clear position (or no stall evidence).
CLEAR_NEEDS_CAMERA = True
RECOVERY_DECAY = 0.7
#: Caps of the lane and camera CUSUMs (nats): evidence far beyond the thresholds only delays the clearing.
J_CAP = 10.0
C_CAP = 10.0
#: Slow-lane terms: speed fractions of the limit, standing occupancy (0-1), other lanes' max occupancy (0-1).
VERY_SLOW_FRAC = 0.2
SLOW_FRAC = 0.35
FREE_FRAC = 0.6
STANDING_OCC = 0.04
OTHERS_FREE_OCC = 0.15
#: Slow-lane log-likelihood ratios per reading, nats.
LLR_VERY_SLOW = 4.0
LLR_SLOW = 1.0
LLR_STANDING = 1.5
LLR_FREE = -3.0
#: Sections closer than this to the stop line see signal queues: they give lane evidence only when the
#: segment has no other section, m.
MIN_EVIDENCE_DIST_M = 30.0
#: Camera stall: P(queue >= 1 at ts | stalled vehicle in the zone), learned-rate bins per cycle, prior weight.
P_STALL_QUEUE = 0.95
CAMERA_BINS = 12
CAMERA_PRIOR_WEIGHT = 4.0
CAMERA_FORGET = 0.98
#: Largest camera evidence from one reading, nats: one halting vehicle at a clear position is not enough.
CAMERA_LLR_CAP = 2.5
#: A camera whose queue reached this share of the zone's storage (zone length x lanes / jam spacing, m)
#: during the interval is saturated: a residual queue there is demand, not a stall (no evidence).
SATURATED_QUEUE_SHARE = 0.6
JAM_SPACING_M = 7.5
#: A stop-line loop occupied this share (0-1) of its interval at a "clear" camera timestamp: a vehicle is held
#: at the line (a turn waiting for a gap, a cycle failure), which explains a halting vehicle: no evidence.
STOP_LINE_HELD_OCC = 0.5
#: Prior P(queue >= 1) at a camera timestamp: after CLEAR_GREEN_S of green / just after green / in red.
CLEAR_GREEN_S = 20.0
P_QUEUE_CLEAR = 0.08
P_QUEUE_AFTER_GREEN = 0.15
P_QUEUE_RED = 0.6
P_QUEUE_UNSIGNALISED = 0.1
#: Device health: intervals without a reading that make a device silent; identical readings with vehicles
#: that make it stuck; most vehicles per second per lane; speeds above this multiple of the limit (+20 km/h).
SILENT_INTERVALS = 2.5
STUCK_REPEATS = 3
#: Identical readings with no vehicle leaving a loop held at least STANDING_HELD_OCC of the interval (a
#: vehicle standing on it) that make it stuck-on.
STUCK_ON_REPEATS = 20
STANDING_HELD_OCC = 0.9
MAX_VEH_PER_S = 1.0
MAX_SPEED_FACTOR = 2.0
#: Delay model: saturation flow, veh/h/lane; lane-change friction, s/veh; horizon of an overflow queue, s.
SAT_FLOW_VEH_H_LANE = 1800.0
LANE_CHANGE_FRICTION_S = 2.0
DELAY_HORIZON_S = 900.0

#: A suspicion that neither its evidence, the loop's health nor a confirmation has settled within this long
#: (s of stream time) expires; the lane is not suspected again until its evidence has gone.
SUSPICION_MAX_S = 600.0

#: Version of the state layout (older states are upgraded in place on their next event).
STATE_VERSION = 4

INCIDENT, CLEARED, SUSPECTED = "incident", "incident_cleared", "incident_suspected"
SUSPICION_EXPIRED = "incident_suspicion_expired"
UPDATED = "incident_updated"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}
FAULT, RESTORED = "device_fault", "device_restored"
SILENT, STUCK, ZERO, IMPLAUSIBLE = "silent", "stuck", "zero", "implausible"
#: Hypotheses per lane: name -> share of the lane's flow still passing the upstream loop.
HYPOTHESES = {"block": RHO_BLOCK, "partial": RHO_PARTIAL, "slow": RHO_SLOW}

# ---------------------------------------------------------------------------------------------- time


_TS_CACHE: dict[str, int] = {}


def parse_ts(ts: Any) -> int:
    """Unix seconds of an ISO 8601 UTC timestamp (``YYYY-MM-DDThh:mm:ssZ``) or of a number of seconds.

    Recent strings are memoised: a stream carries each timestamp hundreds of times.
    """
    if isinstance(ts, int | float):
        return int(ts)
    s = str(ts)
    v = _TS_CACHE.get(s)
    if v is None:
        v = int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())
        if len(_TS_CACHE) > 4096:
            _TS_CACHE.clear()
        _TS_CACHE[s] = v
    return v


def format_ts(epoch_s: float) -> str:
    """ISO 8601 UTC (``YYYY-MM-DDThh:mm:ssZ``) of Unix seconds."""
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- config


def _signal_of(G: Any, segment_id: str) -> dict[str, Any] | None:
    """Cycle (s), offset (s) and green windows (s within the cycle) of the approach ``segment_id``."""
    for tl in (G.graph.get("traffic_lights") or {}).values():
        for ap in tl.get("approaches", []):
            if ap.get("segment_id") != segment_id:
                continue
            cycle = float(tl.get("cycle_s") or 0.0)
            if cycle <= 0:
                return None
            t = 0.0
            windows: list[list[float]] = []
            greens = set(ap.get("green_phases") or [])
            for ph in tl.get("phases", []):
                d = float(ph.get("duration_s") or 0.0)
                if ph.get("index") in greens:
                    windows.append([t, t + d])
                t += d
            return {"cycle_s": cycle, "offset_s": float(tl.get("offset_s") or 0.0), "green": windows}
    return None


def segment_configs_from_graph(G: Any) -> dict[str, dict[str, Any]]:
    """Per-segment detector configuration from a ``citybrain-roadnet/1`` graph (network metadata only).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        From ``roadnet.load_trafficnet`` (see ``docs/roadnet-contract.md``).

    Returns
    -------
    dict of str to dict
        Segment id → JSON-able config: lanes, length (m), speed limit (km/h), capacity (veh/h), loops
        grouped in sections by role (position m, distance to the stop line m, lane index → loop id, the
        nearest other section as flow reference, the next section downstream), the evidence sections, the
        camera, the approach's signal timing, upstream and downstream segment ids.
    """
    dets = G.graph.get("detectors") or {}
    by_seg: dict[str, list[dict[str, Any]]] = {}
    for d in dets.values():
        by_seg.setdefault(str(d["segment_id"]), []).append(d)
    out: dict[str, dict[str, Any]] = {}
    for u, v, sid, e in G.edges(keys=True, data=True):
        lanes = int(e.get("lanes") or 1)
        lane_ids = [str(x["lane_id"]) for x in sorted(e.get("lane_detail") or [], key=lambda x: x["index"])]
        if len(lane_ids) != lanes:
            lane_ids = [f"{sid}#{i}" for i in range(lanes)]
        length = float(e["length_m"])
        loops: dict[str, list[Any]] = {}
        sections: dict[str, dict[str, Any]] = {}
        camera: dict[str, Any] | None = None
        for d in sorted(by_seg.get(str(sid), []), key=lambda d: str(d["detector_id"])):
            if d.get("kind") == "camera":
                camera = {
                    "id": str(d["detector_id"]),
                    "interval_s": float(d.get("interval_s") or 60.0),
                    "zone_m": float(d.get("zone_length_m") or 100.0),
                    "pos_m": float(d.get("pos_m") or 0.0),
                }
                continue
            li = int(d.get("lane_index") or 0)
            if li >= lanes:
                continue
            role = str(d.get("role") or "loop")
            pos = float(d.get("pos_m") or 0.0)
            dist = d.get("dist_to_stop_line_m")
            sec = sections.setdefault(
                role,
                {"pos_m": pos, "dist_m": float(dist) if dist is not None else length - pos, "lanes": {}},
            )
            sec["lanes"][str(li)] = str(d["detector_id"])
            loops[str(d["detector_id"])] = [role, li, float(d.get("interval_s") or 30.0)]
        names = sorted(sections, key=lambda r: sections[r]["pos_m"])
        for k, r in enumerate(names):
            others = [o for o in names if o != r]
            sections[r]["ref"] = (
                min(others, key=lambda o: abs(sections[o]["pos_m"] - sections[r]["pos_m"])) if others else None
            )
            sections[r]["down"] = names[k + 1] if k + 1 < len(names) else None
        for r in names:
            sections[r]["lane_list"] = sorted([int(li), det] for li, det in sections[r]["lanes"].items())
        far = [r for r in names if sections[r]["dist_m"] >= MIN_EVIDENCE_DIST_M]
        upstream = sorted({str(k) for a, _, k in G.in_edges(u, keys=True) if a != v})
        signal = _signal_of(G, str(sid)) if e.get("signalised_end") else None
        step_s = min((float(m[2]) for m in loops.values()), default=30.0)
        win = REF_WINDOW_STEPS
        target = None
        if signal is not None and signal["green"]:
            win = max(2, min(6, round(float(signal["cycle_s"]) / step_s)))
            gs, ge = max(signal["green"], key=lambda g: g[1] - g[0])
            target = 0.5 * (gs + ge)  # windows end mid-green: the queue is served, vehicles pass freely
        downstream = sorted({str(k) for _, b, k in G.out_edges(v, keys=True) if b != u})
        out[str(sid)] = {
            "segment_id": str(sid),
            "lanes": lanes,
            "lane_ids": lane_ids,
            "length_m": length,
            "speed_limit_kmh": float(e["speed_limit_kmh"]),
            "capacity_veh_h": float(e.get("capacity_veh_h") or lanes * SAT_FLOW_VEH_H_LANE),
            "signalised_end": bool(e.get("signalised_end")),
            "loops": loops,
            "step_s": step_s,
            "sections": sections,
            "evidence_sections": far or names,
            "camera": camera,
            "signal": signal,
            "ref_window_steps": win,
            "ref_window_end_pos_s": target,
            "upstream": upstream,
            "downstream": downstream,
        }
    return out


# ---------------------------------------------------------------------------------------------- state


def new_segment_state(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """An empty, JSON-able detector state for one segment.

    Keys: ``t`` (current step, Unix s), ``now`` (latest stream time, s), ``pend`` (readings of the step),
    ``d`` (per loop: last reading s, signature, repeats, exact-zero run, conservation LLR ``F``, fault),
    ``x`` (per section: learned lane counts ``n``, kappa sums ``k``, flow ``tot``, per lane: ratio sums
    ``r`` to the downstream loop, previous count ``mp``, per hypothesis CUSUMs ``J`` and their starts
    ``z0``, ``alive``), ``cam`` (camera health, per-bin queue rates ``b``), ``C`` (camera CUSUM, nats),
    ``open``/``clear`` (open incidents by lane; lanes of one incident share its id), ``flow`` (veh/h),
    ``seq`` (incidents raised), ``useq`` (updates reported).
    """
    n = int(cfg["lanes"])
    x = {
        name: {
            "n": [0.0] * n,
            "k": [0.0, 0.0],
            "tot": 0.0,
            "tn": 0.0,
            "r": [[0.0, 0.0] for _ in range(n)],
            "mp": [0.0] * n,
            "J": {h: [0.0] * n for h in HYPOTHESES},
            "z0": {h: [None] * n for h in HYPOTHESES},
            "sv": [0] * n,
            "acc": 0.0,
            "accn": 0,
            "kc": [0.0, 0.0],
            "e": [0.0] * (2 * CONS_K + 1),
            "er": [0.0] * (2 * CONS_K + 1),
            "wl": [0.0, 0.0, 0],
        }
        for name in cfg["sections"]
    }
    cam = None
    if cfg.get("camera"):
        cam = {"last": None, "sig": None, "rep": 0, "fault": None, "b": [[0.0, 0.0] for _ in range(CAMERA_BINS)]}
    return {
        "t": None,
        "now": None,
        "pend": {},
        "d": {},
        "x": x,
        "cam": cam,
        "C": 0.0,
        "c0": None,
        "open": {},
        "clear": {},
        "susp": {},
        "sseq": 0,
        "flow": 0.0,
        "flow_now": 0.0,
        "seq": 0,
        "useq": 0,
        "v": STATE_VERSION,
    }


def _upgrade_state(cfg: Mapping[str, Any], state: dict[str, Any]) -> None:
    """Add the keys of the current state version to a state saved by an older one (changelog resume)."""
    fresh = new_segment_state(cfg)
    for name, xs in state["x"].items():
        for k, v in fresh["x"].get(name, {}).items():
            xs.setdefault(k, v)
        xs.pop("alive", None)
    for ds in state["d"].values():
        for k, v in _new_det().items():
            ds.setdefault(k, v)
    state.setdefault("sseq", 0)
    susp = state.setdefault("susp", {})
    for key, rec in list(susp.items()):
        if not isinstance(rec, dict):  # version 3 kept the step time only: the id the stream layer gave it
            i = int(key)
            det = next((s["lanes"][key] for s in cfg["sections"].values() if key in s["lanes"]), None)
            lane = cfg["lane_ids"][i]
            sid = f"{cfg['segment_id']}~{lane}@{format_ts(int(rec))}"
            susp[key] = {"id": sid, "t": int(rec), "start_s": int(rec), "det": det, "hyp": "block", "done": False}
    state["v"] = STATE_VERSION


def segment_summary(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """Small shareable summary: latest step (Unix s), open incident lanes and start (Unix s), flow (veh/h)."""
    opened = state.get("open") or {}
    starts = [int(o["start_s"]) for o in opened.values()]
    return {
        "segment_id": cfg["segment_id"],
        "t": state.get("t"),
        "open_lanes": sorted(opened),
        "open_since": min(starts) if starts else None,
        "flow_veh_h": round(float(state.get("flow") or 0.0), 1),
    }


# ---------------------------------------------------------------------------------------------- health


def _implausible(count: int, occ: float, speed: float | None, interval: float, limit: float) -> bool:
    """A loop reading that breaks physics (more than 1 veh/s, speed far above the limit, vehicles, no time)."""
    if interval > 0 and count / interval > MAX_VEH_PER_S:
        return True
    if speed is not None and speed > MAX_SPEED_FACTOR * limit + 20.0:
        return True
    return count >= 3 and occ <= 0.0


def _lane_of(cfg: Mapping[str, Any], det: str) -> str | None:
    meta = cfg["loops"].get(det)
    return cfg["lane_ids"][meta[1]] if meta is not None else None


def _fault(
    cfg: Mapping[str, Any], det: str, ds: dict[str, Any], fault: str, since: int, now: int, ev: dict[str, Any]
) -> dict[str, Any]:
    ds["fault"] = fault
    ds["fsince"] = since
    return {
        "type": FAULT,
        "segment_id": cfg["segment_id"],
        "detector_id": det,
        "lane": _lane_of(cfg, det),
        "fault": fault,
        "ts": format_ts(now),
        "since_ts": format_ts(since),
        "evidence": ev,
    }


def _restored(cfg: Mapping[str, Any], det: str, ds: dict[str, Any], now: int) -> dict[str, Any]:
    old = ds.get("fault")
    ds["fault"] = None
    return {
        "type": RESTORED,
        "segment_id": cfg["segment_id"],
        "detector_id": det,
        "lane": _lane_of(cfg, det),
        "fault": old,
        "ts": format_ts(now),
    }


def _new_det() -> dict[str, Any]:
    return {
        "last": None,
        "sig": None,
        "rep": 0,
        "zr": 0,
        "zi": 0,
        "ze": 0,
        "nz": None,
        "F": 0.0,
        "O": 0.0,
        "w": [0.0, 0.0, -1],
        "Fj": {},
        "Dd": 0.0,
        "fault": None,
        "fsince": None,
    }


def _zero_reset(ds: dict[str, Any]) -> None:
    """End a loop's exact-zero run: its conservation evidence and window restart."""
    ds["zr"], ds["zi"], ds["F"], ds["O"], ds["w"], ds["Fj"], ds["Dd"] = 0, 0, 0.0, 0.0, [0.0, 0.0, -1], {}, 0.0


# ---------------------------------------------------------------------------------------------- update


def update_segment(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    event: Mapping[str, Any],
    downstream: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Feed one device event of this segment (time order); return the decisions it triggers.

    Parameters
    ----------
    cfg : Mapping
        The segment's config (:func:`segment_configs_from_graph`).
    state : dict
        The segment's state (:func:`new_segment_state`), updated in place.
    event : Mapping
        A loop or camera event (device schema v1; ``ts`` ISO UTC, or ``ts_s`` Unix s).
    downstream : Mapping, optional
        Latest :func:`segment_summary` of downstream segments (annotation of spill-back only).

    Returns
    -------
    list of dict
        Decisions (see module doc), possibly empty. Cost: O(1) per event plus O(lanes) once per step.
    """
    if state.get("v") != STATE_VERSION:
        _upgrade_state(cfg, state)
    ts = int(event["ts_s"]) if "ts_s" in event else parse_ts(event["ts"])
    out: list[dict[str, Any]] = []
    if state["now"] is None or ts > state["now"]:
        state["now"] = ts
    if state["pend"] and ts > int(state["t"]):
        out += _step(cfg, state, ts, downstream)  # a loop stayed silent: close the step late
    if event.get("type") == "camera":
        return out + _camera(cfg, state, event, ts, downstream)
    det = str(event.get("detector_id"))
    loops = cfg["loops"]
    if det not in loops:
        return out
    t = state["t"]
    if t is None or ts > t:
        state["t"] = ts
    elif ts < t:
        return out  # late reading of a closed step: ignored (the stream layer dead-letters these)
    pend = state["pend"]
    pend[det] = [int(event.get("count") or 0), float(event.get("occupancy") or 0.0), event.get("speed_kmh")]
    if len(pend) >= len(loops) or _complete(cfg, state):
        out += _step(cfg, state, ts, downstream)
    return out


def flush_segment(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    now_s: float,
    downstream: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Close the pending step (a reading is missing) and check silence at stream time ``now_s`` (Unix s)."""
    if state.get("v") != STATE_VERSION:
        _upgrade_state(cfg, state)
    now = int(now_s)
    if state["now"] is None or now > state["now"]:
        state["now"] = now
    if state["pend"]:
        return _step(cfg, state, now, downstream)
    out: list[dict[str, Any]] = []
    if state["t"] is not None:
        _silence(cfg, state, now, out)
    if state["susp"]:  # a loop gone silent, or time passing without readings, ends a suspicion too
        _expire_suspicions(cfg, state, now, out)
    return out


def _complete(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Every loop that is not known to be silent has reported for the pending step."""
    pend = state["pend"]
    for det in cfg["loops"]:
        if det not in pend:
            ds = state["d"].get(det)
            if ds is None or ds.get("fault") != SILENT:
                return False
    return True


def _silence(cfg: Mapping[str, Any], state: dict[str, Any], now: int, out: list[dict[str, Any]]) -> None:
    dstates = state["d"]
    for det, meta in cfg["loops"].items():
        ds = dstates.get(det)
        if ds is None:  # (not ``setdefault(det, _new_det())``: no throw-away dict per loop and step)
            ds = dstates[det] = _new_det()
        if ds["last"] is None:
            ds["last"] = int(state["t"]) - int(meta[2])
        if ds["fault"] != SILENT and now - int(ds["last"]) >= SILENT_INTERVALS * float(meta[2]):
            out.append(_fault(cfg, det, ds, SILENT, int(ds["last"]), now, {"last_reading_ts": format_ts(ds["last"])}))
            _reset_lane(state, meta[0], int(meta[1]))
    cam = state.get("cam")
    camcfg = cfg.get("camera")
    if cam is not None and camcfg is not None:
        if cam["last"] is None:
            cam["last"] = int(state["t"])
        if cam["fault"] != SILENT and now - int(cam["last"]) >= SILENT_INTERVALS * float(camcfg["interval_s"]):
            cam["fault"] = SILENT
            out.append(
                _camera_decision(cfg, FAULT, SILENT, now, int(cam["last"]), {"last_reading_ts": format_ts(cam["last"])})
            )


def _camera_decision(
    cfg: Mapping[str, Any], kind: str, fault: str, now: int, since: int, ev: dict[str, Any]
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": kind,
        "segment_id": cfg["segment_id"],
        "detector_id": cfg["camera"]["id"],
        "lane": None,
        "fault": fault,
        "ts": format_ts(now),
    }
    if kind == FAULT:
        d["since_ts"] = format_ts(since)
        d["evidence"] = ev
    return d


def _reset_lane(state: dict[str, Any], section: str, i: int) -> None:
    xs = state["x"].get(section)
    if xs is None:
        return
    for h in HYPOTHESES:
        xs["J"][h][i] = 0.0
        xs["z0"][h][i] = None


def _health(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    pend: Mapping[str, list[Any]],
    t: int,
    now: int,
    out: list[dict[str, Any]],
) -> tuple[dict[str, list[Any]], set[str]]:
    """Per-loop health for one step: returns the usable readings and the loops that read exact zeros."""
    limit = float(cfg["speed_limit_kmh"])
    loops = cfg["loops"]
    dstates = state["d"]
    usable: dict[str, list[Any]] = {}
    zeros: set[str] = set()
    for det, r in pend.items():
        meta = loops[det]
        ds = dstates.get(det)
        if ds is None:  # (not ``setdefault(det, _new_det())``: no throw-away dict per reading)
            ds = dstates[det] = _new_det()
        ds["last"] = t
        if ds["fault"] == SILENT:
            out.append(_restored(cfg, det, ds, now))
        count, occ, speed = int(r[0]), float(r[1]), r[2]
        sig = [count, round(occ, 4), None if speed is None else round(float(speed), 1)]
        nonzero = count > 0 or occ > 0.0
        if nonzero and sig == ds["sig"]:
            ds["rep"] += 1
        else:
            ds["rep"] = 1 if nonzero else 0
            if ds["fault"] == STUCK:
                out.append(_restored(cfg, det, ds, now))
        ds["sig"] = sig
        # a loop held the whole interval with nothing leaving it is a standing vehicle until it lasts too long
        standing = count == 0 and occ >= STANDING_HELD_OCC
        need = STUCK_ON_REPEATS if standing else STUCK_REPEATS
        rep = ds["rep"]
        if rep >= need and ds["fault"] != STUCK:
            out.append(_fault(cfg, det, ds, STUCK, t - (rep - 1) * int(meta[2]), now, {"repeats": rep, "reading": sig}))
            _reset_lane(state, meta[0], int(meta[1]))
        if rep >= (need if standing else 2):
            continue  # a repeated reading with vehicles is not trusted
        fault = ds["fault"]
        if _implausible(count, occ, None if speed is None else float(speed), float(meta[2]), limit):
            if fault != IMPLAUSIBLE:
                out.append(_fault(cfg, det, ds, IMPLAUSIBLE, t, now, {"reading": sig}))
            continue
        if fault is not None:
            if fault == IMPLAUSIBLE:
                out.append(_restored(cfg, det, ds, now))
            elif fault == ZERO:
                if not nonzero:
                    ds["zr"] += 1
                    continue
                out.append(_restored(cfg, det, ds, now))
                _zero_reset(ds)
        usable[det] = r
        if not nonzero:
            zeros.add(det)
    return usable, zeros


def _step(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    now: int,
    downstream: Mapping[str, Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Evaluate the pending step (its loop readings) at stream time ``now`` (Unix s).

    The hot path of the detector (once per step and segment): config values and per-section quantities are
    read once into locals, the per-lane LLRs come from :func:`_lane_llr` as a tuple, and the CUSUM updates
    compare inline; every floating-point expression keeps the operands and order of the plain formulas.
    """
    out: list[dict[str, Any]] = []
    pend: dict[str, list[Any]] = state["pend"]
    state["pend"] = {}
    t = int(state["t"])
    usable, zeros = _health(cfg, state, pend, t, now, out)
    _silence(cfg, state, now, out)
    sections = cfg["sections"]
    loops = cfg["loops"]
    dstates = state["d"]
    xstates = state["x"]
    totals: dict[str, float | None] = {}
    for name, sec in sections.items():
        lanes_map = sec["lanes"]
        tot: float | None = None
        if lanes_map:
            s = 0
            for det in lanes_map.values():
                r = usable.get(det)
                if r is None:
                    break
                s += r[0]
            else:
                tot = float(s)
        totals[name] = tot
    quiet = not state["open"] and _max_evidence(state) < LEARN_MAX_EVIDENCE
    limit = float(cfg["speed_limit_kmh"])
    win = int(cfg.get("ref_window_steps") or REF_WINDOW_STEPS)
    step = int(cfg["step_s"])
    end_t = _window_end(cfg, t)  # whether this step closes a reference window (the same for every section)
    # lane-share hypotheses (rho): the CUSUM updates below are written out for these three
    rho_b, rho_p, rho_s = HYPOTHESES["block"], HYPOTHESES["partial"], HYPOTHESES["slow"]
    for name, sec in sections.items():
        xs = xstates[name]
        lanes_map = sec["lanes"]
        n_lanes = len(lanes_map)
        dets: dict[int, str] = {}
        idx: list[int] = []  # the lanes with a usable reading, and their counts
        c: dict[int, int] = {}
        for i, det in sec["lane_list"]:
            dets[i] = det
            r = usable.get(det)
            if r is not None:
                idx.append(i)
                c[i] = int(r[0])
        n_idx = len(idx)
        if n_idx < n_lanes:
            xs["accn"] = -1  # the camera window misses a lane's count: no conservation test against it
        if n_idx < 2:
            continue
        N = float(sum(c.values()))
        xn = xs["n"]
        n_sum = sum([xn[i] for i in idx])
        armed = n_sum >= SHARE_MIN_VEH
        ref = sec.get("ref")
        R = totals.get(ref) if ref else None
        kap = (xs["k"][0] + KAPPA_PRIOR_VEH) / (xs["k"][1] + KAPPA_PRIOR_VEH)
        ref_n = xstates[ref]["n"] if ref else None
        down = sec.get("down")
        down_lanes = sections[down]["lanes"] if down else {}
        J = xs["J"]
        z0 = xs["z0"]
        sv = xs["sv"]
        if armed or down_lanes:
            # beta-binomial null: its concentration (sum of the learned counts, capped) is the section's
            conc = min(SHARE_CONC_MAX, n_sum + SHARE_PRIOR_VEH)
            n_int = round(N)
            # the other lanes are not queued: low occupancy, and the vehicles they count pass at free speed
            free_v = FREE_FRAC * limit
            not_free = [
                i
                for i in idx
                if not (
                    float((o := usable[dets[i]])[1]) < OTHERS_FREE_OCC
                    and (int(o[0]) == 0 or o[2] is None or float(o[2]) >= free_v)
                )
            ]
        share_prior = SHARE_PRIOR_VEH / n_idx
        share_den = n_sum + SHARE_PRIOR_VEH
        for i in idx:
            p = (xn[i] + share_prior) / share_den
            if not p < SHARE_MAX:
                p = SHARE_MAX  # min(SHARE_MAX, p)
            ci = c[i]
            det_i = dets[i]
            if armed or down_lanes:
                free = not not_free or (len(not_free) == 1 and not_free[0] == i)
                llr_b, llr_p, llr_s, slow_reading = _lane_llr(
                    xs, i, p, ci, armed, conc, n_int, usable, det_i, free, limit, down_lanes, rho_b, rho_p, rho_s
                )
                for h, v in (("block", llr_b), ("partial", llr_p), ("slow", llr_s)):
                    js = J[h]
                    old = js[i]
                    new = old + v
                    new = new if new > 0.0 else 0.0  # max(0.0, .)
                    if not new < J_CAP:
                        new = J_CAP  # min(J_CAP, .)
                    if old <= 0.0 < new:
                        z0[h][i] = t - int(loops[det_i][2])
                        if h == "slow":
                            sv[i] = 0
                    js[i] = new
                # a loop held the whole interval with nothing counted is a standing vehicle or a stuck-on loop:
                # not a slow vehicle seen passing (the slow CUSUM still takes the reading)
                held = ci == 0 and float(usable[det_i][1]) >= STANDING_HELD_OCC
                if slow_reading and J["slow"][i] > 0.0 and not held:
                    sv[i] += 1
                # informative exact zeros of the lane's episode: evidence a dead loop explains as well, which a
                # loop counting again afterwards does not vouch for (a dropout that ends)
                ds_i = dstates[det_i]
                if J["block"][i] <= 0.0 and J["partial"][i] <= 0.0 and J["slow"][i] <= 0.0:
                    ds_i["ze"] = 0
                elif det_i in zeros and N > ci:
                    ds_i["ze"] = int(ds_i.get("ze") or 0) + 1
            # conservation over the loop's exact-zero run (blocked lane vs dead loop)
            ds = dstates[det_i]
            if det_i in zeros:
                ds["zr"] += 1
                if N > ci:
                    ds["zi"] = int(ds.get("zi") or 0) + 1  # an informative zero: vehicles passed the other lanes
                pr = _dead_share(xs, ref_n, i, p)
                o_veh = N - ci
                ds["O"] += o_veh
                if R is None or n_idx < n_lanes or not REF_CONSERVATION:
                    ds["w"] = [0.0, 0.0, -1]
                else:  # against the reference section's total over windows of the run (kappa: ratio)
                    w = ds["w"]
                    if ds["zr"] == 1:  # a window starts with the run only at a window boundary
                        w[:] = [0.0, 0.0, 0 if _window_end(cfg, t - step) is not False else -1]
                    if w[2] >= 0:
                        w[0], w[1], w[2] = w[0] + o_veh, w[1] + R, int(w[2]) + 1
                    end = end_t
                    if end and w[2] >= 2:
                        d = round(w[1] - w[0] / kap)
                        if d >= -CONS_K:
                            llr_w = _cons_llr(_cons_pmf(xs["er"], REF_PRIOR), d, w[1] * kap, pr, kap)
                            ds["F"] += llr_w
                            ds["Dd"] = max(0.0, float(ds.get("Dd") or 0.0) - llr_w)
                            ds["Fj"] = {h: round(J[h][i], 3) for h in HYPOTHESES}
                    if end or (end is None and w[2] >= win):
                        w[:] = [0.0, 0.0, 0]
            else:
                if ci > 0 or float(usable[det_i][1]) < STANDING_HELD_OCC:
                    ds["nz"] = t  # counted or occupied (a held loop may be stuck on: not a sign of life)
                if ds["zr"]:
                    _zero_reset(ds)
                continue
            if ds["zr"] < ZERO_MIN_STEPS:
                continue
            starved = J["block"][i] >= 0.5 * H_RAISE or xn[i] < LANE_SEEN_VEH
            # how improbable the run of zeros is for a working loop, the lane's learned share being uncertain (a
            # share learned from a few vehicles, a turn lane's, makes a long lull likely)
            lp0 = _log_p_zero(xn[i] + share_prior, n_sum - xn[i] + share_prior * (n_idx - 1), float(ds["O"]))
            lost = ds["F"] <= -F_FAULT and starved
            # never confirmed as a blocked lane although many vehicles were due: a stall is cleared sooner
            due = float(ds["O"]) * pr
            stale = ds["zr"] >= ZERO_LONG_STEPS and lp0 <= -ZERO_LONG_DUE_VEH and ds["F"] < F_CORROBORATE
            if (lost or stale) and ds["fault"] is None and str(i) not in state["open"]:
                since = t - ds["zr"] * int(loops[det_i][2])
                ev = {
                    "zero_steps": ds["zr"],
                    "conservation_llr": round(ds["F"], 2),
                    "other_lanes_veh": round(ds["O"], 1),
                    "lane_veh_due": round(due, 1),
                    "log_p_zeros": round(lp0, 2),
                    "rule": "zero counts while the cross-section loses the lane's vehicles"
                    if lost
                    else "zero counts for long while the lane's vehicles were due",
                }
                out.append(_fault(cfg, det_i, ds, ZERO, since, now, ev))
                _reset_lane(state, name, i)
        xs["acc"] = float(xs["acc"]) + N  # vehicles counted by the usable lanes since the last camera reading
        if int(xs["accn"]) >= 0:
            xs["accn"] = int(xs["accn"]) + 1
        # the previous upstream counts (for the lag of the lane ratio) and learning
        mp = xs["mp"]
        for i in idx:
            if quiet:
                d_det = down_lanes.get(str(i))
                if d_det is not None and d_det in usable:
                    rr = xs["r"][i]
                    rr[0] = rr[0] * LANE_RATIO_FORGET + c[i]
                    rr[1] = rr[1] * LANE_RATIO_FORGET + float(usable[d_det][0])
            mp[i] = float(c[i])
        if n_idx == n_lanes:
            xs["tn"] = xs["tn"] * (1.0 - FLOW_NOW_ALPHA) + FLOW_NOW_ALPHA * N
        if quiet:
            lam = 0.5 ** (N / SHARE_HALF_LIFE_VEH)
            for i in idx:
                xn[i] = xn[i] * lam + c[i]
            if n_idx == n_lanes:
                xs["tot"] = xs["tot"] * (1.0 - FLOW_ALPHA) + FLOW_ALPHA * N
                if R is not None and not any(dstates[d]["zr"] >= 6 for d in lanes_map.values()):
                    xs["k"][0] = xs["k"][0] * lam + N
                    xs["k"][1] = xs["k"][1] * lam + R
        # residual pmf of the reference total over windows of ``win`` steps (learned while quiet, no zero run)
        wl = xs["wl"]
        if R is None or n_idx < n_lanes:
            xs["wl"] = [0.0, 0.0, 0]
        else:
            wl[0], wl[1], wl[2] = wl[0] + N, wl[1] + R, int(wl[2]) + 1
            end = end_t
            if end or (end is None and wl[2] >= win):
                runs = any(int((dstates.get(d) or {}).get("zr") or 0) >= 2 for d in _both_lanes(cfg, name))
                if quiet and not runs and wl[2] >= 2:
                    j = max(-CONS_K, min(CONS_K, round(wl[1] - wl[0] / kap))) + CONS_K
                    xs["er"] = [v * REF_FORGET for v in xs["er"]]
                    xs["er"][j] += 1.0
                xs["wl"] = [0.0, 0.0, 0]
    if state["open"]:
        _recovery(cfg, state, usable)
    best: float | None = None  # max(tot over the sections), first of equals
    best_now = 0.0
    for name in sections:
        v = xstates[name]["tot"]
        if best is None or v > best:
            best = v
        v = xstates[name]["tn"]
        if v > best_now:
            best_now = v
    state["flow"] = (0.0 if best is None else best) * 3600.0 / float(cfg["step_s"])
    state["flow_now"] = best_now * 3600.0 / float(cfg["step_s"])
    out += _decide(cfg, state, t, now, downstream)
    return out


def _window_end(cfg: Mapping[str, Any], t: float) -> bool | None:
    """Whether step end ``t`` (Unix s) closes a reference window: ``None`` without a signal plan (windows of
    ``ref_window_steps`` steps from their start); else True at the step boundary nearest mid-green (once per
    cycle when the cycle is a multiple of the step), False elsewhere."""
    target = cfg.get("ref_window_end_pos_s")
    sig = cfg.get("signal")
    if target is None or not sig:
        return None
    cyc = float(sig["cycle_s"])
    x = (t - float(sig["offset_s"]) - float(target)) % cyc
    return min(x, cyc - x) < 0.5 * float(cfg["step_s"])


def _both_lanes(cfg: Mapping[str, Any], name: str) -> list[str]:
    """Loop ids of section ``name`` and of its reference section."""
    secs = cfg["sections"]
    ref = secs[name].get("ref")
    return [*secs[name]["lanes"].values(), *(secs[ref]["lanes"].values() if ref else ())]


def _log_p_zero(a: float, b: float, others_veh: float) -> float:
    """Log-probability (nats) that a lane counts no vehicle while the other lanes count ``others_veh``, its share
    of the section's vehicles being uncertain: Beta(``a``, ``b``) from the learned counts (the lane's and the
    others'). About ``-share x others_veh`` (Poisson) for a well-learned share; much closer to 0 for a lane whose
    share rests on a few vehicles (a turn lane few drivers use)."""
    if a <= 0.0 or b <= 0.0:
        return 0.0
    return lgamma(b + others_veh) + lgamma(a + b) - lgamma(b) - lgamma(a + b + others_veh)


def _dead_share(xs: Mapping[str, Any], ref_n: list[float] | None, i: int, p: float) -> float:
    """The share a dead loop of lane ``i`` would lose: learned at its section, else at the reference section."""
    pr = p
    if xs["n"][i] < LANE_SEEN_VEH and ref_n is not None and sum(ref_n) > 0:
        pr = ref_n[i] / sum(ref_n)
    return min(max(pr, 0.01), SHARE_MAX)


def _lane_llr(
    xs: Mapping[str, Any],
    i: int,
    p: float,
    ci: int,
    armed: bool,
    conc: float,
    n_int: int,
    usable: Mapping[str, list[Any]],
    det_i: str,
    free: bool,
    limit: float,
    down_lanes: Mapping[str, str],
    rho_b: float,
    rho_p: float,
    rho_s: float,
) -> tuple[float, float, float, bool]:
    """One step's log-likelihood ratios (nats) of lane ``i`` of a section: ``block``, ``partial``, ``slow``,
    and whether the lane's reading was a slow one.

    Starvation (binomial lane share, rule 1) for every hypothesis; the lane's balance against its own loop
    downstream (rule 2b) for ``block`` and ``partial``; the lane's speeds (rule 3) for ``slow``. ``conc`` is
    the beta-binomial null's concentration and ``n_int`` the section's count (vehicles), ``free`` whether the
    section's other lanes are not queued, ``rho_*`` the hypotheses' shares (``HYPOTHESES``).
    """
    llr_b = llr_p = llr_s = 0.0
    slow_reading = False
    if armed:
        # null: beta-binomial with the lane's learned share (its concentration capped: shares drift, platoons
        # choose lanes together); hypotheses: binomial with the share cut to rho
        a, b = p * conc, (1.0 - p) * conc
        null = lgamma(ci + a) + lgamma(n_int - ci + b) - lgamma(n_int + a + b)
        null -= lgamma(a) + lgamma(b) - lgamma(a + b)
        q = rho_b * p
        llr_b += ci * log(q) + (n_int - ci) * log(1.0 - q) - null
        q = rho_p * p
        term = ci * log(q) + (n_int - ci) * log(1.0 - q) - null
        llr_p += term
        if rho_s != rho_p:
            q = rho_s * p
            term = ci * log(q) + (n_int - ci) * log(1.0 - q) - null
        llr_s += term
    d_det = down_lanes.get(str(i))
    if d_det is not None and d_det in usable and xs["r"][i][1] >= LANE_RATIO_MIN_VEH:
        rr = xs["r"][i]
        ratio = (rr[0] + LANE_RATIO_PRIOR_VEH) / (rr[1] + LANE_RATIO_PRIOR_VEH)
        m_eff = 0.5 * (ci + float(xs["mp"][i]))  # upstream counts lead the downstream ones by up to a cycle
        s_cnt = float(usable[d_det][0])
        pi0 = ratio / (1.0 + ratio)
        pi1 = rho_b * ratio / (1.0 + rho_b * ratio)
        llr_b += m_eff * log(pi1 / pi0) + s_cnt * log((1.0 - pi1) / (1.0 - pi0))
        pi1 = rho_p * ratio / (1.0 + rho_p * ratio)
        llr_p += m_eff * log(pi1 / pi0) + s_cnt * log((1.0 - pi1) / (1.0 - pi0))
    # slow / standing lane (``free``: the other lanes are not queued)
    r_i = usable[det_i]
    v_i = r_i[2]
    if ci > 0 and v_i is not None:
        v = float(v_i)
        if v >= FREE_FRAC * limit:
            llr_s += LLR_FREE
        elif free and v < VERY_SLOW_FRAC * limit:
            llr_s += LLR_VERY_SLOW
            slow_reading = True
        elif free and v < SLOW_FRAC * limit:
            llr_s += LLR_SLOW
            slow_reading = True
    elif ci == 0 and free and float(r_i[1]) >= STANDING_OCC:
        llr_s += LLR_STANDING
        slow_reading = True
    return llr_b, llr_p, llr_s, slow_reading


def _recovery(cfg: Mapping[str, Any], state: dict[str, Any], usable: Mapping[str, list[Any]]) -> None:
    """Recent lane / other-lane counts at the section that raised each open incident."""
    for key, inc in state["open"].items():
        sec_name = inc.get("sec")
        if key == "cam" or sec_name is None:
            continue
        lanes_map = cfg["sections"][sec_name]["lanes"]
        det_i = lanes_map.get(key)
        if det_i not in usable:
            continue
        own = float(usable[det_i][0])
        oth = float(sum(usable[d][0] for li, d in lanes_map.items() if li != key and d in usable))
        inc["rc"] = round(float(inc["rc"]) * RECOVERY_DECAY + own, 4)
        inc["ro"] = round(float(inc["ro"]) * RECOVERY_DECAY + oth, 4)


def _cycle_prior(cfg: Mapping[str, Any], ts: int) -> tuple[int, float]:
    """Cycle-position bin of a camera timestamp and the prior P(halting vehicle at ts) from the signal plan."""
    sig = cfg.get("signal")
    if not sig:
        return 0, P_QUEUE_UNSIGNALISED
    cyc = float(sig["cycle_s"])
    x = (ts - float(sig["offset_s"])) % cyc
    b = min(CAMERA_BINS - 1, int(x / cyc * CAMERA_BINS))
    for s, e in sig["green"]:
        if s <= x < e:
            return b, P_QUEUE_CLEAR if x - s >= CLEAR_GREEN_S else P_QUEUE_RED
    for s, e in sig["green"]:
        if e - s >= CLEAR_GREEN_S and (x - e) % cyc <= 5.0:
            return b, P_QUEUE_AFTER_GREEN  # just after a long green the queue has been served
    return b, P_QUEUE_RED


def _cons_pmf(w: list[float], prior: tuple[float, ...] = CONS_PRIOR) -> list[float]:
    """Residual pmf (support ``-CONS_K..CONS_K`` vehicles) of a reference count minus its prediction.

    Learned counts ``w`` plus the ``prior`` (by |residual|, weight ``CONS_PRIOR_WEIGHT``), floored.
    """
    k = len(w) // 2
    raw = [w[j] + CONS_PRIOR_WEIGHT * prior[abs(j - k)] for j in range(len(w))]
    tot = sum(raw)
    return [(1.0 - CONS_FLOOR) * v / tot + CONS_FLOOR / len(w) for v in raw]


def _pmf_at(pmf: list[float], d: int) -> float:
    """``pmf`` at residual ``d`` (vehicles); geometric tails beyond the support."""
    k = len(pmf) // 2
    if -k <= d <= k:
        return pmf[d + k]
    return pmf[0 if d < 0 else -1] * CONS_TAIL ** (abs(d) - k)


def _cons_llr(pmf: list[float], d: int, m_true: float, pr: float, ratio: float) -> float:
    """Blocked-lane vs dead-loop LLR (nats, capped) of a conservation residual ``d`` (vehicles).

    Blocked: ``d`` follows the learned residual ``pmf``. Dead loop: the lane's ``X ~ Binomial(m_true, pr)``
    vehicles are missing from the section's count, so ``d`` is shifted by ``X / ratio`` (``ratio`` = section
    over reference counts).
    """
    m = max(0, round(m_true))
    llr = CONS_LLR_CAP
    # a negative residual (the reference counted fewer) favours a blocked lane no more than a zero one does:
    # an undercounting reference must not confirm a dead loop
    for dd in (d, 0) if d < 0 else (d,):
        p_dead = 0.0
        b = (1.0 - pr) ** m  # binomial pmf at x = 0, then the recurrence
        for x in range(m + 1):
            p_dead += b * _pmf_at(pmf, dd - round(x / ratio))
            b *= (m - x) / (x + 1) * pr / (1.0 - pr)
        llr = min(llr, math.log(max(_pmf_at(pmf, dd), 1e-12) / max(p_dead, 1e-12)))
    return max(-CONS_LLR_CAP, llr)


def _camera_conservation(cfg: Mapping[str, Any], state: dict[str, Any], cam_count: int) -> None:
    """Rule 5 against the camera: vehicles entering the zone (count) vs the section's count over the window.

    Every vehicle that enters the zone crossed the section's loops a few seconds earlier, so the residual
    ``D = count - kc_ratio * section count`` is nearly deterministic (a vehicle between the two at either end
    of the window). Its pmf is learned per section while quiet (``CONS_K``, prior ``CONS_PRIOR``). For a loop in
    an exact-zero run covering the whole window: a blocked lane moved its vehicles to the other lanes, so D
    follows the learned pmf; a dead loop loses them, so D is that pmf shifted by ``X ~ Binomial(count, p)``
    (``p`` the lane's share). The LLR (capped at ``CONS_LLR_CAP``) is added to the loop's ``F``.
    """
    quiet = _max_evidence(state) < LEARN_MAX_EVIDENCE and not state["open"]
    cam_steps = max(1, round(float(cfg["camera"]["interval_s"]) / float(cfg["step_s"])))
    for name, sec in cfg["sections"].items():
        xs = state["x"][name]
        n_sec = float(xs["acc"])
        whole = int(xs.get("accn", 0)) == cam_steps
        xs["acc"], xs["accn"] = 0.0, 0
        if float(sec["pos_m"]) >= float(cfg["camera"]["pos_m"]) or not whole:
            continue  # the section must be upstream of the camera zone and counted over the whole window
        kc = (xs["kc"][0] + KAPPA_PRIOR_VEH) / (xs["kc"][1] + KAPPA_PRIOR_VEH)  # section / camera counts
        resid = cam_count - n_sec / kc
        pmf: list[float] | None = None  # computed when a loop in a zero run needs it
        n_sum = sum(xs["n"])
        running = False
        for li, det in sec["lanes"].items():
            ds = state["d"].get(det)
            zr = int((ds or {}).get("zr") or 0)
            if zr >= 2:
                running = True
            if ds is None or ds.get("fault") is not None or zr < cam_steps or n_sum <= 0:
                continue
            d = round(resid)
            if d < -CONS_K:
                continue  # the camera counted far fewer than the loops: it is not a reference now
            i = int(li)
            pr = min(max((xs["n"][i] + 1.0) / (n_sum + len(xs["n"])), 0.01), SHARE_MAX)
            if pmf is None:
                pmf = _cons_pmf(xs["e"])
            llr_c = _cons_llr(pmf, d, cam_count * kc, pr, kc)
            ds["F"] = float(ds["F"]) + llr_c
            ds["Dd"] = max(0.0, float(ds.get("Dd") or 0.0) - llr_c)
            ds["Fj"] = None  # set once the camera's stall term has joined the lane evidence (_camera)
        if quiet and not running:
            xs["kc"][0] = xs["kc"][0] * CAMERA_FORGET + n_sec
            xs["kc"][1] = xs["kc"][1] * CAMERA_FORGET + cam_count
            j = max(-CONS_K, min(CONS_K, round(resid))) + CONS_K
            xs["e"] = [v * CAMERA_FORGET for v in xs["e"]]
            xs["e"][j] += 1.0


def _stop_line_state(cfg: Mapping[str, Any], state: Mapping[str, Any], ts: int) -> str:
    """``held`` if a loop near the stop line was occupied most of its interval ending at ``ts``; ``unknown`` if
    one cannot tell (faulty, silent or untrusted); else ``free`` (also without stop-line loops)."""
    held = False
    for sec in cfg["sections"].values():
        if float(sec["dist_m"]) >= MIN_EVIDENCE_DIST_M:
            continue
        for det in sec["lanes"].values():
            ds = state["d"].get(det)
            if not ds or ds.get("last") != ts or not ds.get("sig") or ds.get("fault") or int(ds.get("rep") or 0) >= 2:
                return "unknown"
            held = held or float(ds["sig"][1]) >= STOP_LINE_HELD_OCC
    return "held" if held else "free"


def _camera(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    ev: Mapping[str, Any],
    ts: int,
    downstream: Mapping[str, Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Rule 4 on one camera reading: health, then the stall evidence added to every lane's hypotheses."""
    out: list[dict[str, Any]] = []
    cam = state.get("cam")
    camcfg = cfg.get("camera")
    if cam is None or camcfg is None or str(ev.get("camera_id")) != camcfg["id"]:
        return out
    if cam["last"] is not None and ts <= int(cam["last"]) and cam["fault"] != SILENT:
        return out
    cam["last"] = ts
    q = int(ev.get("queue_len_veh") or 0)
    qmax = int(ev.get("queue_max_veh") or 0)
    sig = [int(ev.get("count_total") or 0), q, qmax, round(float(ev.get("occupancy") or 0.0), 4), ev.get("speed_kmh")]
    nonzero = any(v not in (None, 0, 0.0) for v in sig)
    if nonzero and sig == cam["sig"]:
        cam["rep"] += 1
    else:
        cam["rep"] = 1 if nonzero else 0
        if cam["fault"] in (STUCK, SILENT):
            out.append(_camera_decision(cfg, RESTORED, cam["fault"], ts, ts, {}))
            cam["fault"] = None
    cam["sig"] = sig
    if cam["rep"] >= STUCK_REPEATS and cam["fault"] != STUCK:
        cam["fault"] = STUCK
        out.append(_camera_decision(cfg, FAULT, STUCK, ts, ts, {"repeats": cam["rep"], "reading": sig}))
    if cam["rep"] >= 2:
        return out
    storage = float(camcfg["zone_m"]) * max(1, int(cfg["lanes"])) / JAM_SPACING_M
    if qmax >= SATURATED_QUEUE_SHARE * storage:
        return out  # the zone filled up during the interval: a residual queue is demand, no evidence
    _camera_conservation(cfg, state, int(ev.get("count_total") or 0))
    b, p_prior = _cycle_prior(cfg, ts)
    hits, n = cam["b"][b]
    p0 = min(max((hits + CAMERA_PRIOR_WEIGHT * p_prior) / (n + CAMERA_PRIOR_WEIGHT), 0.01), 0.99)
    hit = q >= 1
    if hit and p0 < 0.5:
        line = _stop_line_state(cfg, state, ts)
        if line == "unknown" or (line == "held" and p_prior < P_QUEUE_RED):
            # a vehicle held at the line during green (a turn waiting for a gap) explains a halting vehicle;
            # so may a stop line we cannot see
            return out
    if p_prior < P_QUEUE_RED:
        cam["clear_q"] = q  # halting vehicles at the latest position where the queue should have cleared
    llr = math.log(P_STALL_QUEUE / p0) if hit else math.log((1.0 - P_STALL_QUEUE) / (1.0 - p0))
    # where a queue is expected anyway a halting vehicle says nothing, but an empty zone still refutes a stall
    llr = min(llr, CAMERA_LLR_CAP if p0 < 0.5 else 0.0)
    c_new = min(C_CAP, max(0.0, float(state["C"]) + llr))
    if float(state["C"]) <= 0.0 < c_new:
        state["c0"] = ts - int(camcfg["interval_s"])
    state["C"] = c_new
    if not state["open"]:
        cam["b"][b] = [hits * CAMERA_FORGET + (1.0 if hit else 0.0), n * CAMERA_FORGET + 1.0]
    # a stalled vehicle blocks a lane: the camera term joins the lane hypotheses that model one
    for name in cfg["evidence_sections"]:
        xs = state["x"][name]
        for h in ("block", "partial"):
            js = xs["J"][h]
            for i in range(len(js)):
                old = js[i]
                new = old + llr
                new = new if new > 0.0 else 0.0  # min(J_CAP, max(0.0, old + llr)), compared inline
                if not new < J_CAP:
                    new = J_CAP
                if old <= 0.0 < new:
                    xs["z0"][h][i] = ts - int(camcfg["interval_s"])
                js[i] = new
    for name in cfg["evidence_sections"]:  # the lane evidence the camera's conservation term vouches for
        xs = state["x"][name]
        for li, det in cfg["sections"][name]["lanes"].items():
            ds = state["d"].get(det)
            if ds is not None and "Fj" in ds and ds["Fj"] is None:
                ds["Fj"] = {h: round(xs["J"][h][int(li)], 3) for h in HYPOTHESES}
    out += _decide(cfg, state, ts, ts, downstream, camera_step=True)
    return out


# ---------------------------------------------------------------------------------------------- decisions


def _max_evidence(state: Mapping[str, Any]) -> float:
    m = 0.0
    for xs in state["x"].values():
        for js in xs["J"].values():
            for v in js:
                if v > m:
                    m = v
    return m


def _lane_evidence(cfg: Mapping[str, Any], state: Mapping[str, Any], i: int) -> tuple[float, str | None, str | None]:
    """Lane ``i``'s best hypothesis evidence (nats) over the evidence sections whose loop is healthy."""
    best, where, hyp = 0.0, None, None
    key = str(i)
    for name in cfg["evidence_sections"]:
        det = cfg["sections"][name]["lanes"].get(key)
        if det is None:
            continue
        ds = state["d"].get(det)
        if ds is not None and ds.get("fault") is not None:
            continue
        xs = state["x"][name]
        for h in HYPOTHESES:
            if xs["J"][h][i] > best:
                best, where, hyp = xs["J"][h][i], name, h
    return best, where, hyp


def _delay(
    cfg: Mapping[str, Any], state: Mapping[str, Any], blocked: int, slow_kmh: float | None, flow: float | None = None
) -> float:
    """Extra delay per vehicle (s) with ``blocked`` lanes lost or one lane at ``slow_kmh`` (km/h), at ``flow``
    (veh/h; default: the segment's learned flow).

    Webster's uniform delay on signalised approaches, BPR on others, an overflow queue when demand exceeds
    the remaining capacity, plus a lane-change friction term.
    """
    n = int(cfg["lanes"])
    q = float(state.get("flow") or 0.0) if flow is None else flow
    cap = float(cfg["capacity_veh_h"])
    rest = cap * max(n - blocked, 0) / n if n else 0.0
    x0 = q / cap if cap > 0 else 0.0
    x1 = q / rest if rest > 0 else 10.0
    sig = cfg.get("signal")
    if sig:
        cyc = float(sig["cycle_s"])
        g = sum(e - s for s, e in sig["green"]) / cyc if cyc else 0.5

        def web(x: float) -> float:
            return 0.5 * cyc * (1.0 - g) ** 2 / max(1e-3, 1.0 - min(x, 0.98) * g)

        d = web(x1) - web(x0)
    else:
        t0 = float(cfg["length_m"]) / (float(cfg["speed_limit_kmh"]) / 3.6)
        d = t0 * 0.15 * (min(x1, 2.0) ** 4 - x0**4)
    if x1 > 1.0:
        d += (x1 - 1.0) * DELAY_HORIZON_S / 2.0
    d += LANE_CHANGE_FRICTION_S * blocked
    if slow_kmh is not None and slow_kmh > 0:
        d += float(cfg["length_m"]) * (3.6 / slow_kmh - 3.6 / float(cfg["speed_limit_kmh"])) / max(n, 1)
    return max(0.0, d)


def _severity(n: int, blocked: int, delay_s: float, flow: float, cap: float) -> str:
    """``high`` (all lanes, demand ≥ 90 % of what is left, or ≥ 60 s/veh), ``medium`` (half the lanes or
    ≥ 15 s/veh), else ``low``."""
    frac = blocked / n if n else 1.0
    rest = cap * max(n - blocked, 0) / n if n else 0.0
    if frac >= 1.0 or rest <= 0 or flow / rest >= 0.9 or delay_s >= 60.0:
        return "high"
    if frac >= 0.5 or delay_s >= 15.0:
        return "medium"
    return "low"


def _decide(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    t: int,
    now: int,
    downstream: Mapping[str, Mapping[str, Any]] | None,
    camera_step: bool = False,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    C = float(state["C"])
    opened: dict[str, Any] = state["open"]
    if state["susp"]:
        _expire_suspicions(cfg, state, now, out)
    # nothing open or suspected and no lane evidence near H_FAST (the per-lane best is at most the segment's
    # best): every lane below would be skipped, so skip the loop (the common case)
    idle = not opened and not state["susp"] and _max_evidence(state) < H_FAST
    for i in range(0 if idle else int(cfg["lanes"])):
        key = str(i)
        e, where, hyp = _lane_evidence(cfg, state, i)
        if key in opened:
            if not camera_step:
                inc = opened[key]
                h_open, sec_open = inc.get("hyp"), inc.get("sec")
                if h_open in HYPOTHESES and sec_open in state["x"]:
                    e = float(state["x"][sec_open]["J"][h_open][i])  # the evidence of what was raised
                _maybe_clear(cfg, state, key, e, C, now, out)
                _maybe_escalate(cfg, state, key, now, out)
            continue
        # another lane already open: this one needs its own evidence beyond the shared camera term
        extra = C if opened else 0.0
        if where is None or hyp is None or e < H_FAST + extra:
            continue
        xs = state["x"][where]
        det = cfg["sections"][where]["lanes"][key]
        ds = state["d"].get(det) or _new_det()
        corr = []
        z0 = xs["z0"][hyp][i]
        nz = ds.get("nz")
        step = int(cfg["loops"][det][2])
        zeros_read = max(int(ds.get("zi") or 0), int(ds.get("ze") or 0))
        if nz is not None and z0 is not None and nz >= z0 + step and zeros_read <= ALIVE_MAX_ZERO_STEPS:
            corr.append("loop_alive")  # counted or occupied during the episode, and (almost) no exact zeros in it
        died = float(ds.get("Dd") or 0.0) >= DIED_SINCE  # recent readings say dead: older ones do not count
        if float(ds["F"]) >= F_CORROBORATE and not died:
            corr.append("flow_conserved")
        elif hyp != "slow" and not died and float(ds["F"]) + CAMERA_NOT_DEAD_WEIGHT * C >= FC_CORROBORATE:
            corr.append("flow_conserved_camera")  # conservation and a stalled vehicle together
        if C >= C_CORROBORATE:
            corr.append("camera_stall")
        elif C >= C_HINT and hyp != "slow":
            corr.append("camera_hint")
        if hyp == "slow" and xs["sv"][i] > 0:
            corr.append("slow_vehicles")
        if hyp == "slow" and "slow_vehicles" not in corr:
            continue  # a slowdown needs slow vehicles; starvation alone is the other hypotheses' job
        # flow conservation rules out a dead loop but is what normal traffic does too: not a confirmation
        not_dead = [c for c in corr if c not in ("camera_hint", "camera_stall")]
        strong = [c for c in corr if c in ("camera_stall", "camera_hint", "slow_vehicles")]
        if not not_dead and REQUIRE_NOT_DEAD:
            # exact zeros only: a blocked lane or a dead loop; say so once, wait for conservation to decide
            if e >= H_RAISE and key not in state["susp"]:
                state["sseq"] = int(state.get("sseq") or 0) + 1
                rec = {
                    "id": f"{cfg['segment_id']}#s{state['sseq']}",
                    "t": now,
                    "start_s": int(xs["z0"][hyp][i] or t),
                    "det": det,
                    "hyp": hyp,
                    "done": False,
                }
                state["susp"][key] = rec
                d = _suspicion_decision(cfg, SUSPECTED, rec, i, now)
                d["evidence"] = {
                    "reason": "lane empty while its neighbours flow: blocked lane or dead loop",
                    "scores": {h: round(xs["J"][h][i], 2) for h in HYPOTHESES},
                    "conservation": round(float(ds["F"]), 2),
                }
                out.append(d)
            continue
        if REQUIRE_NOT_DEAD and not any(c in not_dead for c in ("loop_alive", "slow_vehicles")):
            # conservation only covers the run up to its latest reference reading: a loop that died since then
            # (after a lull) adds evidence it cannot vouch for
            e = min(e, float((ds.get("Fj") or {}).get(hyp, 0.0)))
            if e < H_FAST + extra:
                continue
        if e < H_RAISE + extra and not strong:
            continue  # below the threshold, only independent corroboration confirms early
        rules = {
            "block": ["lane_starved", "lane_balance"],
            "partial": ["lane_avoided", "lane_balance"],
            "slow": ["lane_avoided", "lane_slow"],
        }[hyp]
        if C > 0 and hyp != "slow":
            rules = [*rules, "camera_stall"]
        z0 = xs["z0"][hyp][i]
        start = int(z0) if z0 is not None else t
        dets = [det]
        down = cfg["sections"][where].get("down")
        if down and key in cfg["sections"][down]["lanes"]:
            dets.append(cfg["sections"][down]["lanes"][key])
        dets += [d for li, d in cfg["sections"][where]["lanes"].items() if li != key]
        if C > 0 and cfg.get("camera") is not None:
            dets.append(cfg["camera"]["id"])
        scores = {h: round(xs["J"][h][i], 2) for h in HYPOTHESES}
        scores.update({"camera": round(C, 2), "conservation": round(float(ds["F"]), 2), "total": round(e, 2)})
        raised = _raise(cfg, state, [i], start, now, hyp, rules, corr, dets, scores, where, downstream)
        out.append(raised)
        if key in state["susp"]:  # the suspicion is settled: it was an incident
            out += _end_suspicion(cfg, state, key, now, "confirmed", str(raised["incident_id"]))
    C = float(state["C"])  # a lane incident that just cleared resets the camera evidence
    if "cam" not in opened and not opened and C >= H_CAMERA_ONLY and cfg.get("camera") is not None:
        c0 = int(state["c0"]) if state["c0"] is not None else t
        scores = {"camera": round(C, 2), "total": round(C, 2)}
        out.append(
            _raise(
                cfg,
                state,
                [],
                c0,
                now,
                "stall",
                ["camera_stall"],
                ["camera_stall"],
                [cfg["camera"]["id"]],
                scores,
                None,
                downstream,
            )
        )
    elif "cam" in opened and camera_step:
        _maybe_clear(cfg, state, "cam", 0.0, C, now, out)
    return out


def _suspicion_decision(cfg: Mapping[str, Any], typ: str, rec: Mapping[str, Any], i: int, now: int) -> dict[str, Any]:
    """The fields an ``incident_suspected`` and an ``incident_suspicion_expired`` decision share."""
    lane = cfg["lane_ids"][i]
    return {
        "type": typ,
        "incident_id": str(rec["id"]),
        "segment_id": cfg["segment_id"],
        "kind": "slowdown" if rec.get("hyp") == "slow" else "blocked lane",
        "lane": lane,
        "lanes": [lane],
        "detector_id": rec.get("det"),
        "start_ts": format_ts(int(rec["start_s"])),
        "suspected_ts": format_ts(int(rec["t"])),
        "ts": format_ts(now),
    }


def _end_suspicion(
    cfg: Mapping[str, Any], state: dict[str, Any], key: str, now: int, reason: str, incident_id: str | None = None
) -> list[dict[str, Any]]:
    """End lane ``key``'s suspicion: one ``incident_suspicion_expired`` decision unless it already expired.

    ``reason``: ``confirmed`` (an incident was raised on the lane: ``confirmed_incident_id``), ``device_fault``
    (its loop is faulty), ``evidence_gone``, ``lane_counts_again`` or ``unconfirmed`` (``SUSPICION_MAX_S``).
    An unconfirmed suspicion stays in the state, marked done, so that the lane is not suspected again until its
    evidence has gone.
    """
    rec = state["susp"][key]
    if reason == "unconfirmed":
        rec["done"] = True
    else:
        del state["susp"][key]
    if rec.get("done") and reason != "unconfirmed":
        return []  # expired earlier; its evidence has gone now
    d = _suspicion_decision(cfg, SUSPICION_EXPIRED, rec, int(key), now)
    d["reason"] = reason
    d["duration_s"] = int(now - int(rec["t"]))
    if incident_id is not None:
        d["confirmed_incident_id"] = incident_id
    return [d]


def _expire_suspicions(cfg: Mapping[str, Any], state: dict[str, Any], now: int, out: list[dict[str, Any]]) -> None:
    """End the suspicions whose evidence went away: the loop is faulty, the lane's evidence is below
    ``CLEAR_EVIDENCE``, the loop counted vehicles again and the evidence is below ``H_FAST``, or nothing settled
    it within ``SUSPICION_MAX_S``."""
    for key in sorted(state["susp"]):
        rec = state["susp"][key]
        e, _, _ = _lane_evidence(cfg, state, int(key))
        ds = state["d"].get(str(rec.get("det"))) or {}
        if ds.get("fault") is not None:
            reason = "device_fault"
        elif e < CLEAR_EVIDENCE:
            reason = "evidence_gone"
        elif ds.get("nz") is not None and int(ds["nz"]) > int(rec["t"]) and e < H_FAST:
            reason = "lane_counts_again"
        elif now - int(rec["t"]) >= SUSPICION_MAX_S and not rec.get("done"):
            reason = "unconfirmed"
        else:
            continue
        out += _end_suspicion(cfg, state, key, now, reason)


def _raise(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    lanes: list[int],
    start: int,
    now: int,
    hyp: str,
    rules: list[str],
    corr: list[str],
    dets: list[str],
    scores: dict[str, float],
    section: str | None,
    downstream: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    key = str(lanes[0]) if lanes else "cam"
    # an incident already open on the segment (another lane, or the camera's lane-unknown stall): this lane
    # widens it (one incident per segment and cause, updated, not a second one)
    joined = next(iter(state["open"].values()), None) if lanes else None
    if joined is None:
        state["seq"] = int(state["seq"]) + 1
    iid = str(joined["id"]) if joined is not None else f"{cfg['segment_id']}#{state['seq']}"
    share = 0.0
    if section is not None and lanes:
        xs = state["x"][section]
        share = (xs["n"][lanes[0]] + 1.0) / (sum(xs["n"]) + len(xs["n"]))
    state["open"][key] = {
        "id": iid,
        "start_s": start,
        "lanes": lanes,
        "t": now,
        "sec": section,
        "hyp": hyp,
        "p": round(share, 4),
        "rc": 0.0,
        "ro": 0.0,
    }
    state["clear"][key] = 0
    if joined is not None:
        return _updated(cfg, state, iid, now, ["lanes"])
    sev, delay, flow = _assess(cfg, state, iid)
    state["open"][key]["sev"] = sev
    total = float(scores.get("total", 0.0))
    # heuristic map of the evidence margin to 0.5-1: 0.5 at half the threshold, ~0.9 at the threshold
    conf = round(1.0 - 0.5 * math.exp(-max(0.0, total - H_RAISE / 2.0) / 2.0), 3)
    evidence: dict[str, Any] = {
        "hypothesis": hyp,
        "rules": rules,
        "corroboration": corr,
        "detectors": dets,
        "scores": scores,
    }
    if section is not None:
        evidence["section"] = section
    for sid, summ in (downstream or {}).items():
        if summ.get("open_lanes") and summ.get("open_since") is not None and int(summ["open_since"]) <= start:
            evidence["probable_spillback_of"] = sid
            break
    out = _decision(cfg, INCIDENT, iid, lanes, start, now, sev, delay, flow)
    out.update({"detected_ts": format_ts(now), "confidence": conf, "evidence": evidence})
    return out


def _decision(
    cfg: Mapping[str, Any],
    typ: str,
    iid: str,
    lanes: Iterable[int],
    start: int,
    now: int,
    sev: str,
    delay: float,
    flow: float,
) -> dict[str, Any]:
    """The fields an ``incident`` and an ``incident_updated`` decision share."""
    lane_ids = [cfg["lane_ids"][i] for i in lanes]
    return {
        "type": typ,
        "incident_id": iid,
        "segment_id": cfg["segment_id"],
        "lane": lane_ids[0] if lane_ids else None,
        "lanes": lane_ids,
        "start_ts": format_ts(start),
        "ts": format_ts(now),
        "severity": sev,
        "delay_s_per_veh": round(delay, 1),
        "delay_veh_h_per_h": round(delay * flow / 3600.0, 2),
    }


def _assess(cfg: Mapping[str, Any], state: Mapping[str, Any], iid: str) -> tuple[str, float, float]:
    """Severity, extra delay (s/veh) and flow (veh/h) of incident ``iid`` over all its open lanes."""
    recs = [o for o in state["open"].values() if o["id"] == iid]
    blocking = [o for o in recs if o.get("hyp") != "slow"]
    blocked = max(1, len({i for o in blocking for i in o["lanes"]})) if blocking else 0
    slow_kmh = None
    if not blocking:
        for o in recs:
            if o.get("sec") is not None and o["lanes"]:
                sig = (state["d"].get(cfg["sections"][o["sec"]]["lanes"][str(o["lanes"][0])]) or {}).get("sig")
                if sig and sig[2] is not None:
                    slow_kmh = float(sig[2])
                    break
    # the demand now when it exceeds the flow learned before the incident (a peak building up behind it)
    flow = max(float(state.get("flow") or 0.0), float(state.get("flow_now") or 0.0))
    delay = _delay(cfg, state, blocked, slow_kmh, flow)
    return _severity(int(cfg["lanes"]), blocked, delay, flow, float(cfg["capacity_veh_h"])), delay, flow


def _updated(cfg: Mapping[str, Any], state: dict[str, Any], iid: str, now: int, changes: list[str]) -> dict[str, Any]:
    """An ``incident_updated`` decision for open incident ``iid`` (its lanes or severity changed)."""
    recs = [o for o in state["open"].values() if o["id"] == iid]
    sev, delay, flow = _assess(cfg, state, iid)
    if any(o.get("sev") not in (None, sev) for o in recs) and "severity" not in changes:
        changes = [*changes, "severity"]
    for o in recs:
        o["sev"] = sev
    state["useq"] = int(state.get("useq") or 0) + 1
    lanes = sorted({i for o in recs for i in o["lanes"]})
    start = min(int(o["start_s"]) for o in recs)
    out = _decision(cfg, UPDATED, iid, lanes, start, now, sev, delay, flow)
    out.update({"changes": changes, "update_seq": int(state["useq"])})
    return out


def _maybe_escalate(
    cfg: Mapping[str, Any], state: dict[str, Any], key: str, now: int, out: list[dict[str, Any]]
) -> None:
    """Report an open incident whose severity rose (demand grew against what the blocked lanes leave)."""
    rec = state["open"].get(key)
    if rec is None:
        return
    sev, _, _ = _assess(cfg, state, str(rec["id"]))
    if "sev" not in rec:  # a state saved before severities were kept: start from now
        rec["sev"] = sev
    elif SEVERITY_RANK[sev] > SEVERITY_RANK[str(rec["sev"])]:
        out.append(_updated(cfg, state, str(rec["id"]), now, ["severity"]))


def _maybe_clear(
    cfg: Mapping[str, Any],
    state: dict[str, Any],
    key: str,
    e_lane: float,
    C: float,
    now: int,
    out: list[dict[str, Any]],
) -> None:
    """Clear an open incident once its signature is gone for ``CLEAR_STEPS`` steps.

    Gone: the camera shows no stall evidence and either the lane's evidence fell below ``CLEAR_EVIDENCE``
    or the lane carries at least half its learned share again.
    """
    inc = state["open"][key]
    gone = C <= 0.0 if key == "cam" else False
    if key != "cam":
        rc, ro = float(inc.get("rc", 0.0)), float(inc.get("ro", 0.0))
        back = rc >= 2.0 and rc / max(rc + ro, 1e-9) >= 0.5 * float(inc.get("p", 0.0))
        cam = state.get("cam")
        # the incident's other open lanes explain a halting vehicle the camera sees (it cannot tell lanes)
        shared = any(o["id"] == inc["id"] for k, o in state["open"].items() if k != key)
        if shared:
            cam_ok = True
        elif CLEAR_NEEDS_CAMERA:
            # a healthy camera whose latest clear position still shows a halting vehicle (a stalled car in its
            # zone) holds the incident open, even when the lane's loop counts again (drivers queue behind the
            # stall in its lane and pass the loop upstream of it)
            cam_ok = cam is None or cam.get("fault") is not None or C <= 0.0 or cam.get("clear_q") == 0
        else:
            cam_ok = C < C_CORROBORATE or (cam is not None and cam.get("clear_q") == 0)
        lane_ok = e_lane < CLEAR_EVIDENCE or (back and e_lane < CLEAR_EVIDENCE_BACK)
        # a lane that carries its share again with no evidence left needs no camera confirmation
        gone = lane_ok and (cam_ok or (back and e_lane <= 0.0 and not CLEAR_NEEDS_CAMERA))
    state["clear"][key] = int(state["clear"].get(key, 0)) + 1 if gone else 0
    if state["clear"][key] < CLEAR_STEPS:
        return
    del state["open"][key]
    state["clear"].pop(key, None)
    if key != "cam":
        for name in state["x"]:
            _reset_lane(state, name, int(key))
    if key == "cam" or not state["open"]:
        state["C"] = 0.0
    rest = [o for o in state["open"].values() if o["id"] == inc["id"]]
    if rest:  # other lanes of it are still blocked: narrower, not cleared
        if set(inc["lanes"]) - {i for o in rest for i in o["lanes"]}:
            out.append(_updated(cfg, state, str(inc["id"]), now, ["lanes"]))
        return
    lanes = [cfg["lane_ids"][i] for i in inc["lanes"]]
    out.append(
        {
            "type": CLEARED,
            "incident_id": inc["id"],
            "segment_id": cfg["segment_id"],
            "lane": lanes[0] if lanes else None,
            "lanes": lanes,
            "start_ts": format_ts(inc["start_s"]),
            "ts": format_ts(now),
            "duration_s": int(now - int(inc["start_s"])),
        }
    )


# ---------------------------------------------------------------------------------------------- network


class IncidentDetector:
    """All segments of a network in one object (bench, tests, single-process workers).

    Parameters
    ----------
    configs : Mapping
        Segment id → config (:func:`segment_configs_from_graph`).
    states : Mapping, optional
        Segment id → state to resume from (JSON round-trips).
    """

    def __init__(self, configs: Mapping[str, Mapping[str, Any]], states: Mapping[str, Any] | None = None) -> None:
        self.configs = dict(configs)
        self.states: dict[str, dict[str, Any]] = {
            sid: dict(states[sid]) if states and sid in states else new_segment_state(cfg)
            for sid, cfg in self.configs.items()
        }
        self.summaries: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_graph(cls, G: Any) -> IncidentDetector:
        """Build from a ``citybrain-roadnet/1`` graph."""
        return cls(segment_configs_from_graph(G))

    def _down(self, sid: str) -> dict[str, dict[str, Any]]:
        return {d: self.summaries[d] for d in self.configs[sid]["downstream"] if d in self.summaries}

    def process(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Feed one event (any segment, time order); return its decisions."""
        sid = str(event.get("segment_id"))
        cfg = self.configs.get(sid)
        if cfg is None:
            return []
        st = self.states[sid]
        out = update_segment(cfg, st, event, self._down(sid))
        if out:
            self.summaries[sid] = segment_summary(cfg, st)
        return out

    def process_all(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Feed a time-ordered iterable of events, then flush; return every decision."""
        out: list[dict[str, Any]] = []
        last = None
        for ev in events:
            out += self.process(ev)
            last = ev
        if last is not None:
            ts = int(last["ts_s"]) if "ts_s" in last else parse_ts(last["ts"])
            out += self.flush(ts)
        return out

    def flush(self, now_s: float) -> list[dict[str, Any]]:
        """Close every pending step at stream time ``now_s`` (Unix s)."""
        out: list[dict[str, Any]] = []
        for sid, cfg in self.configs.items():
            out += flush_segment(cfg, self.states[sid], now_s, self._down(sid))
        return out


# ---------------------------------------------------------------------------------------------- baseline


#: Time-of-day bins per day for the univariate baseline.
BASELINE_BINS = 24
#: Learning rate of a bin's mean and mean absolute deviation (per sample in that bin).
BASELINE_ALPHA = 0.1
#: Samples a bin needs before it is trusted (the global baseline is used before).
BASELINE_MIN_SAMPLES = 3
#: Samples before anything is flagged at all (half a day at 5-min spacing).
BASELINE_WARMUP = 144
#: CUSUM allowance (robust z units per sample), threshold, and the z cap per sample.
BASELINE_K = 1.0
BASELINE_H = 15.0
BASELINE_Z_CAP = 6.0
#: An episode ends after this many samples in a row with the CUSUM below BASELINE_H / 4.
BASELINE_CALM_SAMPLES = 6
#: Noise floor of the scale, as a share of the global mean level (linear) or in log units (log scale).
BASELINE_SCALE_FLOOR = 0.05


def new_baseline_state(direction: int = 1, log_scale: bool = False) -> dict[str, Any]:
    """State of the univariate time-of-day baseline detector (one detector series).

    Parameters
    ----------
    direction : int
        +1 when high values are bad (occupancy, travel time), -1 when low values are (speed).
    log_scale : bool
        Model ``log(1 + value)``: for ratio-scale, heavy-tailed series (travel time, occupancy).
    """
    return {
        "dir": 1 if direction >= 0 else -1,
        "log": bool(log_scale),
        "m": [0.0] * BASELINE_BINS,
        "s": [0.0] * BASELINE_BINS,
        "n": [0] * BASELINE_BINS,
        "gm": 0.0,
        "gs": 0.0,
        "gn": 0,
        "S": 0.0,
        "s0": None,
        "open": False,
        "calm": 0,
    }


def update_baseline(state: dict[str, Any], ts_s: float, value: float) -> dict[str, Any] | None:
    """Feed one sample of a single detector series; return a decision when an episode opens or ends.

    The sample is compared with the robust baseline (mean, mean absolute deviation) of its hour of the day,
    learned with winsorised updates so that an anomaly moves it only slowly; the standardised deviation in
    the bad direction feeds a CUSUM (allowance ``BASELINE_K``, threshold ``BASELINE_H``). O(1) per sample.

    Parameters
    ----------
    state : dict
        From :func:`new_baseline_state`, updated in place.
    ts_s : float
        Sample time, Unix s. The hour of the day is taken in UTC: pass local time as UTC for local profiles.
    value : float
        The sample (occupancy %, speed, travel time, ...).

    Returns
    -------
    dict or None
        ``{"type": "anomaly" | "anomaly_cleared", "ts" (Unix s), "start_ts" (Unix s), "score"}``.
    """
    x = math.log1p(max(value, 0.0)) if state["log"] else float(value)
    b = int((ts_s % 86400.0) / 86400.0 * BASELINE_BINS) % BASELINE_BINS
    if state["gn"] == 0:
        state["gm"] = x
    trusted = state["n"][b] >= BASELINE_MIN_SAMPLES
    mu, sc = (state["m"][b], state["s"][b]) if trusted else (state["gm"], state["gs"])
    floor = BASELINE_SCALE_FLOOR * (1.0 if state["log"] else max(abs(state["gm"]), 1e-6))
    scale = max(sc, floor)
    z = max(-BASELINE_Z_CAP, min(BASELINE_Z_CAP, state["dir"] * (x - mu) / (1.25 * scale)))
    armed = state["gn"] >= BASELINE_WARMUP
    s_old = float(state["S"])
    s_new = max(0.0, s_old + z - BASELINE_K) if armed else 0.0
    if s_old <= 0.0 < s_new:
        state["s0"] = ts_s
    state["S"] = s_new
    # winsorised learning: the bin (fast once trusted) and the global level (slow)
    xw = mu + max(-3.0, min(3.0, (x - mu) / scale)) * scale if state["gn"] > 10 else x
    nb = state["n"][b]
    if nb == 0:
        state["m"][b], state["s"][b] = xw, state["gs"]
    else:
        a = BASELINE_ALPHA if nb >= BASELINE_MIN_SAMPLES else 1.0 / (nb + 1)
        state["s"][b] += a * (abs(xw - state["m"][b]) - state["s"][b])
        state["m"][b] += a * (xw - state["m"][b])
    state["n"][b] = nb + 1
    ag = 0.01 if state["gn"] > 100 else 1.0 / (state["gn"] + 1)
    state["gs"] += ag * (abs(xw - state["gm"]) - state["gs"])
    state["gm"] += ag * (xw - state["gm"])
    state["gn"] += 1
    if not state["open"]:
        if s_new >= BASELINE_H:
            state["open"], state["calm"] = True, 0
            return {"type": "anomaly", "ts": ts_s, "start_ts": state["s0"], "score": round(s_new, 2)}
        return None
    state["calm"] = state["calm"] + 1 if s_new < BASELINE_H / 4.0 else 0
    if state["calm"] >= BASELINE_CALM_SAMPLES:
        state["open"] = False
        state["S"] = 0.0
        return {"type": "anomaly_cleared", "ts": ts_s, "start_ts": state["s0"], "score": round(s_new, 2)}
    return None
