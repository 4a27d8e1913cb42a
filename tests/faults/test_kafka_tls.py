"""Kafka TLS pass-through on Apache Kafka: the whole pipeline against an SSL and a SASL_SSL/PLAIN listener, and an
SSL listener requiring client certificates (mutual TLS).

Kept with the fault tests because it starts its own Apache Kafka (``make test-faults`` runs the real engine);
skipped unless ``CITYBRAIN_TEST_ENGINE=kafka``, or when ``openssl`` is absent. The broker's client port speaks
TLS only, with a server certificate (for 127.0.0.1 and localhost) signed by a CA made with ``openssl`` at test
time, as ``tests/integration/test_mqtt_security.py`` makes the mosquitto one; with ``SASL_SSL`` it also accepts
SASL/PLAIN logins only; with mutual TLS (``TlsFiles(client_ca=...)``, ``ssl.client.auth=required``) it also demands
a client certificate signed by that CA, which citybrain presents through ``kafka.ssl_certfile``/``ssl_keyfile`` (an
encrypted key, opened with ``kafka.ssl_key_password``). Its PLAINTEXT listener on another port is for the broker
itself and the readiness probe. citybrain trusts the CA through ``kafka.ssl_cafile`` and nothing else: the system
trust store does not know it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ops.runtime import Stack
from tests.integration.conftest import Brokers, unique_settings
from tests.pki import issue_client_cert, make_pki

from .conftest import WindowsLost, account, devices, expected_windows, publish, stream, try_produce, wait_published

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka", reason="needs Apache Kafka"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (apt-get install -y openssl)"),
]
USER, PASSWORD = "citybrain", "kafka-tls-pw-3b9d"
KEY_PASSWORD = "kafka-client-key-pw-51f0"
MINUTES = 4


def log_problems(*logs: Path, lines: int = 25) -> str:
    """The last ``lines`` warning, error and traceback lines of each log, for a failure message (the test's
    temporary folder may be gone when someone reads it: pytest keeps the last three runs only)."""
    out = []
    for log in logs:
        hits = [
            line[:300]
            for line in log.read_text(errors="replace").splitlines()
            if any(w in line.lower() for w in ("warn", "error", "traceback", "exception"))
        ]
        out.append(f"--- {log.name} ({len(hits)} problem lines, last {lines}):\n" + "\n".join(hits[-lines:]))
    return "\n".join(out)


@pytest.mark.parametrize(
    ("protocol", "mutual"),
    [pytest.param("SSL", False, id="SSL"), pytest.param("SASL_SSL", False, id="SASL_SSL"),
     pytest.param("SSL", True, id="SSL-mTLS")],
)  # fmt: skip
def test_pipeline_over_tls(
    protocol: str, mutual: bool, brokers: Brokers, tmp_path: Path, record: Callable[..., None]
) -> None:
    """Worker (Faust consumer, producer, changelogs, its aiokafka planner/console clients, topic set-up) and
    bridge (admin client, producer) all connect over TLS, verifying the broker against ``kafka.ssl_cafile``
    (with ``SASL_SSL`` also logging in with the configured SASL user; with mutual TLS presenting the client
    certificate of ``kafka.ssl_certfile``): every reading ends in a segment state read back over TLS. A plaintext
    client, a TLS client trusting another CA or only the system CAs (with ``SASL_SSL`` a SASL client without
    TLS; with mutual TLS a client trusting the CA but without a client certificate, and one whose certificate
    another CA signed) are refused by the same listener, while a probe with the settings' CA (and login, and
    client certificate) gets through: the run cannot have passed over an open door."""
    from ops.real_brokers import ApacheKafkaBroker, TlsFiles

    t_test = time.monotonic()
    sasl = protocol == "SASL_SSL"
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = make_pki(pki_dir)
    # citybrain's own client certificate, its key encrypted: the password must reach the worker and the bridge
    client_cert, client_key = issue_client_cert(
        pki_dir, "citybrain-pipeline", pki.ca, pki.ca_key, key_password=KEY_PASSWORD
    )
    kafka = ApacheKafkaBroker(
        log_dir=tmp_path,
        sasl_users={USER: PASSWORD} if sasl else None,
        tls=TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca if mutual else None),
    ).start()
    try:
        assert kafka.security_protocol == protocol
        login = (
            {"sasl_mechanism": "PLAIN", "sasl_plain_username": USER, "sasl_plain_password": PASSWORD} if sasl else {}
        )
        probes: dict[str, dict[str, Any]] = {
            "plaintext": {},
            "TLS, other CA": {"ssl_context": ssl.create_default_context(cafile=str(pki.other_ca))},
            "TLS, system CAs": {"ssl_context": ssl.create_default_context()},
        }
        if mutual:  # trusting the right CA, but without a client certificate or with one another CA signed
            foreign = ssl.create_default_context(cafile=str(pki.ca))
            foreign.load_cert_chain(pki.other_client_cert, pki.other_client_key)
            probes["TLS, no client certificate"] = {"ssl_context": ssl.create_default_context(cafile=str(pki.ca))}
            probes["TLS, client certificate of another CA"] = {"ssl_context": foreign}
        for kw in probes.values():
            if kw:
                kw.update(security_protocol=protocol, **login)
        if sasl:
            probes["SASL without TLS"] = {"security_protocol": "SASL_PLAINTEXT", **login}
        refused = {name: asyncio.run(try_produce(kafka.bootstrap, **kw)) for name, kw in probes.items()}
        assert all(outcome != "ok" for outcome in refused.values()), refused
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        if mutual:
            trusted.load_cert_chain(client_cert, client_key, KEY_PASSWORD)
        control = asyncio.run(try_produce(kafka.bootstrap, security_protocol=protocol, ssl_context=trusted, **login))
        what = "the CA" + (" and the login" if sasl else "") + (" and a client certificate" if mutual else "")
        assert control == "ok", f"a client with {what} was refused too: {control}"

        security: dict[str, Any] = {"security_protocol": protocol, "ssl_cafile": str(pki.ca)}
        if sasl:
            security.update(sasl_mechanism="PLAIN", sasl_username=USER, sasl_password=PASSWORD)
        if mutual:
            security.update(ssl_certfile=str(client_cert), ssl_keyfile=str(client_key), ssl_key_password=KEY_PASSWORD)
        s = unique_settings(brokers, kafka={"brokers": kafka.url, **security})
        events = stream(MINUTES)
        with Stack(s, tmp_path) as st:
            worker, bridge = st.start_pipeline()
            t_publish = time.monotonic()
            c = devices(s.mqtt.host, s.mqtt.port, f"tls-devices-{s.app_id}", persistent=False)
            wait_published(publish(c, s, events), 30)
            c.disconnect()
            c.loop_stop()
            try:
                acc = account(s, len(events), expected_windows(MINUTES))  # read over TLS (settings' options)
            except WindowsLost as exc:
                raise AssertionError(f"{exc}\n{log_problems(worker.log_path, bridge.log_path)}") from None
            pipeline_s = time.monotonic() - t_publish
            logs = worker.log_path.read_text(errors="replace") + bridge.log_path.read_text(errors="replace")
    finally:
        kafka.cleanup()
    assert acc.lost == 0 and acc.applied == len(events), (acc.applied, acc.dead_reasons)
    assert acc.duplicate_outputs == 0
    assert PASSWORD not in logs and KEY_PASSWORD not in logs
    who = "verify the broker and authenticate" if sasl else "verify the broker"
    listener = f"Kafka {protocol} listener (TLS, own CA)"
    if mutual:
        listener = f"Kafka {protocol} listener requiring client certificates (mutual TLS, own CA)"
        who = "verify the broker and present a client certificate"
    record(
        fault=f"{listener}: worker, bridge and readers {who} (security)",
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        refused_clients=len(refused),
        refusals=refused,
        pipeline_s=round(pipeline_s, 1),
        test_s=round(time.monotonic() - t_test, 1),
    )
