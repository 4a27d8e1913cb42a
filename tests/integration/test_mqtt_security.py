"""MQTT username/password and TLS: the bridge against mosquitto with a password file and a self-signed CA.

Everything is real: mosquitto (Debian package) with ``allow_anonymous false``, a ``mosquitto_passwd`` password
file and a TLS listener whose server certificate (for 127.0.0.1 and localhost) is signed by a CA made with
``openssl`` at test time; the citybrain bridge as a child process; Kafka from the ``brokers`` fixture (Tansu, or
Apache Kafka with ``CITYBRAIN_TEST_ENGINE=kafka``). Skipped when mosquitto, mosquitto_passwd or openssl is absent.
"""

from __future__ import annotations

import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ops.runtime import ChildProcess, Stack, http_json
from ops.settings import Settings
from tests.pki import Pki, make_pki

from .conftest import Brokers, consume_until, unique_settings

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        MOSQUITTO is None or shutil.which("mosquitto_passwd") is None or shutil.which("openssl") is None,
        reason="needs mosquitto, mosquitto_passwd and openssl (apt-get install -y mosquitto openssl)",
    ),
]
BRIDGE_USER, BRIDGE_PW = "citybrain-bridge", "br1dge-pw-4f2a"
DEVICE_USER, DEVICE_PW = "device-gateway", "dev1ce-pw-91c3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated second CA."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_mqtt(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """mosquitto: TLS only, no anonymous clients, a password file with the bridge's and a device's user."""
    from ops.real_brokers import MosquittoBroker

    mq = MosquittoBroker(
        log_dir=tmp_path_factory.mktemp("mosquitto-tls"),
        users={BRIDGE_USER: BRIDGE_PW, DEVICE_USER: DEVICE_PW},
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
    ).start()
    try:
        yield mq
    finally:
        mq.cleanup()


def bridge_settings(brokers: Brokers, mq: Any, ca: Path, password: str) -> Settings:
    return unique_settings(
        brokers,
        mqtt={
            "host": "127.0.0.1",
            "port": mq.port,
            "username": BRIDGE_USER,
            "password": password,
            "tls": True,
            "tls_ca_file": str(ca),
        },
    )


def device_client(mq: Any, ca: Path | None, user: str | None, password: str | None) -> tuple[mqtt.Client, Any]:
    """Connect a device client; returns it (network loop running when connected) and the CONNACK reason code.

    Raises ``ssl.SSLError`` when the TLS handshake fails."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"dev-{time.monotonic_ns()}")
    if ca is not None:
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    if user is not None:
        c.username_pw_set(user, password)
    result: list[Any] = []
    c.on_connect = lambda cl, ud, flags, rc, props: result.append(rc)
    c.connect("127.0.0.1", mq.port)
    c.loop_start()
    deadline = time.monotonic() + 15
    while not result and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result, "no CONNACK from mosquitto"
    return c, result[0]


def flat(records: list[Any]) -> list[dict[str, Any]]:
    """Readings of ``events`` records: one reading each, or a bundle (JSON array) of readings."""
    return [r for rec in records for r in (rec if isinstance(rec, list) else [rec])]


def wait_log(child: ChildProcess, needle: str, timeout_s: float = 45.0) -> str:
    """Wait until ``needle`` is in the child's log; return the log. Fails (with the log tail) on timeout or exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = child.log_path.read_text(errors="replace")
        if needle in text:
            return text
        assert child.alive(), f"{child.name} exited ({child.proc.returncode}) without logging {needle!r}:\n{text}"
        time.sleep(0.25)
    raise AssertionError(f"{child.name} did not log {needle!r} within {timeout_s:.0f} s:\n{child.tail()}")


def test_bridge_forwards_over_tls_with_password(brokers: Brokers, secure_mqtt: Any, pki: Pki, tmp_path: Path) -> None:
    """The bridge logs in with its user over TLS (verifying the server against the configured CA), and a device
    gateway's readings reach Kafka ``events``; the broker refuses anonymous and plaintext clients, so the
    forwarding proves the bridge really authenticated; the password never appears in the bridge's log."""
    s = bridge_settings(brokers, secure_mqtt, pki.ca, BRIDGE_PW)
    c, rc = device_client(secure_mqtt, pki.ca, None, None)  # anonymous over TLS: refused
    c.loop_stop()
    assert rc.is_failure and "authori" in str(rc).lower(), str(rc)
    with pytest.raises((ssl.SSLError, OSError, ConnectionError)):  # plaintext MQTT on the TLS port
        plain = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="plain-dev")
        plain.connect("127.0.0.1", secure_mqtt.port, keepalive=5)
        for _ in range(40):
            if plain.loop(0.25) != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionError("plaintext client dropped by the TLS listener")
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        bridge = st.start_bridge()
        st.wait_healthy(bridge, timeout_s=90)
        dev, rc = device_client(secure_mqtt, pki.ca, DEVICE_USER, DEVICE_PW)
        assert not rc.is_failure, str(rc)
        readings = [
            {
                "type": "loop",
                "detector_id": f"loop_mid_A0left0_{lane}",
                "segment_id": "A0left0",
                "lane": f"A0left0_{lane}",
                "lane_index": lane,
                "role": "mid_link",
                "ts": f"2025-01-06T07:0{minute}:30Z",
                "interval_s": 30,
                "count": 4,
                "occupancy": 0.05,
                "speed_kmh": 42.0,
            }
            for minute in range(5)
            for lane in (0, 1)
        ]
        infos = [
            dev.publish(f"{s.mqtt.topic_root}/{s.city}/loop/{r['detector_id']}", orjson.dumps(r), qos=1)
            for r in readings
        ]
        for info in infos:
            info.wait_for_publish(10)
        dev.disconnect()
        dev.loop_stop()
        got = consume_until(
            brokers.bootstrap, s.topics.name("events"), lambda rs: len(flat(rs)) >= len(readings), timeout_s=60
        )
        _, body = http_json(f"http://127.0.0.1:{bridge.web_port}/health")  # type: ignore[attr-defined]
        log = bridge.log_path.read_text(errors="replace")
    assert sorted((g["detector_id"], g["ts"]) for g in flat(got)) == sorted(
        (r["detector_id"], r["ts"]) for r in readings
    )
    assert body["forwarded"] == len(readings) and body["dead_lettered"] == 0
    assert "MQTT connected" in log
    assert BRIDGE_PW not in log


