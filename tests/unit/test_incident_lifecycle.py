"""Incident-model decisions → lifecycle alerts (``streams.agents.segment_state.lifecycle_alerts``): stable ids,
full records on every change, metrics read back from an injected registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from streams.agents.segment_state import lifecycle_alerts
from streams.metrics import WorkerMetrics

NEW = {
    "type": "incident",
    "incident_id": "B2C2#1",
    "segment_id": "B2C2",
    "lane": "B2C2_1",
    "lanes": ["B2C2_1"],
    "start_ts": "2025-01-06T07:11:30Z",
    "detected_ts": "2025-01-06T07:12:00Z",
    "ts": "2025-01-06T07:12:00Z",
    "severity": "medium",
    "confidence": 0.86,
    "delay_s_per_veh": 5.9,
    "delay_veh_h_per_h": 0.99,
    "evidence": {"hypothesis": "block", "rules": ["lane_starved"], "detectors": ["loop_mid_B2C2_1"]},
}
UPDATED = {
    "type": "incident_updated",
    "incident_id": "B2C2#1",
    "segment_id": "B2C2",
    "lane": "B2C2_0",
    "lanes": ["B2C2_0", "B2C2_1"],
    "start_ts": "2025-01-06T07:11:30Z",
    "ts": "2025-01-06T07:15:00Z",
    "severity": "high",
    "delay_s_per_veh": 61.0,
    "delay_veh_h_per_h": 9.5,
    "changes": ["lanes", "severity"],
    "update_seq": 1,
}
CLEARED = {
    "type": "incident_cleared",
    "incident_id": "B2C2#1",
    "segment_id": "B2C2",
    "lane": "B2C2_1",
    "lanes": ["B2C2_1"],
    "start_ts": "2025-01-06T07:11:30Z",
    "ts": "2025-01-06T07:22:00Z",
    "duration_s": 630,
}
SUSPECTED = {
    "type": "incident_suspected",
    "segment_id": "B2C2",
    "lane": "B2C2_0",
    "detector_id": "loop_mid_B2C2_0",
    "ts": "2025-01-06T07:30:00Z",
    "start_ts": "2025-01-06T07:29:00Z",
    "evidence": {},
}


def locate(sid: str) -> dict[str, Any]:
    return {"x_m": 450.0, "y_m": 900.0}


def test_one_incident_new_updated_cleared_with_stable_ids_and_full_records() -> None:
    metrics = WorkerMetrics.create(CollectorRegistry())
    state: dict[str, Any] = {}
    alerts = [a for d in (NEW, UPDATED, CLEARED) for a in lifecycle_alerts([d], state, locate, metrics)]
    assert [a.type for a in alerts] == ["incident.new", "incident.updated", "incident.cleared"]
    assert [a.event_id for a in alerts] == ["B2C2#1:new", "B2C2#1:updated:1", "B2C2#1:cleared"]
    assert {a.subject for a in alerts} == {"B2C2#1"}
    new, upd, clr = (a.data for a in alerts)
    assert new["kind"] == "blocked lane" and new["x_m"] == 450.0 and new["detected_at"] == "2025-01-06T07:12:00Z"
    # the update carries what changed and everything it did not (the compacted topic keeps only the latest)
    assert upd["state"] == "updated" and upd["lanes"] == ["B2C2_0", "B2C2_1"] and upd["severity"] == "high"
    assert upd["estimated_delay_veh_h"] == 9.5 and upd["changes"] == ["lanes", "severity"]
    assert upd["kind"] == "blocked lane" and upd["x_m"] == 450.0 and upd["evidence"]["hypothesis"] == "block"
    assert upd["detected_at"] == "2025-01-06T07:12:00Z" and upd["estimated_start"] == "2025-01-06T07:11:30Z"
    assert clr["state"] == "cleared" and clr["cleared_at"] == "2025-01-06T07:22:00Z" and clr["severity"] == "high"
    assert "changes" not in clr and "update_seq" not in clr
    assert state["incs"] == {}  # nothing kept once cleared
    assert [metrics.incidents.labels(s)._value.get() for s in ("new", "updated", "cleared")] == [1, 1, 1]


def test_processing_the_same_decisions_again_gives_the_same_alerts() -> None:
    """After a crash a batch is processed again from the restored table entry: same ids, same records."""
    metrics = WorkerMetrics.create(CollectorRegistry())
    state: dict[str, Any] = {}
    lifecycle_alerts([NEW], state, locate, metrics)
    saved = {"incs": {k: dict(v) for k, v in state["incs"].items()}}
    first = lifecycle_alerts([UPDATED], state, locate, metrics)
    again = lifecycle_alerts([UPDATED], saved, locate, metrics)
    assert [(a.event_id, a.data) for a in first] == [(a.event_id, a.data) for a in again]


def test_a_suspicion_is_an_alert_but_is_not_kept() -> None:
    metrics = WorkerMetrics.create(CollectorRegistry())
    state: dict[str, Any] = {}
    (alert,) = lifecycle_alerts([SUSPECTED], state, locate, metrics)
    assert alert.type == "incident.suspected" and alert.event_id.endswith(":suspected")
    assert state["incs"] == {}  # its id is its own: keeping it would grow the table entry for ever


SUSPECTED_V4 = {
    "type": "incident_suspected",
    "incident_id": "B2C2#s1",
    "segment_id": "B2C2",
    "kind": "blocked lane",
    "lane": "B2C2_0",
    "lanes": ["B2C2_0"],
    "detector_id": "loop_mid_B2C2_0",
    "ts": "2025-01-06T07:30:00Z",
    "suspected_ts": "2025-01-06T07:30:00Z",
    "start_ts": "2025-01-06T07:29:00Z",
    "evidence": {"reason": "lane empty while its neighbours flow: blocked lane or dead loop", "scores": {}},
}
EXPIRED = {
    **{k: v for k, v in SUSPECTED_V4.items() if k != "evidence"},
    "type": "incident_suspicion_expired",
    "ts": "2025-01-06T07:33:00Z",
    "reason": "lane_counts_again",
    "duration_s": 180,
}


def test_a_suspicion_says_what_and_since_when_and_its_expiry_has_a_stable_id() -> None:
    metrics = WorkerMetrics.create(CollectorRegistry())
    state: dict[str, Any] = {}
    sus, exp = (a for d in (SUSPECTED_V4, EXPIRED) for a in lifecycle_alerts([d], state, locate, metrics))
    assert (sus.type, sus.event_id, sus.subject) == ("incident.suspected", "B2C2#s1:suspected", "B2C2#s1")
    assert (exp.type, exp.event_id) == ("incident.suspicion_expired", "B2C2#s1:suspicion_expired")
    assert exp.subject == "B2C2#s1"
    for a in (sus, exp):  # what the console shows: kind, lanes, start, detection time, where
        assert a.data["kind"] == "blocked lane" and a.data["lanes"] == ["B2C2_0"] and a.data["x_m"] == 450.0
        assert a.data["estimated_start"] == "2025-01-06T07:29:00Z" and a.data["detected_at"] == "2025-01-06T07:30:00Z"
        assert "suspected" in a.data["summary"]
    assert sus.data["state"] == "suspected" and exp.data["state"] == "suspicion_expired"
    assert exp.data["reason"] == "lane_counts_again" and exp.data["expired_at"] == "2025-01-06T07:33:00Z"
    assert state["incs"] == {}
    assert [metrics.incidents.labels(s)._value.get() for s in ("suspected", "suspicion_expired")] == [1, 1]
    again = lifecycle_alerts([SUSPECTED_V4, EXPIRED], {}, locate, metrics)  # a batch processed again
    assert [(a.event_id, a.data) for a in again] == [(sus.event_id, sus.data), (exp.event_id, exp.data)]
