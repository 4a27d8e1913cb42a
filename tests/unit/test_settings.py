"""Settings: env prefix, nested groups, TOML file, frozen, secrets masked, clear errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from ops.runtime import settings_env
from ops.settings import Settings, load_settings


def test_env_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYBRAIN_CITY", "hangzhou")
    monkeypatch.setenv("CITYBRAIN_MQTT__HOST", "broker.local")
    monkeypatch.setenv("CITYBRAIN_MQTT__PORT", "8883")
    monkeypatch.setenv("CITYBRAIN_MQTT__PASSWORD", "s3cret")
    s = Settings()
    assert (s.city, s.mqtt.host, s.mqtt.port) == ("hangzhou", "broker.local", 8883)
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    shown = s.masked()
    assert shown["mqtt"]["password"] == "**********"
    assert "s3cret" not in repr(s) and "s3cret" not in str(shown)


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "citybrain.toml"
    cfg.write_text('city = "toml_city"\nweb_port = 7000\n[kafka]\nbrokers = "kafka://k1:9092"\npartitions = 8\n')
    monkeypatch.delenv("CITYBRAIN_CONFIG", raising=False)
    monkeypatch.setenv("CITYBRAIN_WEB_PORT", "7100")
    s = load_settings(cfg)
    assert s.city == "toml_city" and s.kafka.brokers == "kafka://k1:9092" and s.kafka.partitions == 8
    assert s.web_port == 7100  # env beats the file
    monkeypatch.delenv("CITYBRAIN_CONFIG", raising=False)


def test_frozen_and_invalid() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.city = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="port"):
        Settings(mqtt={"port": 70000})  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match=r"unknown_key|extra"):
        Settings(unknown_key=1)  # type: ignore[call-arg]
    with pytest.raises(FileNotFoundError):
        load_settings(Path("/nonexistent/citybrain.toml"))


def test_settings_env_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = {"name": "ops", "url": "https://ops.example/hook", "secret": "whsec_c2VjcmV0", "event_types": ["incident.*"]}
    s = Settings(  # type: ignore[arg-type]
        city="x1",
        mqtt={"host": "h", "password": "pw"},
        kafka={"brokers": "kafka://a:1"},
        webhooks={"endpoints": [hook]},
    )
    assert s.masked()["webhooks"]["endpoints"][0]["secret"] == "**********"
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    again = Settings()
    assert again == s


def test_old_webhook_retry_schedule_gets_a_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="retry_max_s"):
        Settings(webhooks={"retry_schedule_s": [5.0, 30.0, 600.0]})
    with pytest.raises(pydantic.ValidationError):
        Settings(webhooks={"retry_max_s": 0})
