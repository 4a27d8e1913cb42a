"""Kafka topic set-up and client options shared by the bridge, the CLI and tests; the SSL context
(:func:`kafka_ssl_context`) also by Faust (``streams.app``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from ops.settings import Settings

log = logging.getLogger(__name__)


class KafkaSslError(ValueError):
    """A Kafka TLS file (``kafka.ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``) cannot be used; the message names
    the setting and the file."""


def _readable_pem(setting: str, path: Path, marker: str, what: str) -> None:
    """Fail with a message naming ``setting`` unless ``path`` can be read and holds a PEM ``marker`` block."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KafkaSslError(f"kafka.{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    if marker.encode() not in text:
        raise KafkaSslError(f"kafka.{setting}: {path} holds no PEM {what} (no '{marker}' line)")


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The SSL context of every Kafka client citybrain makes: Faust's (``streams.app``) and aiokafka's.

    A verifying context (``ssl.create_default_context``) that trusts ``kafka.ssl_cafile`` (the system CAs without
    it) and, when ``kafka.ssl_certfile``/``ssl_keyfile`` are set, presents that client certificate to the broker
    (mutual TLS, listeners with ``ssl.client.auth=required``), its key decrypted with ``kafka.ssl_key_password``.

    Parameters
    ----------
    settings
        Effective settings.

    Returns
    -------
    ssl.SSLContext or None
        None unless ``kafka.security_protocol`` is ``SSL`` or ``SASL_SSL``.

    Raises
    ------
    KafkaSslError
        If a file is missing, unreadable or not what the setting says (not PEM, a key that does not belong to the
        certificate, an encrypted key without or with a wrong ``kafka.ssl_key_password``); the message names the
        setting and the file, never the password.
    """
    k = settings.kafka
    if k.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    except OSError as exc:  # missing or unreadable file; ssl.SSLError (not PEM certificates) is an OSError too
        raise KafkaSslError(f"kafka.ssl_cafile: cannot load CA certificates from {k.ssl_cafile}: {exc}") from exc
    if k.ssl_certfile is None or k.ssl_keyfile is None:  # the settings allow both or neither
        return ctx
    cert, key = k.ssl_certfile, k.ssl_keyfile
    _readable_pem("ssl_certfile", cert, "-----BEGIN CERTIFICATE-----", "certificate")
    _readable_pem("ssl_keyfile", key, "PRIVATE KEY-----", "private key")
    asked = [False]

    def password() -> str:
        # A callback rather than the string: without a password OpenSSL would prompt on the terminal.
        asked[0] = True
        if k.ssl_key_password is None:
            raise KafkaSslError(f"kafka.ssl_keyfile: {key} is encrypted; set kafka.ssl_key_password")
        return k.ssl_key_password.get_secret_value()

    try:
        ctx.load_cert_chain(str(cert), str(key), password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            msg = f"kafka.ssl_keyfile: {key} is not the private key of kafka.ssl_certfile {cert}"
        elif asked[0]:
            msg = f"kafka.ssl_key_password does not decrypt kafka.ssl_keyfile {key} ({exc})"
        else:
            msg = f"kafka.ssl_certfile {cert} / kafka.ssl_keyfile {key}: cannot load the client certificate ({exc})"
        raise KafkaSslError(msg) from exc
    except OSError as exc:  # read between the check above and here
        raise KafkaSslError(f"kafka.ssl_certfile {cert} / kafka.ssl_keyfile {key}: {exc}") from exc
    return ctx


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security settings (the SSL context: :func:`kafka_ssl_context`).

    Raises
    ------
    KafkaSslError
        If the TLS files cannot be used (see :func:`kafka_ssl_context`).
    """
    k = settings.kafka
    kw: dict[str, Any] = {"security_protocol": k.security_protocol}
    ctx = kafka_ssl_context(settings)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if k.security_protocol.startswith("SASL"):
        kw["sasl_mechanism"] = k.sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = k.sasl_username
        kw["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return kw


class KeyPartitions:
    """Partition of a key as Kafka's default partitioner picks it (murmur2 of the key bytes), memoised.

    The bridge and the ingest agent send one bundle of readings per *partition* of ``events``; computing the
    partition exactly as a keyed send would keeps every segment on the partition its table entries and
    changelog use.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes, n_partitions: int) -> int:
        p = self._memo.get((key, n_partitions))
        if p is None:
            p = (murmur2(key) & 0x7FFFFFFF) % n_partitions
            if len(self._memo) < 1_000_000:
                self._memo[(key, n_partitions)] = p
        return p


def bootstrap_of(url: str) -> str:
    """``kafka://h1:9092;kafka://h2:9092`` (Faust style) → ``h1:9092,h2:9092`` (aiokafka style)."""
    hosts = []
    for part in url.replace(";", ",").split(","):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[-1])
    return ",".join(hosts)


async def ensure_topics(bootstrap: str, names: list[str], settings: Settings, *, retry_for_s: float = 60.0) -> None:
    """Create ``names`` with the configured partitions if missing; waits for the broker up to ``retry_for_s``.

    Raises
    ------
    KafkaConnectionError
        If the broker cannot be reached in time.
    """
    deadline = asyncio.get_running_loop().time() + retry_for_s
    delay = 0.5
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs(settings))
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Kafka at %s not reachable; retrying in %.1f s", bootstrap, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                n,
                num_partitions=settings.kafka.partitions,
                replication_factor=settings.kafka.replication_factor,
            )
            for n in names
            if n not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
