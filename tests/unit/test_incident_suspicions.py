"""Suspected incidents (issue 16, item 4): a suspicion carries its kind, lanes, evidence and start, and ends with
one ``incident_suspicion_expired`` decision when its evidence goes away (the lane counts again, the loop turns
out faulty, it is confirmed, or nothing decides it within ``SUSPICION_MAX_S``), so the console never keeps
stale suspicions. Hand-made cases on the two-lane approach of ``test_incidents``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from models.incidents import (
    FAULT,
    INCIDENT,
    SUSPECTED,
    SUSPICION_EXPIRED,
    SUSPICION_MAX_S,
    ZERO,
    IncidentDetector,
    new_segment_state,
    segment_configs_from_graph,
    update_segment,
)
from roadnet import load_trafficnet
from tests.unit.test_incidents import ONSET, ONSET_STEP, SEG, T0, _network, at, run, traffic


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    return segment_configs_from_graph(load_trafficnet(_network()))


def _zeros(det: str, first: int, last: int) -> Callable[[int, str, dict[str, Any]], dict[str, Any]]:
    """Loop ``det`` reads exact zeros in steps ``first..last`` (its vehicles still pass)."""

    def reading(k: int, did: str, ev: dict[str, Any]) -> dict[str, Any]:
        if did == det and first <= k <= last:
            return {**ev, "count": 0, "occupancy": 0.0, "speed_kmh": None}
        return ev

    return reading


def _suspicions(out: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [d for d in out if d["type"] == SUSPECTED], [d for d in out if d["type"] == SUSPICION_EXPIRED]


def test_a_suspicion_says_what_where_and_since_when_and_expires_when_the_loop_is_found_dead(
    configs: dict[str, dict[str, Any]],
) -> None:
    out = run(configs, traffic(45, reading=_zeros("loop_mid_1", ONSET_STEP + 1, 10**6)))
    (s,), (x,) = _suspicions(out)
    assert s["kind"] == "blocked lane" and s["lanes"] == [f"{SEG}_1"] and s["lane"] == f"{SEG}_1"
    assert s["incident_id"].startswith(f"{SEG}#s") and s["detector_id"] == "loop_mid_1"
    assert 0 <= at(s, "start_ts") - ONSET <= 60 and at(s) >= at(s, "start_ts")
    assert s["evidence"]["scores"]["block"] >= 7.0 and "reason" in s["evidence"]
    # the loop is found dead (a zero fault): the suspicion ends then, with the same id
    (fault,) = [d for d in out if d["type"] == FAULT]
    assert fault["fault"] == ZERO and x["incident_id"] == s["incident_id"]
    assert x["reason"] == "device_fault" and at(x) == at(fault)
    assert x["kind"] == s["kind"] and x["lanes"] == s["lanes"] and x["start_ts"] == s["start_ts"]
    assert [d for d in out if d["type"] == INCIDENT] == []


def test_a_suspicion_expires_when_the_lane_counts_again(configs: dict[str, dict[str, Any]]) -> None:
    """Zeros for 90 s (a loop dropout), then normal counts: suspected, then expired, never an incident."""
    out = run(configs, traffic(45, reading=_zeros("loop_mid_1", ONSET_STEP + 1, ONSET_STEP + 3)))
    (s,), (x,) = _suspicions(out)
    assert x["incident_id"] == s["incident_id"] and x["reason"] in ("lane_counts_again", "evidence_gone")
    assert 0 < at(x) - ONSET <= 5 * 60
    assert [d for d in out if d["type"] == INCIDENT] == []


def test_an_unconfirmed_suspicion_expires_after_a_bounded_time_and_is_not_raised_again() -> None:
    """Mid-link loops only (no camera, no reference section): nothing can tell a dead loop from a blocked lane
    until the long zero rule, so the suspicion times out first, once."""
    net = _network()
    net["detectors"] = [d for d in net["detectors"] if d.get("role") == "mid_link"]
    cfgs = segment_configs_from_graph(load_trafficnet(net))
    out = run(cfgs, traffic(60, reading=_zeros("loop_mid_1", ONSET_STEP + 1, 10**6)))
    (s,), (x,) = _suspicions(out)
    assert x["reason"] == "unconfirmed" and x["incident_id"] == s["incident_id"]
    assert at(x) - at(s) == pytest.approx(SUSPICION_MAX_S, abs=30)
    assert [d for d in out if d["type"] == INCIDENT] == []


def test_a_confirmed_suspicion_ends_pointing_at_its_incident(configs: dict[str, dict[str, Any]]) -> None:
    """A real blocked lane (its vehicles move to lane 0): if it is suspected first, the suspicion ends when the
    incident is raised, naming it."""
    out = run(configs, traffic(40, mid=lambda k, i, c: c if k <= ONSET_STEP else (0 if i == 1 else c + 2)))
    (inc,) = [d for d in out if d["type"] == INCIDENT]
    sus, exp = _suspicions(out)
    assert len(sus) == len(exp)
    for s, x in zip(sus, exp, strict=True):
        assert x["incident_id"] == s["incident_id"] != inc["incident_id"]
        if x["reason"] == "confirmed":
            assert x["confirmed_incident_id"] == inc["incident_id"] and at(x) == at(inc)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_never_more_suspicions_open_than_supported(configs: dict[str, dict[str, Any]], seed: int) -> None:
    """Over a run with a 90-s dropout on each lane, every suspicion is expired once, after it was raised, ids are
    never reused, and no dropout is an incident."""
    r1 = _zeros("loop_mid_1", ONSET_STEP + 1, ONSET_STEP + 3)
    r0 = _zeros("loop_mid_0", ONSET_STEP + 30, ONSET_STEP + 33)
    out = run(configs, traffic(80, seed=seed, reading=lambda k, d, ev: r0(k, d, r1(k, d, ev))))
    opened: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for d in out:
        if d["type"] == SUSPECTED:
            assert d["incident_id"] not in seen
            seen.add(d["incident_id"])
            opened[d["incident_id"]] = d
        elif d["type"] == SUSPICION_EXPIRED:
            assert opened.pop(d["incident_id"])["lane"] == d["lane"]
    assert opened == {}
    assert [d for d in out if d["type"] == INCIDENT] == []


def test_suspicions_are_identical_on_replay_and_survive_a_state_round_trip(configs: dict[str, dict[str, Any]]) -> None:
    events = list(traffic(45, reading=_zeros("loop_mid_1", ONSET_STEP + 1, ONSET_STEP + 3)))
    ref = IncidentDetector(configs).process_all(iter(events))
    cfg = configs[SEG]
    state = new_segment_state(cfg)
    out: list[dict[str, Any]] = []
    for k, ev in enumerate(events):
        if k % 10 == 0:
            state = json.loads(json.dumps(state))  # changelog round trips, one while the suspicion is open
        out += update_segment(cfg, state, ev)
    pick = (SUSPECTED, SUSPICION_EXPIRED)
    assert [d for d in out if d["type"] in pick] == [d for d in ref if d["type"] in pick] != []


def test_a_suspicion_ends_when_its_segment_falls_silent(configs: dict[str, dict[str, Any]]) -> None:
    """No readings at all after the suspicion (a cabinet lost power): the idle flush reports the loops silent
    and ends the suspicion, instead of leaving it on the console until data returns."""
    events = list(traffic(45, reading=_zeros("loop_mid_1", ONSET_STEP + 1, 10**6)))
    det = IncidentDetector(configs)
    out: list[dict[str, Any]] = []
    for ev in events:
        if at(ev) > ONSET + 90:
            break
        out += det.process(ev)
    (s,), () = _suspicions(out)
    later = det.flush(float(T0 + ONSET + 300))
    (x,) = [d for d in later if d["type"] == SUSPICION_EXPIRED]
    assert x["incident_id"] == s["incident_id"] and x["reason"] == "device_fault"
    assert {d["fault"] for d in later if d["type"] == FAULT} == {"silent"}


def test_a_suspicion_saved_by_the_previous_state_version_still_expires(configs: dict[str, dict[str, Any]]) -> None:
    """Version 3 kept only the step time of a suspicion (and the stream layer named it ``{segment}~{lane}@{ts}``):
    after the upgrade it expires under that name."""
    cfg = configs[SEG]
    state = new_segment_state(cfg)
    out: list[dict[str, Any]] = []
    events = iter(traffic(45, reading=_zeros("loop_mid_1", ONSET_STEP + 1, ONSET_STEP + 3)))
    for ev in events:
        out += update_segment(cfg, state, ev)
        if _suspicions(out)[0]:
            break
    (s,) = _suspicions(out)[0]
    state["susp"] = {"1": at(s) + T0}  # as version 3 saved it
    state["v"] = 3
    state.pop("sseq")
    later: list[dict[str, Any]] = []
    for ev in events:
        later += update_segment(cfg, state, ev)
    (x,) = [d for d in later if d["type"] == SUSPICION_EXPIRED]
    assert x["incident_id"] == f"{SEG}~{SEG}_1@{s['ts']}" and x["lanes"] == [f"{SEG}_1"]
    assert state["v"] == new_segment_state(cfg)["v"] and state["sseq"] == 0
