"""Prometheus metrics. The registry is injected, so tests read real values back from their own registry.

Names follow Prometheus conventions: ``citybrain_`` prefix, base units (seconds), ``_total`` counters,
bounded label values only (device kind, reason class, step), never per-detector or per-segment labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.records import REASON_CLASSES, IngestBatch

KINDS = ("loop", "camera")
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip


@dataclass
class IngestMetrics:
    """Metrics of whatever validates device payloads (the MQTT bridge, the Kafka ingest agent)."""

    received: Counter
    valid: Counter
    invalid: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        m = cls(
            received=Counter(
                "citybrain_events_received",
                "Device payloads received, by source",
                ["source"],
                registry=registry,
            ),
            valid=Counter(
                "citybrain_events_valid",
                "Device events that passed validation, by kind",
                ["kind"],
                registry=registry,
            ),
            invalid=Counter(
                "citybrain_events_invalid",
                "Device payloads rejected to the dead-letter topic, by reason class",
                ["reason"],
                registry=registry,
            ),
        )
        for src in ("mqtt", "kafka"):
            m.received.labels(src)
        for k in KINDS:
            m.valid.labels(k)
        for r in REASON_CLASSES:
            m.invalid.labels(r)
        return m

    def count(self, batch: IngestBatch) -> None:
        """Add a validated batch's valid events (per kind) and rejected payloads (per reason class)."""
        for reason, n in batch.invalid.items():
            self.invalid.labels(reason).inc(n)
        for kind, n in batch.valid.items():
            self.valid.labels(kind).inc(n)


#: ``reason`` of ``citybrain_bridge_send_errors_total`` (``streams.delivery``).
SEND_ERROR_REASONS = ("unavailable", "refused", "dead_letter_refused")


@dataclass
class BridgeMetrics:
    """Metrics of the bridge's send path (``streams.delivery``)."""

    send_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BridgeMetrics:
        m = cls(
            send_errors=Counter(
                "citybrain_bridge_send_errors",
                "Records Kafka did not take, by what the bridge did: unavailable (sent again), refused (its "
                "readings dead-lettered instead), dead_letter_refused (a dead-letter record dropped, logged)",
                ["reason"],
                registry=registry,
            )
        )
        for r in SEND_ERROR_REASONS:
            m.send_errors.labels(r)
        return m


@dataclass
class WorkerMetrics:
    """Metrics of the stream worker's agents."""

    applied: Counter
    rejected: Counter
    latency: Histogram
    output_latency: Histogram
    windows: Counter
    open_windows: Gauge
    device_faults: Counter
    incidents: Counter
    consumer_lag: Gauge
    partition_stalls: Counter
    feed_last_arrival_age: Gauge
    stale_segments: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        m = cls(
            applied=Counter(
                "citybrain_events_applied",
                "Device events applied to segment windows, by kind",
                ["kind"],
                registry=registry,
            ),
            rejected=Counter(
                "citybrain_events_rejected",
                "Events the window agent dead-lettered (late, duplicate, clock_skew)",
                ["reason"],
                registry=registry,
            ),
            latency=Histogram(
                "citybrain_processing_latency_seconds",
                "From citybrain first receiving a device event to the event applied to its segment window",
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            output_latency=Histogram(
                "citybrain_output_latency_seconds",
                "From the reading that closed a window (watermark) or decided an alert, as first received by "
                "citybrain, to Kafka acknowledging the segment state or alert, by output",
                ["output"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            windows=Counter(
                "citybrain_windows_emitted",
                "Segment-state windows emitted, by what closed them (watermark, idle, fill = no readings)",
                ["closed_by"],
                registry=registry,
            ),
            open_windows=Gauge(
                "citybrain_open_windows", "Segment windows currently open on this worker", registry=registry
            ),
            device_faults=Counter(
                "citybrain_device_faults",
                "Device faults reported and cleared, by status (silent, stuck, zero, implausible, clock, cleared)",
                ["status"],
                registry=registry,
            ),
            incidents=Counter(
                "citybrain_incidents",
                "Incident lifecycle events, by stage (new, updated, cleared, suspected, suspicion_expired)",
                ["stage"],
                registry=registry,
            ),
            partition_stalls=Counter(
                "citybrain_partition_stalls",
                "Assigned partitions found stalled (messages waiting, nothing read) and resumed by the watchdog",
                registry=registry,
            ),
            feed_last_arrival_age=Gauge(
                "citybrain_feed_last_arrival_age_seconds",
                "Wall seconds since a device event last arrived at this worker (since its start, before any)",
                registry=registry,
            ),
            stale_segments=Gauge(
                "citybrain_stale_segments",
                "Segments that reported since this worker started and have been quiet for window.feed_stale_s",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "citybrain_consumer_lag_messages",
                "Messages on this worker's assigned partitions not yet committed (highwater - committed), by topic",
                ["topic"],
                registry=registry,
            ),
        )
        for k in KINDS:
            m.applied.labels(k)
        for r in ("late", "duplicate", "clock_skew", "invalid"):
            m.rejected.labels(r)
        for o in ("segment_state", "alert"):
            m.output_latency.labels(o)
        for c in ("watermark", "idle", "fill"):
            m.windows.labels(c)
        for st in ("silent", "stuck", "zero", "implausible", "clock", "cleared"):
            m.device_faults.labels(st)
        for stage in ("new", "updated", "cleared", "suspected", "suspicion_expired"):
            m.incidents.labels(stage)
        return m


@dataclass
class WebhookMetrics:
    """Webhook delivery metrics (labels: bounded outcome names, never endpoint URLs)."""

    attempts: Counter
    deliveries: Counter
    latency: Histogram
    endpoint_up: Gauge
    outages: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebhookMetrics:
        m = cls(
            attempts=Counter(
                "citybrain_webhook_attempts",
                "HTTP attempts to deliver webhooks, by outcome (success, retry, gone, failed, refused)",
                ["outcome"],
                registry=registry,
            ),
            deliveries=Counter(
                "citybrain_webhook_deliveries",
                "Webhook deliveries finished, by result (delivered, failed, gone, refused, disabled, duplicate)",
                ["result"],
                registry=registry,
            ),
            latency=Histogram(
                "citybrain_webhook_delivery_seconds",
                "From queuing a webhook delivery to its final result",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 14400),
                registry=registry,
            ),
            # endpoint health (issue #15/6): label = configured endpoint name (few, from settings)
            endpoint_up=Gauge(
                "citybrain_webhook_endpoint_up",
                "1 while a webhook endpoint's last attempt succeeded, 0 while it is failing (its queue waits)",
                ["endpoint"],
                registry=registry,
            ),
            outages=Counter(
                "citybrain_webhook_endpoint_outages",
                "Webhook endpoints going from healthy to failing (failed attempts: citybrain_webhook_attempts_total)",
                registry=registry,
            ),
        )
        for o in ("success", "retry", "gone", "failed", "refused"):
            m.attempts.labels(o)
        for r in ("delivered", "failed", "gone", "refused", "disabled", "duplicate"):
            m.deliveries.labels(r)
        return m


@dataclass
class CityMetrics:
    """City indicators of the last summarised window (set by the leader)."""

    travel_time_index: Gauge
    congested_lane_km_ratio: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CityMetrics:
        return cls(
            travel_time_index=Gauge(
                "citybrain_city_travel_time_index",
                "Flow-weighted travel-time index of the last window",
                registry=registry,
            ),
            congested_lane_km_ratio=Gauge(
                "citybrain_city_congested_lane_km_ratio",
                "Share of lane-km congested in the last window",
                registry=registry,
            ),
        )