def test_wrong_password_is_a_clear_error(brokers: Brokers, secure_mqtt: Any, pki: Pki, tmp_path: Path) -> None:
    """A wrong MQTT password: the bridge stays up, unhealthy (503), logs that the broker refused it and why,
    and retries with backoff (a handful of attempts, not a hot loop); it never logs the password it tried."""
    s = bridge_settings(brokers, secure_mqtt, pki.ca, "not-the-password")
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        bridge = st.start_bridge()
        log = wait_log(bridge, "refused")
        t_first = time.monotonic()
        time.sleep(4)  # watch the retries for a while
        log = bridge.log_path.read_text(errors="replace")
        elapsed = time.monotonic() - t_first
        status, body = http_json(f"http://127.0.0.1:{bridge.web_port}/health")  # type: ignore[attr-defined]
        assert bridge.alive()
    refusals = [line for line in log.splitlines() if "refused" in line]
    print(refusals[0])
    assert "not authori" in refusals[0].lower() or "bad user name or password" in refusals[0].lower(), refusals[0]
    assert "mqtt.username" in refusals[0] and f"127.0.0.1:{secure_mqtt.port}" in refusals[0]
    assert status == 503 and body["status"] == "starting"
    assert 1 <= len(refusals) <= 2 + elapsed, refusals  # backoff from 1 s: at most ~1 attempt per second
    assert "not-the-password" not in log


def test_untrusted_ca_is_a_clear_error(brokers: Brokers, secure_mqtt: Any, pki: Pki, tmp_path: Path) -> None:
    """The broker's certificate signed by a CA the bridge does not trust: the bridge stays up, unhealthy, and
    logs that the TLS handshake failed certificate verification (instead of retrying silently)."""
    s = bridge_settings(brokers, secure_mqtt, pki.other_ca, BRIDGE_PW)
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        bridge = st.start_bridge()
        log = wait_log(bridge, "certificate verify failed")
        status, body = http_json(f"http://127.0.0.1:{bridge.web_port}/health")  # type: ignore[attr-defined]
        assert bridge.alive()
    line = next(line for line in log.splitlines() if "certificate verify failed" in line)
    print(line)
    assert f"127.0.0.1:{secure_mqtt.port}" in line and "mqtt.tls_ca_file" in line
    assert status == 503 and body["status"] == "starting"
