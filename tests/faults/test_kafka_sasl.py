"""Kafka SASL pass-through on Apache Kafka: the whole pipeline against a SASL_PLAINTEXT/PLAIN listener.

Kept with the fault tests because it starts its own Apache Kafka (``make test-faults`` runs the real engine);
skipped unless ``CITYBRAIN_TEST_ENGINE=kafka``. The broker's client port accepts SASL/PLAIN logins only (its
PLAINTEXT listener on another port is for the broker itself and the readiness probe).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.runtime import Stack
from tests.integration.conftest import Brokers, unique_settings

from .conftest import account, devices, expected_windows, publish, stream, try_produce, wait_published

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka", reason="needs Apache Kafka"),
]
USER, PASSWORD = "citybrain", "kafka-sasl-pw-7e21"
MINUTES = 4


def test_pipeline_over_sasl_plain(brokers: Brokers, tmp_path: Path, record: Callable[..., None]) -> None:
    """Worker (Faust consumer, producer, changelogs, its aiokafka planner/console clients, topic set-up) and
    bridge (admin client, producer) all log in with the configured SASL user: every reading ends in a segment
    state read back over SASL. A client without credentials, and one with a wrong password, are refused by the
    same listener, so the run cannot have passed over an open door."""
    from ops.real_brokers import ApacheKafkaBroker

    kafka = ApacheKafkaBroker(log_dir=tmp_path, sasl_users={USER: PASSWORD, "admin": "admin-pw"}).start()
    try:
        assert asyncio.run(try_produce(kafka.bootstrap)) != "ok"  # PLAINTEXT on the SASL port
        wrong = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}
        bad_login = {**wrong, "sasl_plain_username": USER, "sasl_plain_password": "nope"}
        assert asyncio.run(try_produce(kafka.bootstrap, **bad_login)) != "ok"

        s = unique_settings(
            brokers,
            kafka={
                "brokers": kafka.url,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": USER,
                "sasl_password": PASSWORD,
            },
        )
        events = stream(MINUTES)
        with Stack(s, tmp_path) as st:
            worker, bridge = st.start_pipeline()
            c = devices(s.mqtt.host, s.mqtt.port, f"sasl-devices-{s.app_id}", persistent=False)
            wait_published(publish(c, s, events), 30)
            c.disconnect()
            c.loop_stop()
            acc = account(s, len(events), expected_windows(MINUTES))  # read with SASL (settings' options)
            logs = worker.log_path.read_text(errors="replace") + bridge.log_path.read_text(errors="replace")
    finally:
        kafka.cleanup()
    assert acc.lost == 0 and acc.applied == len(events), (acc.applied, acc.dead_reasons)
    assert acc.duplicate_outputs == 0
    assert PASSWORD not in logs
    record(
        fault="Kafka SASL/PLAIN listener: worker, bridge and readers authenticate (security)",
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
    )
