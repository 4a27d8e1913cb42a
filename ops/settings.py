"""Settings: one frozen object, from ``CITYBRAIN_*`` environment variables and an optional TOML file.

Precedence (highest first): explicit keyword arguments, environment variables, the TOML file named by
``--config`` (or ``CITYBRAIN_CONFIG``), defaults. Nested groups use ``__`` in environment variables, e.g.
``CITYBRAIN_MQTT__HOST=broker.city.local`` or ``CITYBRAIN_KAFKA__BROKERS=kafka://k1:9092,kafka://k2:9092``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """Kafka connection. Empty ``brokers`` means: start the embedded Tansu broker."""

    model_config = _FROZEN
    brokers: str = Field("", description="Faust broker URL(s), e.g. kafka://host:9092; empty = embedded")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = Field(
        None,
        description="client certificate (PEM, optionally followed by its intermediates) presented to listeners "
        "with ssl.client.auth=required (mutual TLS); needs ssl_keyfile and security_protocol SSL or SASL_SSL",
    )
    ssl_keyfile: Path | None = Field(None, description="the private key of ssl_certfile (PEM, may be encrypted)")
    ssl_key_password: SecretStr | None = Field(None, description="passphrase of an encrypted ssl_keyfile")
    session_timeout_s: float = Field(10.0, gt=0, description="consumer-group session timeout")
    heartbeat_interval_s: float = Field(1.0, gt=0)
    rebalance_timeout_s: float = Field(10.0, gt=0)
    partitions: int = Field(4, ge=1, description="partitions of the topics citybrain creates")
    replication_factor: int = Field(1, ge=1)
    producer_max_batch_size: int = Field(
        262144,
        ge=1,
        description="bytes per partition batch (a segment's table entry is 6-8 kB: 16 kB batches held two); "
        "1 works around Tansu's ListOffsets bug at a large speed cost",
    )
    producer_linger_s: float = Field(
        0.005, ge=0, le=1, description="how long the worker's producer waits to fill a batch (latency vs requests)"
    )

    @model_validator(mode="after")
    def _client_certificate(self) -> Self:
        """A client certificate comes with its key (and a key password only with a key), over TLS only."""
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = (
                ("ssl_certfile", "ssl_keyfile") if self.ssl_keyfile is None else ("ssl_keyfile", "ssl_certfile")
            )
            raise ValueError(
                f"kafka.{given} is set but kafka.{missing} is not: a client certificate needs both the certificate "
                "(ssl_certfile) and its private key (ssl_keyfile)"
            )
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("kafka.ssl_key_password is set but kafka.ssl_keyfile is not: it decrypts that key")
        if self.ssl_certfile is not None and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"kafka.ssl_certfile/ssl_keyfile (a TLS client certificate) need kafka.security_protocol SSL or "
                f"SASL_SSL, not {self.security_protocol}"
            )
        return self


class MqttSettings(BaseModel):
    """MQTT connection. Empty ``host`` means: start the embedded amqtt broker."""

    model_config = _FROZEN
    host: str = ""
    port: int = Field(1883, ge=0, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_insecure: bool = False
    client_id: str = "citybrain-bridge"
    keepalive_s: int = Field(30, ge=5)
    qos: int = Field(1, ge=0, le=2, description="MQTT QoS of the device subscriptions")
    topic_root: str = Field("city", description="device topics are {topic_root}/{city}/{loop|camera}/{id}")
    max_payload_bytes: int = Field(8192, ge=256, description="larger device payloads are dead-lettered")


class WebhookEndpoint(BaseModel):
    """One webhook subscription."""

    model_config = _FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="endpoint id (also its ordering key)")
    url: str = Field(pattern=r"^https?://", description="http(s) URL receiving POSTs")
    secret: SecretStr = Field(description="Standard Webhooks secret, whsec_<base64>")
    event_types: list[str] = Field(default_factory=lambda: ["*"], description="globs on alert types")
    format: Literal["cloudevents", "cap", "alertmanager"] = "cloudevents"
    timeout_s: float = Field(10.0, gt=0, le=60)


class WebhookSettings(BaseModel):
    """Webhook delivery: Kafka-backed queue, per-endpoint order, capped exponential backoff with jitter."""

    model_config = _FROZEN
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    allow_private_targets: bool = Field(
        False, description="allow loopback/private/link-local targets (SSRF guard off); for on-site receivers"
    )
    retry_initial_s: float = Field(1.0, gt=0, description="wait after the first failed attempt; doubles per failure")
    retry_max_s: float = Field(
        30.0, gt=0, description="cap on the wait between attempts: a failing endpoint is probed at least this often"
    )
    max_age_s: float = Field(
        7200.0,
        gt=0,
        description="a delivery not delivered this long after being queued while its endpoint keeps failing "
        "goes to webhook-dead-letter",
    )
    jitter: float = Field(0.2, ge=0, le=1, description="± share of each wait, randomised (never above the cap)")
    max_retry_after_s: float = Field(3600.0, ge=0, description="cap on a receiver's Retry-After")

    @model_validator(mode="before")
    @classmethod
    def _no_schedule(cls, data: Any) -> Any:
        if isinstance(data, dict) and "retry_schedule_s" in data:
            raise ValueError(
                "webhooks.retry_schedule_s is gone: set retry_initial_s, retry_max_s (backoff cap) and max_age_s "
                "(give up after) instead"
            )
        return data


class SignalSettings(BaseModel):
    """Signal-timing recommendations."""

    model_config = _FROZEN
    period_s: float = Field(
        300.0, ge=60, le=3600, description="control period: one recommendation per signal per period"
    )


class ApiUser(BaseModel):
    """A person or system allowed on the API and console."""

    model_config = _FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9_.@ -]{1,64}$")
    token: SecretStr = Field(description="bearer token (send as Authorization: Bearer …)")
    role: Literal["viewer", "operator"] = "viewer"


class AuthSettings(BaseModel):
    """API and console authentication. Without users the API is open (demo on loopback only)."""

    model_config = _FROZEN
    users: list[ApiUser] = Field(default_factory=list)


class TopicSettings(BaseModel):
    """Kafka topic names. Tests prefix them to keep runs apart."""

    model_config = _FROZEN
    prefix: str = "citybrain."
    ingest: str = "ingest"
    events: str = "events"
    dead_letter: str = "dead-letter"
    segment_state: str = "segment-state"
    alerts: str = "alerts"
    incidents: str = "incidents"
    operator_actions: str = "operator-actions"
    city_summary: str = "city-summary"
    recommendations: str = "signal-recommendations"
    webhook_deliveries: str = "webhook-deliveries"
    webhook_dead_letter: str = "webhook-dead-letter"

    def name(self, which: str) -> str:
        return self.prefix + str(getattr(self, which))

    def all_names(self) -> list[str]:
        """Every topic citybrain reads or writes (with the prefix)."""
        return [self.name(f) for f in type(self).model_fields if f != "prefix"]


class WindowSettings(BaseModel):
    """Event-time windowing of device readings into per-segment states."""

    model_config = _FROZEN
    size_s: int = Field(60, ge=10, description="tumbling window length")
    allowed_lateness_s: float = Field(
        30.0, ge=0, description="a window closes once the watermark passes its end by this much"
    )
    idle_close_s: float = Field(
        90.0,
        gt=0,
        description="wall seconds without readings for a segment after which its open windows close; "
        "must exceed the devices' reporting interval",
    )
    flush_interval_s: float = Field(0.5, gt=0, description="how often idle partitions are checked")
    max_future_s: float = Field(
        300.0,
        ge=0,
        description="readings stamped this far past the segment's robust stream time (or the worker clock) are "
        "rejected as clock skew",
    )
    feed_stale_s: float | None = Field(
        None,
        gt=0,
        description="wall seconds without any arriving event after which /health is degraded and a segment is "
        "shown stale; default idle_close_s (three 30-s reporting intervals)",
    )

    @property
    def stale_after_s(self) -> float:
        """``feed_stale_s``, or ``idle_close_s`` when unset (so the demo's speed-scaled idle time carries over)."""
        return self.feed_stale_s if self.feed_stale_s is not None else self.idle_close_s


class ConsoleSettings(BaseModel):
    """The control-centre console. Without ``tile_url`` the map is drawn from the graph alone (no internet needed)."""

    model_config = _FROZEN
    tile_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#{}]+/",
        description="optional base-map raster tiles, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; "
        "needs lon/lat geometry in the network",
    )
    tile_attribution: str = Field("", max_length=300, description="attribution shown on the map (plain text)")
    tile_max_zoom: int = Field(19, ge=0, le=24, description="highest zoom level the tile server has")

    @field_validator("tile_url")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        if v is not None and not all(p in v for p in ("{z}", "{x}", "{y}")):
            raise ValueError("tile_url must contain {z}, {x} and {y}")
        return v


