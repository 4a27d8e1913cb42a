"""The console view's operator actions: a history per incident, no phantom incidents, replays counted once."""

from __future__ import annotations

from typing import Any

from ops.settings import Settings
from streams.console_view import OutputView


def _alert(iid: str) -> dict[str, Any]:
    return {"type": "incident.new", "time": "2025-01-06T07:33:00Z", "data": {"incident_id": iid, "segment_id": "S"}}


def _action(n: int, iid: str, action: str = "acknowledge", operator: str = "unauthenticated") -> dict[str, Any]:
    return {
        "action_id": f"a{n}",
        "target": "incident",
        "target_id": iid,
        "action": action,
        "operator": operator,
        "claimed_operator": f"person {n}",
        "note": f"note {n}",
        "at": f"2025-01-06T07:3{n}:00Z",
    }


def test_acknowledgements_append_and_the_first_stays() -> None:
    view = OutputView(Settings())
    view.apply("alert", _alert("I1"))
    for n in (1, 2, 3):
        view.apply("action", _action(n, "I1"))
    view.apply("action", _action(2, "I1"))  # the same record again (the view re-read the topic)
    inc = view.incidents["I1"]
    assert [a["note"] for a in inc["actions"]] == ["note 1", "note 2", "note 3"]
    assert inc["ack_note"] == "note 1" and inc["actions"][0]["claimed_operator"] == "person 1"
    view.apply("action", _action(4, "I1", "resolve"))
    assert view.incidents["I1"]["state"] == "resolved" and len(view.incidents["I1"]["actions"]) == 4


def test_an_action_before_its_incident_waits_and_makes_no_phantom() -> None:
    view = OutputView(Settings())
    assert view.apply("action", _action(1, "I2")) is None
    assert view.snapshot()["incidents"] == [] and not view.knows("incident", "I2")
    view.apply("alert", _alert("I2"))
    assert view.knows("incident", "I2")
    assert view.incidents["I2"]["acknowledged_by"] == "unauthenticated"
    assert [a["action_id"] for a in view.incidents["I2"]["actions"]] == ["a1"]


def test_recommendation_decisions() -> None:
    view = OutputView(Settings())
    view.apply("recommendation", {"tls_id": "B1", "recommendation_id": "r1"})
    assert view.knows("recommendation", "r1") and not view.knows("recommendation", "B1")
    act = {**_action(1, "r1", "accept"), "target": "recommendation"}
    view.apply("action", act)
    view.apply("recommendation", {"tls_id": "B1", "recommendation_id": "r1", "cycle_s": 90})  # re-published
    rec = view.recommendations["B1"]
    assert rec["decision"]["action"] == "accept" and len(rec["actions"]) == 1
    view.apply("recommendation", {"tls_id": "B1", "recommendation_id": "r2"})  # the next period's
    assert view.recommendations["B1"]["decision"] is None and view.recommendations["B1"]["actions"] == []
