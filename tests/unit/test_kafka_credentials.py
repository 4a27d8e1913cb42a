"""Kafka SASL/TLS settings reach every Kafka client citybrain makes: Faust's broker credentials (and through
them the aiokafka producer and consumers Faust creates) and the aiokafka clients of the bridge, replay, CLI
and agents. No broker here: the objects are built and inspected, and the client certificate (mutual TLS) is
checked by a TLS handshake with a one-shot server in this process that requires it
(``tests/faults/test_kafka_sasl.py`` and ``test_kafka_tls.py`` run the pipeline against Apache Kafka).
"""

from __future__ import annotations

import ast
import shutil
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, cast

import faust
import pydantic
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

import roadnet
from ops.runtime import settings_env
from ops.settings import Settings
from streams.app import _credentials, build_app
from streams.topics import KafkaSslError, kafka_client_kwargs, kafka_ssl_context
from tests.pki import Pki, issue_client_cert, make_pki

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


# --- client certificates (mutual TLS) -------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (apt-get install -y openssl)")
KEY_PASSWORD = "client-key-pw-7c1e"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def mtls(pki: Pki, protocol: str = "SSL", **kw: Any) -> Settings:
    """Settings trusting ``pki.ca`` and presenting ``pki.client_cert`` (``kw`` overrides)."""
    base: dict[str, Any] = {
        "ssl_cafile": str(pki.ca),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }
    if protocol == "SASL_SSL":
        base.update(sasl_mechanism="PLAIN", sasl_username="cb", sasl_password="pw-5")
    return kafka(security_protocol=protocol, **{**base, **kw})


