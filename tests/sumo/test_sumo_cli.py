"""``citybrain sumo-twin`` end to end on the tiny network, publishing to a file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

pytest.importorskip("libsumo", reason="SUMO not installed: pip install 'citybrain[sumo]'")

from ops.cli import app


def test_sumo_twin_command_writes_device_events(cross_cfg: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    res = CliRunner().invoke(app, ["sumo-twin", "--sumocfg", str(cross_cfg), "--duration-s", "180", "--out", str(out)])
    assert res.exit_code == 0, res.output
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(events) == 9 * 6 + 2 * 3
    assert {e["segment_id"] for e in events} == {"WC", "NC", "CE", "CS"}
    assert "60 events published (file): 54 loop, 6 camera" in res.output


def test_sumo_twin_needs_a_scenario() -> None:
    res = CliRunner().invoke(app, ["sumo-twin"])
    assert res.exit_code == 2 and "--sumocfg" in res.output
