"""Hostile input on the worker's HTTP API without authentication (issue #15, defects 3-5).

One worker (no ``auth.users``: the open demo mode, bound to loopback) with one incident and one signal
recommendation on its output topics; each test sends what a hostile web page or a careless script would and checks
what the API answers and what the console's view (``/api/snapshot``) then shows. Each records a row for the fault
table: requests tried, failures (a request that was wrongly accepted, a 5xx, or a 4xx without a reason) and what
the operator sees.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.runtime import ChildProcess, Stack, http_json
from ops.settings import Settings
from streams.topics import bootstrap_of, kafka_client_kwargs
from tests.integration.conftest import Brokers, unique_settings

from .conftest import wait_for

pytestmark = pytest.mark.faults
INCIDENT = "C2C1#1"
REC_ID = "0f3c9a1b2d4e5f60"
TLS = "B1"


@dataclass
class Api:
    """A running worker and where to reach it."""

    settings: Settings
    worker: ChildProcess
    base: str

    def post(self, path: str, body: bytes | None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST raw bytes → (status, decoded JSON body or the raw text)."""
        req = urllib.request.Request(self.base + path, method="POST", data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"null")
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def incident(self) -> dict[str, Any]:
        return next(i for i in http_json(self.base + "/api/snapshot")[1]["incidents"] if i["incident_id"] == INCIDENT)

    def recommendation(self) -> dict[str, Any]:
        recs = http_json(self.base + "/api/snapshot")[1]["recommendations"]
        return next(r for r in recs if r["recommendation_id"] == REC_ID)


JSON = {"Content-Type": "application/json"}


def _outputs(s: Settings) -> None:
    """One incident on ``alerts`` and one recommendation on ``signal-recommendations``, as the agents write them."""
    alert = {
        "event_id": f"{INCIDENT}:1",
        "type": "incident.new",
        "time": "2025-01-06T07:33:00Z",
        "subject": INCIDENT,
        "data": {
            "incident_id": INCIDENT,
            "segment_id": "C2C1",
            "lanes": [1],
            "severity": "major",
            "kind": "blocked lane",
            "detected_at": "2025-01-06T07:33:00Z",
        },
    }
    rec = {"recommendation_id": REC_ID, "tls_id": TLS, "cycle_s": 90.0, "green_s": [40.0, 40.0], "reason": "test"}

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap_of(s.kafka.brokers), **kafka_client_kwargs(s))
        await p.start()
        try:
            await p.send_and_wait(s.topics.name("alerts"), orjson.dumps(alert), key=INCIDENT.encode())
            await p.send_and_wait(s.topics.name("recommendations"), orjson.dumps(rec), key=TLS.encode())
        finally:
            await p.stop()

    asyncio.run(produce())


