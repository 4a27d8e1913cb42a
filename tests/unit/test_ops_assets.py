"""Dashboards and alert rules: valid, provisionable, and only about metrics citybrain really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import BridgeMetrics, CityMetrics, IngestMetrics, WebhookMetrics, WorkerMetrics

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARDS = sorted((OPS / "grafana/dashboards").glob("*.json"))
RULES = OPS / "prometheus/citybrain-rules.yml"


def exported_names() -> set[str]:
    reg = CollectorRegistry()
    IngestMetrics.create(reg)
    BridgeMetrics.create(reg)
    WorkerMetrics.create(reg)
    WebhookMetrics.create(reg)
    CityMetrics.create(reg)
    names: set[str] = set()
    for fam in reg.collect():
        names |= {s.name for s in fam.samples}
        names.add(fam.name)
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bcitybrain_[a-z0-9_]+", expr))


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "no dashboards in ops/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_schema_and_metrics(path: Path) -> None:
    dash = json.loads(path.read_text())
    schema = json.loads((OPS / "grafana/dashboard.schema.json").read_text())
    jsonschema.validate(dash, schema)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known = exported_names()
    for panel in dash["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            unknown = referenced(target["expr"]) - known
            assert not unknown, f"{panel['title']}: unknown metrics {unknown}"


def test_rules_are_well_formed_and_about_real_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    known = exported_names()
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 6
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"]
        assert not referenced(r["expr"]) - known, r["alert"]
    assert {"CitybrainWorkerDown", "CitybrainDeadLettersRising", "CitybrainWebhookFailures"} <= set(names)
    # a dead, silent or failing MQTT bridge (issue #15)
    assert {"CitybrainBridgeDown", "CitybrainBridgeSilent", "CitybrainBridgeKafkaUnavailable"} <= set(names)
    assert {"CitybrainBridgeRecordsRefused"} <= set(names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_bridge_alerts_fire_on_a_dead_silent_or_refused_bridge() -> None:
    """promtool's rule unit tests (ops/prometheus/citybrain-rules.test.yml): a bridge down, silent for 15 min,
    Kafka unavailable for 5 min, a dead letter refused; and no alert while the bridge takes payloads in."""
    tests = OPS / "prometheus/citybrain-rules.test.yml"
    out = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
