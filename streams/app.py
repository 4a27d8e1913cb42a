"""Builds the Faust app: topics, tables, agents and web views, from settings and the road graph.

``build_app()`` returns a :class:`Pipeline` holding the app and everything its agents share; each agent
module registers itself on that one app (``streams/agents/*.py``). Nothing is created at import time, so tests
can build several apps with their own topic names and metrics registries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import faust
import networkx as nx
from prometheus_client import CollectorRegistry

from ops.settings import Settings
from streams import tansu_compat
from streams.feed import FeedActivity
from streams.metrics import IngestMetrics, WorkerMetrics
from streams.records import DeadLetter, DeviceInfo, SegmentState
from streams.topics import kafka_ssl_context
from streams.transactions import Transactions


@dataclass
class Topics:
    ingest: faust.TopicT
    events: faust.TopicT
    dead_letter: faust.TopicT
    segment_state: faust.TopicT


@dataclass
class Pipeline:
    """The app and what its agents share."""

    app: faust.App
    settings: Settings
    graph: nx.MultiDiGraph
    topics: Topics
    registry: CollectorRegistry
    ingest_metrics: IngestMetrics
    worker_metrics: WorkerMetrics
    devices: dict[str, DeviceInfo]
    segments: dict[str, dict[str, Any]]
    transactions: Transactions
    latest_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    extra_topics: dict[str, faust.TopicT] = field(default_factory=dict)
    console_view: Any = None
    signal_stats: dict[str, int] = field(default_factory=dict)
    feed: FeedActivity = field(default_factory=lambda: FeedActivity(started_wall_s=time.time()))

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        *,
        source: tuple[str, int],
    ) -> Awaitable[Any]:
        """Produce pre-serialised bytes to ``topic``; returns the delivery future (await it before acking).

        At least once (the default), records go straight to the app's Kafka producer: Faust's topic/channel
        path costs ≈ 100 µs per message in CPU (futures, callbacks, codecs), this one ≈ 10 µs, and the agents
        await the delivery futures before their source offsets are acknowledged, so nothing is lost. Exactly
        once, ``source`` (the topic and partition of the events that caused the record) names the transaction
        it joins (``streams.transactions``).
        """
        if self.transactions.enabled:
            return await self.transactions.send(topic, key, value, partition, source)
        return await self.app.producer.send(topic, key, value, partition=partition, timestamp=None, headers=None)


def device_index(graph: nx.MultiDiGraph) -> dict[str, DeviceInfo]:
    """Device id → what the graph says about it, for validating device events."""
    return {
        did: DeviceInfo(kind=str(d["kind"]), segment_id=str(d["segment_id"]), lane=d.get("lane"))
        for did, d in graph.graph["detectors"].items()
    }


def segment_index(graph: nx.MultiDiGraph) -> dict[str, dict[str, Any]]:
    """Segment id → the attributes the estimators need (length_m, lanes, speed_limit_kmh)."""
    return {
        str(k): {"length_m": d["length_m"], "lanes": d["lanes"], "speed_limit_kmh": d["speed_limit_kmh"]}
        for _, _, k, d in graph.edges(keys=True, data=True)
    }


def _credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the configured Kafka security settings.

    The SSL context is the one citybrain's own aiokafka clients get (:func:`streams.topics.kafka_ssl_context`):
    the CA of ``kafka.ssl_cafile`` and, if configured, the client certificate for mutual TLS.

    Returns
    -------
    faust.SASLCredentials, faust.SSLCredentials or None
        SASL (with the SSL context under ``SASL_SSL``), SSL, or None for ``PLAINTEXT``.

    Raises
    ------
    streams.topics.KafkaSslError
        If the TLS files cannot be used.
    """
    k = settings.kafka
    ctx = kafka_ssl_context(settings)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            ssl_context=ctx,
            mechanism=k.sasl_mechanism or "PLAIN",
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def build_app(
    settings: Settings,
    graph: nx.MultiDiGraph,
    *,
    broker_url: str | None = None,
    registry: CollectorRegistry | None = None,
) -> Pipeline:
    """Create the Faust app with every agent and view registered.

    Parameters
    ----------
    settings
        Effective settings.
    graph
        The validated road graph (``roadnet`` contract).
    broker_url
        Overrides ``settings.kafka.brokers`` (used when an embedded broker was started).
    registry
        Prometheus registry for this app's metrics; a new one by default.
    """
    tansu_compat.apply()
    registry = registry or CollectorRegistry()
    k = settings.kafka
    app = faust.App(
        settings.app_id,
        broker=broker_url or k.brokers,
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        broker_rebalance_timeout=k.rebalance_timeout_s,
        producer_max_batch_size=k.producer_max_batch_size,
        producer_linger=k.producer_linger_s,
        processing_guarantee=settings.processing_guarantee,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Faust throttles stream consumption whenever more than 100 table-changelog records wait to be produced
    # (ProducerBuffer.max_messages); a batch touching a few hundred segments writes that many at once, so the
    # default stalled every batch. Kafka's own producer limits still apply.
    app.producer.buffer.max_messages = 10_000
    t = settings.topics
    topics = Topics(
        ingest=app.topic(t.name("ingest"), key_type=bytes, value_type=bytes, value_serializer="raw"),
        events=app.topic(t.name("events"), key_type=bytes, value_type=bytes, value_serializer="raw"),
        dead_letter=app.topic(t.name("dead_letter"), key_type=str, value_type=DeadLetter),
        segment_state=app.topic(t.name("segment_state"), key_type=str, value_type=SegmentState),
    )
    pipe = Pipeline(
        app=app,
        settings=settings,
        graph=graph,
        topics=topics,
        registry=registry,
        ingest_metrics=IngestMetrics.create(registry),
        worker_metrics=WorkerMetrics.create(registry),
        devices=device_index(graph),
        segments=segment_index(graph),
        transactions=Transactions(app, enabled=settings.processing_guarantee == "exactly_once"),
    )
    from streams import console_web, lag, stall, web
    from streams.agents import city, ingest, segment_state, signals, webhooks

    if settings.kafka_ingest == "worker":  # else the bridges validate `ingest` (streams.kafka_ingest)
        ingest.register(pipe)
    segment_state.register(pipe)
    webhooks.register(pipe)
    web.register(pipe)
    console_web.register(pipe)
    city.register(pipe)
    signals.register(pipe)
    lag.register(pipe)
    stall.register(pipe)
    return pipe