class Settings(BaseSettings):
    """Every setting citybrain reads. Frozen: build a new one to change anything."""

    model_config = SettingsConfigDict(
        env_prefix="CITYBRAIN_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        toml_file=None,
    )

    city: str = Field("demo", pattern=r"^[a-z0-9_-]+$", description="city id in MQTT topics")
    app_id: str = Field("citybrain", description="Faust app id = Kafka consumer group")
    network: Path | None = Field(None, description="road network file; none = the generated demo city")
    data_dir: Path = Field(Path(".cache/citybrain"), description="worker data directory")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535, description="worker web port: /health, /metrics, /api")
    bridge_web_port: int = Field(6067, ge=0, le=65535, description="MQTT bridge web port: /health, /metrics")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    kafka_ingest: Literal["worker", "bridge"] = Field(
        "worker",
        description="who validates device events produced straight to the `ingest` topic: the worker (Faust agent "
        "validate-ingest) or the bridge (aiokafka consumer group {app_id}-ingest; faster, scales with bridges)",
    )
    kafka: KafkaSettings = KafkaSettings()  # type: ignore[call-arg]
    mqtt: MqttSettings = MqttSettings()  # type: ignore[call-arg]
    topics: TopicSettings = TopicSettings()
    window: WindowSettings = WindowSettings()  # type: ignore[call-arg]
    webhooks: WebhookSettings = WebhookSettings()  # type: ignore[call-arg]
    auth: AuthSettings = AuthSettings()
    signals: SignalSettings = SignalSettings()  # type: ignore[call-arg]
    console_history_s: float = Field(3600.0, gt=0, description="how far back the console view reads on start")
    console: ConsoleSettings = ConsoleSettings()  # type: ignore[call-arg]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = os.environ.get("CITYBRAIN_CONFIG")
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml)))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain JSON-able data, secrets shown as ``**********``."""
        return _mask(self.model_dump(mode="json"), self)


def _mask(data: Any, model: Any) -> Any:
    if isinstance(model, list):
        return [_mask(d, m) for d, m in zip(data, model, strict=True)]
    if isinstance(model, BaseModel):
        out: dict[str, Any] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                out[name] = "**********"
            else:
                out[name] = _mask(data[name], value)
        return out
    return data


def reveal(value: Any) -> Any:
    """Plain JSON-able data with secrets revealed (for handing settings to a child process)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: reveal(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list | tuple):
        return [reveal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, reading ``config`` (TOML) if given.

    Raises
    ------
    FileNotFoundError
        If ``config`` names a file that does not exist.
    pydantic.ValidationError
        If any value is invalid; the message names the setting.
    """
    if config is not None:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file not found: {config}")
        os.environ["CITYBRAIN_CONFIG"] = str(config)
    return Settings(**overrides)
