"""The console view keeps a suspicion only while the model supports it (issue 16): its
``incident.suspicion_expired`` alert removes it, and the live push tells the browser to drop it."""

from __future__ import annotations

from typing import Any

from ops.settings import Settings
from streams.console_view import OutputView


def _alert(typ: str, iid: str, ts: str, **data: Any) -> dict[str, Any]:
    return {"type": typ, "subject": iid, "time": ts, "data": {"incident_id": iid, "segment_id": "D1D2", **data}}


def test_an_expired_suspicion_leaves_the_view_and_an_incident_stays() -> None:
    view = OutputView(Settings())
    view.apply("alert", _alert("incident.suspected", "D1D2#s1", "2025-01-06T07:30:00Z", kind="blocked lane"))
    view.apply("alert", _alert("incident.suspected", "D1D2#s2", "2025-01-06T07:31:00Z", kind="blocked lane"))
    view.apply("alert", _alert("incident.new", "D1D2#1", "2025-01-06T07:32:00Z", kind="blocked lane"))
    pushed = view.apply(
        "alert", _alert("incident.suspicion_expired", "D1D2#s1", "2025-01-06T07:33:00Z", reason="confirmed")
    )
    assert pushed is not None
    event, payload = pushed
    assert event == "incident" and payload["incident_id"] == "D1D2#s1" and payload["state"] == "suspicion_expired"
    assert sorted(view.incidents) == ["D1D2#1", "D1D2#s2"]
    assert {i["incident_id"] for i in view.snapshot()["incidents"]} == {"D1D2#1", "D1D2#s2"}
    # replayed after a restart (the topic is the store): an expiry seen again, or before its suspicion's
    # record was read, leaves nothing behind
    view.apply("alert", _alert("incident.suspicion_expired", "D1D2#s1", "2025-01-06T07:33:00Z", reason="confirmed"))
    assert sorted(view.incidents) == ["D1D2#1", "D1D2#s2"]
