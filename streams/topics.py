"""Kafka topic set-up and client options shared by the bridge, the CLI and tests (not by Faust itself)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from ops.settings import Settings

log = logging.getLogger(__name__)


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security settings."""
    k = settings.kafka
    kw: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
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
