"""API roles, secrets kept out of logs and `config show`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.runtime import Stack, http_json
from ops.settings import Settings
from streams.topics import bootstrap_of, kafka_client_kwargs

from .conftest import Brokers, RunningStack, unique_settings

pytestmark = pytest.mark.integration
VIEWER, OPERATOR = "viewer-token-7d1f0c", "operator-token-93ab2e"
HOOK_SECRET = "whsec_c2VjcmV0LW5ldmVyLWxvZ2dlZA=="


@pytest.fixture(scope="module")
def secured(brokers: Brokers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = unique_settings(
        brokers,
        auth={
            "users": [
                {"name": "wall", "token": VIEWER, "role": "viewer"},
                {"name": "Li", "token": OPERATOR, "role": "operator"},
            ]
        },
        webhooks={"endpoints": [{"name": "ops", "url": "https://example.invalid/hook", "secret": HOOK_SECRET}]},
    )
    with Stack(s, tmp_path_factory.mktemp("secured")) as st:
        st.start_brokers()
        worker = st.start_worker()
        st.wait_healthy(worker)
        yield RunningStack(st, st.settings, worker, worker)


def call(
    url: str, token: str | None = None, method: str = "GET", body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _raise_incident(s: Settings, incident_id: str) -> None:
    """An ``incident.new`` alert on the alerts topic, as the incident agent writes it."""
    alert = {
        "event_id": f"{incident_id}:1",
        "type": "incident.new",
        "time": "2025-01-06T07:33:00Z",
        "subject": incident_id,
        "data": {"incident_id": incident_id, "segment_id": "C2C1", "severity": "major", "kind": "blocked lane"},
    }

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap_of(s.kafka.brokers), **kafka_client_kwargs(s))
        await p.start()
        try:
            await p.send_and_wait(s.topics.name("alerts"), orjson.dumps(alert), key=incident_id.encode())
        finally:
            await p.stop()

    asyncio.run(produce())


def test_roles(secured: RunningStack) -> None:
    base = secured.worker_url
    assert call(base + "/api/snapshot")[0] == 401
    assert call(base + "/api/snapshot", "wrong-token")[0] == 401
    assert call(base + "/api/snapshot", VIEWER)[0] == 200
    assert call(base + "/api/segments", VIEWER)[0] == 200
    status, body = call(base + "/api/incidents/inc-1/acknowledge", VIEWER, "POST", {"note": "x"})
    assert status == 403 and "operator" in body["error"]
    status, body = call(base + "/api/incidents/inc-1/acknowledge", OPERATOR, "POST", {"note": "x"})
    assert status == 404 and "inc-1" in body["error"]  # not raised yet: nothing to act on
    _raise_incident(secured.settings, "inc-1")
    deadline = time.monotonic() + 30
    while status == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = call(
            base + "/api/incidents/inc-1/acknowledge", OPERATOR, "POST", {"note": "on it", "operator": "spoof"}
        )
    assert status == 202 and body["operator"] == "Li"  # the authenticated name, not the body's
    assert body["claimed_operator"] is None
    # a token does not make a cross-site request acceptable: same-origin JSON in every mode
    req = urllib.request.Request(
        base + "/api/incidents/inc-1/resolve",
        method="POST",
        data=b'{"note":"csrf"}',
        headers={
            "Authorization": f"Bearer {OPERATOR}",
            "Content-Type": "application/json",
            "Origin": "http://evil.example",
        },
    )
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("cross-site POST accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403 and "cross-origin" in json.loads(e.read())["error"]
    assert call(base + "/api/openapi.json")[0] == 200  # the API description is public
    assert http_json(base + "/health")[0] == 200  # probes and Prometheus need no token
    # EventSource cannot send headers: the token goes in the query
    with urllib.request.urlopen(base + f"/api/stream?token={VIEWER}", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.readline().startswith(b"event: hello")


def test_secrets_stay_out_of_logs_and_config_show(secured: RunningStack) -> None:
    log = secured.worker.log_path.read_text(errors="replace")
    for secret in (VIEWER, OPERATOR, HOOK_SECRET, "c2VjcmV0LW5ldmVyLWxvZ2dlZA"):
        assert secret not in log
    env = {**os.environ, "CITYBRAIN_MQTT__PASSWORD": "mqtt-pw-55", "CITYBRAIN_KAFKA__SASL_PASSWORD": "kafka-pw-66"}
    out = subprocess.run(
        [sys.executable, "-m", "ops", "config", "show"], capture_output=True, text=True, env=env, check=True
    )
    shown = json.loads(out.stdout)
    assert shown["mqtt"]["password"] == "**********" and shown["kafka"]["sasl_password"] == "**********"
    assert "mqtt-pw-55" not in out.stdout + out.stderr and "kafka-pw-66" not in out.stdout + out.stderr


def test_bad_settings_fail_clearly(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mqtt]\nport = 99999\n")
    out = subprocess.run(
        [sys.executable, "-m", "ops", "--config", str(cfg), "config", "show"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "mqtt.port" in out.stderr.replace("\n", " ")


def test_open_api_refuses_a_non_loopback_address() -> None:
    """Without ``auth.users`` anyone who reaches the port could act as an operator: the worker refuses to listen
    on anything but loopback, and says how to turn auth on."""
    env = {**os.environ, "CITYBRAIN_WEB_HOST": "0.0.0.0", "CITYBRAIN_KAFKA__BROKERS": "kafka://127.0.0.1:1"}
    env.pop("CITYBRAIN_AUTH__USERS", None)
    out = subprocess.run([sys.executable, "-m", "ops", "worker"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "0.0.0.0" in out.stderr and "auth.users" in out.stderr