@pytest.fixture(scope="module")
def api(brokers: Brokers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    s = unique_settings(brokers)
    with Stack(s, tmp_path_factory.mktemp("api-hostile")) as st:
        st.start_brokers()
        worker = st.start_worker()
        st.wait_healthy(worker)
        a = Api(st.settings, worker, f"http://127.0.0.1:{worker.web_port}")  # type: ignore[attr-defined]
        _outputs(st.settings)

        def both_seen() -> bool:
            snap = http_json(a.base + "/api/snapshot")[1] or {}
            return any(i.get("incident_id") == INCIDENT for i in snap.get("incidents", [])) and any(
                r.get("recommendation_id") == REC_ID for r in snap.get("recommendations", [])
            )

        wait_for(both_seen, 60, "the incident and the recommendation in the console view")
        yield a


def _has_reason(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str) and len(body["error"]) > 5


def test_cross_site_posts_refused_and_operator_unauthenticated(api: Api, record: Callable[..., None]) -> None:
    """Defect 3: a foreign page cannot act (CSRF), and without auth the operator is recorded as unauthenticated."""
    path = f"/api/incidents/{INCIDENT.replace('#', '%23')}/resolve"
    body = b'{"operator":"evil-site","note":"csrf"}'
    same_origin = api.base
    hostile: list[tuple[str, dict[str, str], int]] = [
        # the request: a "simple" cross-site POST a page can send without a CORS preflight
        ("text/plain from a foreign page", {"Origin": "http://evil.example", "Content-Type": "text/plain"}, 415),
        (
            "form from a foreign page",
            {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
            415,
        ),
        (
            "multipart from a foreign page",
            {"Origin": "http://evil.example", "Content-Type": "multipart/form-data; boundary=x"},
            415,
        ),
        ("text/plain without Origin", {"Content-Type": "text/plain"}, 415),
        ("no Content-Type", {}, 415),
        ("JSON from a foreign page", {"Origin": "http://evil.example", **JSON}, 403),
        ("JSON from an opaque origin", {"Origin": "null", **JSON}, 403),
        ("JSON from another port", {"Origin": same_origin.rsplit(":", 1)[0] + ":1", **JSON}, 403),
        ("JSON, same origin over https", {"Origin": same_origin.replace("http:", "https:"), **JSON}, 403),
        ("text/plain, same origin", {"Origin": same_origin, "Content-Type": "text/plain"}, 415),
    ]
    failures = []
    for what, headers, expected in hostile:
        status, answer = api.post(path, body, headers)
        if status != expected or not _has_reason(answer):
            failures.append((what, status, answer))
    inc = api.incident()
    assert inc["state"] != "resolved" and "evil-site" not in json.dumps(inc), inc
    assert failures == [], failures

    # the console's own request (same origin, JSON) and a script's (no Origin, JSON) still work
    status, rec = api.post(
        f"/api/incidents/{INCIDENT.replace('#', '%23')}/acknowledge",
        b'{"operator":"Li","note":"on it"}',
        {"Origin": same_origin, **JSON},
    )
    assert status == 202, rec
    assert rec["operator"] == "unauthenticated" and rec["claimed_operator"] == "Li"  # the body's name is a claim
    status, rec = api.post(f"/api/recommendations/{REC_ID}/reject", b'{"note":"script"}', JSON)
    assert status == 202 and rec["operator"] == "unauthenticated", rec
    wait_for(lambda: bool(api.incident().get("actions")), 30, "the acknowledgement in the view")
    shown = api.incident()
    assert shown["acknowledged_by"] == "unauthenticated" and shown["actions"][0]["claimed_operator"] == "Li"
    log = api.worker.log_path.read_text(errors="replace")
    assert "without authentication" in log  # the start message says the API is open (and on loopback only)
    record(
        fault="cross-site POSTs to the action API without auth (CSRF: text/plain, forms, foreign Origin)",
        requests=len(hostile) + 2,
        failures=len(failures),
        operator_sees="nothing changes; the console's own actions work and show 'by unauthenticated (says Li)'",
    )


def test_action_api_rejects_bad_ids_bodies_and_keeps_history(api: Api, record: Callable[..., None]) -> None:
    """Defect 4: unknown ids 404, bad JSON or fields 400 with a reason, length limits, acknowledgements appended."""
    inc = INCIDENT.replace("#", "%23")
    ok_first = api.post(f"/api/incidents/{inc}/acknowledge", b'{"note":"first"}', JSON)
    assert ok_first[0] == 202, ok_first
    cases: list[tuple[str, str, bytes, int]] = [
        ("unknown incident", "/api/incidents/NO_SUCH_INCIDENT/acknowledge", b'{"note":"x"}', 404),
        ("7,000-character id", "/api/incidents/" + "x" * 7000 + "/acknowledge", b"{}", 400),
        ("broken JSON", f"/api/incidents/{inc}/acknowledge", b'{"note": ', 400),
        ("JSON array", f"/api/incidents/{inc}/acknowledge", b"[1, 2]", 400),
        ("note not a string", f"/api/incidents/{inc}/acknowledge", b'{"note": 5}', 400),
        ("note of 5,000 characters", f"/api/incidents/{inc}/acknowledge", orjson.dumps({"note": "n" * 5000}), 400),
        ("operator of 500 characters", f"/api/incidents/{inc}/acknowledge", orjson.dumps({"operator": "o" * 500}), 400),
        ("unknown field", f"/api/incidents/{inc}/acknowledge", b'{"note":"x","state":"resolved"}', 400),
        ("signal id instead of a recommendation id", f"/api/recommendations/{TLS}/accept", b"{}", 404),
        ("unknown recommendation", "/api/recommendations/A0/accept", b"{}", 404),
        ("unknown action", f"/api/incidents/{inc}/delete", b"{}", 404),
    ]
    failures = []
    for what, path, body, expected in cases:
        status, answer = api.post(path, body, JSON)
        if status != expected or not _has_reason(answer):
            failures.append((what, status, answer))
    ok_second = api.post(f"/api/incidents/{inc}/acknowledge", b'{"note":"second"}', JSON)
    assert ok_second[0] == 202, ok_second
    snap = http_json(api.base + "/api/snapshot")[1]
    phantoms = [i for i in snap["incidents"] if i["incident_id"] != INCIDENT]
    assert phantoms == []  # no "incident on — unknown" for ids nobody raised
    assert failures == [], failures

    def history() -> list[str]:
        return [a.get("note") for a in api.incident().get("actions", []) if a.get("action") == "acknowledge"]

    wait_for(lambda: history()[-2:] == ["first", "second"], 30, "both acknowledgements in the view")
    assert api.incident()["ack_note"] != ""  # the broken body did not overwrite anything
    record(
        fault="malformed operator actions (unknown/over-long ids, broken JSON, wrong field types, unknown fields)",
        requests=len(cases) + 2,
        failures=len(failures),
        operator_sees="each refused with a reason; no phantom incident; every acknowledgement kept in order",
    )


def test_greenwave_rejects_non_finite_and_out_of_range_depart(api: Api, record: Callable[..., None]) -> None:
    """Defect 5: ``depart`` NaN, ±inf, 1e308 or not a number → 400 with a reason, never a 500 or a traceback."""
    bad = ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "-1e308", "-5", "99999999999", "abc", "0x10", "1_0"]
    failures = []
    for depart in bad:
        status, answer = api.get(f"/api/greenwave?from=A0&to=D3&depart={depart}")
        if status != 400 or not _has_reason(answer) or "depart" not in answer["error"]:
            failures.append((depart, status, answer))
    for params in ["from=A0", "to=D3", "from=" + "A" * 300 + "&to=D3"]:
        status, answer = api.get(f"/api/greenwave?{params}")
        if status != 400 or not _has_reason(answer):
            failures.append((params, status, answer))
    status, plan = api.get("/api/greenwave?from=A0&to=D3&depart=1736146800")
    assert status == 200, plan
    assert failures == [], failures
    log = api.worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    record(
        fault="green-wave request with non-finite or out-of-range parameters (nan, inf, 1e308, …)",
        requests=len(bad) + 4,
        failures=len(failures),
        operator_sees="400 naming the parameter and its range; no traceback in the worker log",
    )


def test_client_mistakes_logged_at_info_without_traceback_or_colour(api: Api) -> None:
    """A malformed HTTP request is the client's mistake: 400, one info line, no traceback; and the worker's
    stderr is a file here, not a terminal, so no ANSI colour escape codes anywhere in its log."""
    port = int(api.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /api/snapshot HTTP/1.1\r\nHost: x\r\nNot a header line\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.split(b" ", 2)[1] == b"400", answer
    time.sleep(1.0)  # the worker writes its log line after answering
    log = Path(api.worker.log_path).read_text(errors="replace")
    assert "\x1b[" not in log
    assert "Traceback" not in log
    line = next(ln for ln in log.splitlines() if "Not a header line" in ln)
    assert "[info" in line and "client error 400" in line, line
