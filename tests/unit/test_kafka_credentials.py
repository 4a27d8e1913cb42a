"""Kafka SASL/TLS settings reach every Kafka client citybrain makes: Faust's broker credentials (and through
them the aiokafka producer and consumers Faust creates) and the aiokafka clients of the bridge, replay, CLI
and agents. No broker here: the objects are built and inspected (``tests/faults/test_kafka_sasl.py`` runs the
pipeline against Apache Kafka with a SASL/PLAIN listener).
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

import roadnet
from ops.runtime import settings_env
from ops.settings import Settings
from streams.app import _credentials, build_app
from streams.topics import kafka_client_kwargs

REPO = Path(__file__).resolve().parents[2]
CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def kafka(**kw: Any) -> Settings:
    return Settings(kafka={"brokers": "kafka://k1:9093", **kw})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_reaches_faust_and_aiokafka(mechanism: str) -> None:
    """SASL_PLAINTEXT: Faust gets SASLCredentials with the user, the revealed password and the mechanism; the
    aiokafka options Faust derives from them equal the ones citybrain's own clients get."""
    s = kafka(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_username="cb", sasl_password="pw-1")
    creds = _credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    faust_kw = dict(credentials_to_aiokafka_auth(creds))
    assert faust_kw == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "cb",
        "sasl_plain_password": "pw-1",
        "ssl_context": None,
    }
    ours = kafka_client_kwargs(s)
    assert ours == {k: v for k, v in faust_kw.items() if k != "ssl_context"}


def test_sasl_ssl_carries_a_context_with_the_ca() -> None:
    """SASL_SSL: both Faust's credentials and the aiokafka options carry a verifying SSL context that loaded
    ``ssl_cafile`` (its CA certificates are in the context's store)."""
    s = kafka(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="cb", sasl_password="pw-2",
        ssl_cafile=str(CA),
    )  # fmt: skip
    faust_kw = dict(credentials_to_aiokafka_auth(_credentials(s)))
    ours = kafka_client_kwargs(s)
    for kw in (faust_kw, ours):
        assert kw["security_protocol"] == "SASL_SSL"
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("cb", "pw-2")
        ctx = kw["ssl_context"]
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.cert_store_stats()["x509_ca"] > 0


def test_ssl_only_and_plaintext() -> None:
    """SSL without SASL: SSLCredentials with a verifying context; PLAINTEXT: no credentials at all."""
    s = kafka(security_protocol="SSL", ssl_cafile=str(CA))
    creds = _credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    faust_kw = dict(credentials_to_aiokafka_auth(creds))
    assert faust_kw["security_protocol"] == "SSL" and faust_kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert kafka_client_kwargs(s)["security_protocol"] == "SSL"
    assert _credentials(kafka()) is None
    assert kafka_client_kwargs(kafka()) == {"security_protocol": "PLAINTEXT"}


def test_built_app_uses_the_credentials() -> None:
    """The Faust app ``build_app`` makes holds the SASL credentials as its broker credentials."""
    s = kafka(security_protocol="SASL_PLAINTEXT", sasl_username="cb", sasl_password="pw-3")
    pipe = build_app(s, roadnet.grid_city())
    creds = pipe.app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("cb", "pw-3", "PLAIN")


def test_child_processes_get_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers and bridges are children configured by ``CITYBRAIN_*`` variables: the SASL settings, the
    password included, survive the trip."""
    s = kafka(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="cb", sasl_password="pw-4",
        ssl_cafile=str(CA),
    )  # fmt: skip
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    again = Settings()
    assert again.kafka == s.kafka
    assert again.kafka.sasl_password is not None and again.kafka.sasl_password.get_secret_value() == "pw-4"


def _kafka_client_calls() -> list[tuple[str, int, ast.Call]]:
    out = []
    for path in [*(REPO / "streams").rglob("*.py"), *(REPO / "ops").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name in {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}:
                    out.append((str(path.relative_to(REPO)), node.lineno, node))
    return out


def test_every_aiokafka_client_passes_the_security_options() -> None:
    """Every aiokafka producer, consumer and admin client in ``streams/`` and ``ops/`` (bridge, replay, CLI
    tail, topic set-up, signal planner, console view, …) is built with ``**kafka_client_kwargs(settings)``: a new
    client that forgot them would connect in PLAINTEXT to a SASL/TLS cluster and fail there."""
    calls = _kafka_client_calls()
    assert len(calls) >= 6, calls  # the scan finds the clients (bridge, replay ×2, topics, signals, console, cli)
    missing = []
    for path, line, call in calls:
        ok = any(
            kw.arg is None
            and isinstance(kw.value, ast.Call)
            and getattr(kw.value.func, "id", "") == "kafka_client_kwargs"
            for kw in call.keywords
        )
        if not ok:
            missing.append(f"{path}:{line}")
    assert not missing, f"aiokafka clients without **kafka_client_kwargs(settings): {missing}"