def handshake(client: ssl.SSLContext, pki: Pki) -> str:
    """Connect with ``client`` to a one-shot TLS server on loopback that, like a Kafka listener with
    ``ssl.client.auth=required``, demands a client certificate signed by ``pki.ca``.

    Returns
    -------
    str
        The common name of the client certificate the server accepted, or ``refused: REASON`` (the server's
        handshake error).
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    server.load_verify_locations(pki.ca)
    server.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert() or {}
                    names = cast(tuple[tuple[tuple[str, str], ...], ...], peer.get("subject", ()))
                    subject = {k: v for rdn in names for k, v in rdn}
                    seen.append(str(subject.get("commonName")))
                    tls.sendall(b"ok")
            except OSError as exc:  # ssl.SSLError included
                seen.append(f"refused: {getattr(exc, 'reason', None) or exc}")
            finally:
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as raw:
            try:
                with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.recv(2)  # TLS 1.3: a refused client certificate shows here, after the handshake
            except OSError:
                pass
        thread.join(10)
    assert seen, "the test server saw no connection"
    return seen[0]


def both_contexts(s: Settings) -> dict[str, ssl.SSLContext]:
    """The SSL context Faust's credentials carry and the one citybrain's own aiokafka clients get."""
    faust_ctx = dict(credentials_to_aiokafka_auth(_credentials(s)))["ssl_context"]
    ours = kafka_client_kwargs(s)["ssl_context"]
    assert isinstance(faust_ctx, ssl.SSLContext) and isinstance(ours, ssl.SSLContext)
    return {"faust": faust_ctx, "aiokafka": ours}


@needs_openssl
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_client_certificate_reaches_faust_and_aiokafka(pki: Pki, protocol: str) -> None:
    """With ``ssl_certfile``/``ssl_keyfile`` both contexts present the client certificate: a server requiring
    one signed by the CA accepts them and sees ``CN=citybrain-client``; both still verify the broker against
    ``ssl_cafile`` only (they trust that CA and nothing else: no system CAs were loaded)."""
    s = mtls(pki, protocol)
    for name, ctx in both_contexts(s).items():
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname, name
        assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "citybrain test ca"),),)], name
        assert handshake(ctx, pki) == "citybrain-client", name


@needs_openssl
def test_without_or_with_a_foreign_client_certificate_the_server_refuses(pki: Pki) -> None:
    """The control: the same server refuses the context of the settings without a client certificate (the
    behaviour before mutual TLS) and one with a certificate signed by another CA, so the handshake above proves
    the certificate was presented."""
    plain = kafka(security_protocol="SSL", ssl_cafile=str(pki.ca))
    for name, ctx in both_contexts(plain).items():
        assert handshake(ctx, pki) == "refused: PEER_DID_NOT_RETURN_A_CERTIFICATE", name
    foreign = mtls(pki, ssl_certfile=str(pki.other_client_cert), ssl_keyfile=str(pki.other_client_key))
    for name, ctx in both_contexts(foreign).items():
        assert handshake(ctx, pki) == "refused: CERTIFICATE_VERIFY_FAILED", name


@needs_openssl
def test_encrypted_key_with_its_password(pki: Pki, tmp_path: Path) -> None:
    """An encrypted key is decrypted with ``ssl_key_password``; without it, or with a wrong one, the error names
    the setting (never prompting on the terminal as OpenSSL would) and never shows the password."""
    cert, key = issue_client_cert(tmp_path, "citybrain-client", pki.ca, pki.ca_key, key_password=KEY_PASSWORD)
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    s = mtls(pki, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_key_password=KEY_PASSWORD)
    for name, ctx in both_contexts(s).items():
        assert handshake(ctx, pki) == "citybrain-client", name
    with pytest.raises(KafkaSslError, match=r"kafka\.ssl_keyfile: .* is encrypted; set kafka\.ssl_key_password"):
        kafka_ssl_context(mtls(pki, ssl_certfile=str(cert), ssl_keyfile=str(key)))
    wrong = mtls(pki, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_key_password="not-it")
    for build in (kafka_ssl_context, kafka_client_kwargs, _credentials):
        with pytest.raises(KafkaSslError, match=r"kafka\.ssl_key_password does not decrypt") as err:
            build(wrong)
        assert "not-it" not in str(err.value)


@needs_openssl
def test_unusable_files_name_the_setting(pki: Pki, tmp_path: Path) -> None:
    """A missing, unreadable or wrong file fails the same way for Faust and aiokafka, naming the setting."""
    missing = tmp_path / "nope.pem"
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "certfile missing": ({"ssl_certfile": str(missing)}, r"kafka\.ssl_certfile: cannot read .*nope\.pem"),
        "keyfile missing": ({"ssl_keyfile": str(missing)}, r"kafka\.ssl_keyfile: cannot read .*nope\.pem"),
        "cafile missing": ({"ssl_cafile": str(missing)}, r"kafka\.ssl_cafile: cannot load CA certificates"),
        "cafile not PEM": ({"ssl_cafile": str(pki.client_key)}, r"kafka\.ssl_cafile: cannot load CA certificates"),
        "key as certificate": ({"ssl_certfile": str(pki.client_key)}, r"kafka\.ssl_certfile: .* no PEM certificate"),
        "certificate as key": ({"ssl_keyfile": str(pki.client_cert)}, r"kafka\.ssl_keyfile: .* no PEM private key"),
        "key of another cert": (
            {"ssl_keyfile": str(pki.other_client_key)},
            r"kafka\.ssl_keyfile: .* is not the private key of kafka\.ssl_certfile",
        ),
    }
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(pki.client_key.read_bytes())
    unreadable.chmod(0)
    try:
        unreadable.read_bytes()
    except PermissionError:  # not when running as root
        cases["keyfile unreadable"] = ({"ssl_keyfile": str(unreadable)}, r"kafka\.ssl_keyfile: cannot read")
    for case, (kw, pattern) in cases.items():
        s = mtls(pki, **kw)
        for build in (kafka_ssl_context, kafka_client_kwargs, _credentials):
            with pytest.raises(KafkaSslError, match=pattern):
                build(s)
                pytest.fail(f"{case}: {build.__name__} accepted it")


def test_client_certificate_settings_are_validated() -> None:
    """A certificate needs its key and the other way round, a key password needs a key, and a client
    certificate needs a TLS protocol: each is a settings error naming the settings."""
    tls = {"security_protocol": "SSL"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**tls, "ssl_certfile": "/c.pem"}, r"kafka\.ssl_certfile is set but kafka\.ssl_keyfile is not"),
        ({**tls, "ssl_keyfile": "/k.pem"}, r"kafka\.ssl_keyfile is set but kafka\.ssl_certfile is not"),
        ({**tls, "ssl_key_password": "x"}, r"kafka\.ssl_key_password is set but kafka\.ssl_keyfile is not"),
        (
            {"ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"},
            r"need kafka\.security_protocol SSL or SASL_SSL, not PLAINTEXT",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"},
            r"SSL or SASL_SSL, not SASL_PLAINTEXT",
        ),
    ]
    for kw, pattern in bad:
        with pytest.raises(pydantic.ValidationError, match=pattern):
            kafka(**kw)
    for protocol in ("SSL", "SASL_SSL"):
        k = kafka(security_protocol=protocol, ssl_certfile="/c.pem", ssl_keyfile="/k.pem", ssl_key_password="x").kafka
        assert (k.ssl_certfile, k.ssl_keyfile) == (Path("/c.pem"), Path("/k.pem"))
    assert kafka().kafka.ssl_certfile is None  # no client certificate by default


def test_client_certificate_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CITYBRAIN_KAFKA__SSL_*`` set the client certificate (validated the same way); the key password is a
    secret: masked in ``config show``, revealed to children through ``settings_env``."""
    monkeypatch.setenv("CITYBRAIN_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("CITYBRAIN_KAFKA__SSL_CERTFILE", "/etc/citybrain/kafka-client.pem")
    with pytest.raises(pydantic.ValidationError, match=r"kafka\.ssl_keyfile is not"):
        Settings()
    monkeypatch.setenv("CITYBRAIN_KAFKA__SSL_KEYFILE", "/etc/citybrain/kafka-client.key")
    monkeypatch.setenv("CITYBRAIN_KAFKA__SSL_KEY_PASSWORD", "key-pw-9")
    s = Settings()
    assert s.kafka.ssl_keyfile == Path("/etc/citybrain/kafka-client.key")
    shown = s.masked()["kafka"]
    assert shown["ssl_key_password"] == "**********" and "key-pw-9" not in repr(s)
    assert shown["ssl_certfile"] == "/etc/citybrain/kafka-client.pem"
    env = settings_env(s)
    assert env["CITYBRAIN_KAFKA__SSL_KEY_PASSWORD"] == "key-pw-9"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings() == s


@pytest.mark.parametrize("command", ["worker", "bridge"])
def test_a_bad_tls_file_stops_the_command_with_one_line(tmp_path: Path, command: str) -> None:
    """An operator's missing CA file: exit 2 and one line naming the setting, not a traceback."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "CITYBRAIN_DATA_DIR": str(tmp_path),
        "CITYBRAIN_KAFKA__BROKERS": "kafka://127.0.0.1:9",
        "CITYBRAIN_MQTT__HOST": "127.0.0.1",
        "CITYBRAIN_KAFKA__SECURITY_PROTOCOL": "SSL",
        "CITYBRAIN_KAFKA__SSL_CAFILE": str(tmp_path / "missing-ca.pem"),
    }
    res = subprocess.run(
        [sys.executable, "-m", "ops", command], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("citybrain: kafka.ssl_cafile:") and "missing-ca.pem" in last
