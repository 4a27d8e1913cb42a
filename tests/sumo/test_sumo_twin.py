"""SUMO twin on a tiny hand-written network: device events as citybrain validates them, counts equal to
SUMO's own detector output, and a signal recommendation installed on SUMO's traffic light."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("libsumo", reason="SUMO not installed: pip install 'citybrain[sumo]'")

from sensors_sim.events import event_bytes
from sensors_sim.publish import JsonlPublisher
from sensors_sim.recommendations import PlanInbox
from sensors_sim.sumo_twin import DET_PREFIX, SumoTwin
from streams.records import DeviceInfo, decode_device_payload

START = datetime(2025, 1, 6, 7, 0, tzinfo=UTC)


class ListPublisher:
    """Keeps what is published."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.announced: list[tuple[str, str]] = []

    def publish(self, event: Any) -> None:
        self.events.append(event)

    def announce(self, devices: list[tuple[str, str]]) -> None:
        self.announced.extend(devices)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _sumo_output(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """SUMO's own E1/E2 interval records by (SUMO detector id, interval end ISO)."""
    out = {}
    for iv in ET.parse(path).getroot().iter("interval"):
        end = (START + timedelta(seconds=float(iv.get("end", "0")))).strftime("%Y-%m-%dT%H:%M:%SZ")
        out[(str(iv.get("id")), end)] = dict(iv.attrib)
    return out


def test_events_validate_and_loop_counts_equal_sumo_detectors(cross_cfg: Path, tmp_path: Path) -> None:
    pub = ListPublisher()
    with SumoTwin(cross_cfg, start=START, detector_output=tmp_path / "det.xml") as twin:
        devices = {
            did: DeviceInfo(str(d["kind"]), str(d["segment_id"]), d.get("lane"))
            for did, d in twin.G.graph["detectors"].items()
        }
        stats = twin.run(pub, duration_s=600)
    # every graph device is observed and announced: 6 mid-link loops, 3 stop-line loops (WC, NC), 2 cameras
    assert sorted(d for _, d in pub.announced) == sorted(devices)
    assert stats.events == {"loop": 9 * 20, "camera": 2 * 10} and stats.published == 200
    for ev in pub.events:  # exactly what citybrain's bridge accepts from a device
        decode_device_payload(event_bytes(ev), max_bytes=4096, devices=devices)
    ref = _sumo_output(tmp_path / "det.xml")
    loops = [e for e in pub.events if e["type"] == "loop"]
    assert {e["ts"] for e in loops} == {
        (START + timedelta(seconds=30 * k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(1, 21)
    }
    for e in loops:
        r = ref[(DET_PREFIX + e["detector_id"], e["ts"])]
        assert e["count"] == int(r["nVehContrib"]), (e, r)
        assert e["occupancy"] == pytest.approx(float(r["occupancy"]) / 100, abs=0.002), (e, r)
    assert sum(e["count"] for e in loops if e["role"] == "mid_link") > 300  # traffic went through
    # the cameras see every class the routes send; occupancy = the lanes' mean E2 occupancy
    cams = [e for e in pub.events if e["type"] == "camera"]
    totals: dict[str, int] = defaultdict(int)
    for e in cams:
        for cls, n in e["counts"].items():
            totals[f"{e['segment_id']}:{cls}"] += n
        lanes = [ref[(f"{DET_PREFIX}{e['camera_id']}__{i}", e["ts"])] for i in range(e["lanes"])]
        occ = sum(float(r["meanOccupancy"]) for r in lanes) / len(lanes) / 100
        assert e["occupancy"] == pytest.approx(occ, abs=0.002)
    assert totals["WC:car"] > 90 and totals["WC:truck"] >= 14 and totals["NC:bus"] >= 8 and totals["WC:bus"] == 0


def test_jsonl_output_is_the_published_bytes(cross_cfg: Path, tmp_path: Path) -> None:
    with SumoTwin(cross_cfg, start=START) as twin, JsonlPublisher(tmp_path / "e.jsonl") as pub:
        twin.run(pub, duration_s=120)
    lines = (tmp_path / "e.jsonl").read_bytes().splitlines()
    assert len(lines) == 9 * 4 + 2 * 2
    assert orjson.loads(lines[0])["ts"] == "2025-01-06T07:00:30Z"


def _record(tls_id: str, green_s: list[int]) -> bytes:
    return orjson.dumps(
        {
            "recommendation_id": "r1",
            "tls_id": tls_id,
            "period_start_s": 0.0,
            "cycle_s": sum(green_s) + 6,
            "green_s": green_s,
            "reason": "test",
            "confidence": 0.9,
        }
    )


def test_recommendation_is_installed_on_the_sumo_light_at_the_next_cycle(cross_cfg: Path) -> None:
    inbox = PlanInbox()
    with SumoTwin(cross_cfg, start=START) as twin:
        tr = twin.tr
        assert twin.tls_ids == ["C"] and twin.phase_durations("C") == [42.0, 3.0, 42.0, 3.0]
        for _ in range(30):
            twin.step(inbox)
        inbox.put(_record("C", [20, 50]))
        inbox.put(_record("nowhere", [20, 50]))
        twin.apply_inbox(inbox)
        inbox.put(_record("C", [20, 30, 40]))  # three greens for two green phases
        twin.apply_inbox(inbox)
        assert (inbox.stats.applied, inbox.stats.rejected) == (1, 2)
        assert "unknown traffic light 'nowhere'" in inbox.stats.reasons[0]
        assert "2 green phases, got 3" in inbox.stats.reasons[1]
        while twin.t_s < 90:
            twin.step(inbox)
        assert tr.trafficlight.getPhase("C") == 3  # the last yellow of the first cycle: nothing changed yet
        assert twin.phase_durations("C") == [42.0, 3.0, 42.0, 3.0] and twin.plan_changes == []
        twin.step(inbox)  # t = 91 s: SUMO reports phase 0 again (begun at 90 s): the plan goes in
        assert twin.plan_changes == [(90.0, "C", [20.0, 3.0, 50.0, 3.0])]
        assert inbox.stats.installed == 1
        # read back from SUMO: the program and the running phase's end
        (logic,) = [
            lg for lg in tr.trafficlight.getAllProgramLogics("C") if lg.programID == tr.trafficlight.getProgram("C")
        ]
        assert [p.duration for p in logic.phases] == [20.0, 3.0, 50.0, 3.0]
        assert [p.state for p in logic.phases] == ["GGrrr", "yyrrr", "rrGGG", "rryyy"]
        assert tr.trafficlight.getPhase("C") == 0
        phases = []  # SUMO's phase after each step; the plan's cycle is 76 s from t = 90 s
        for _ in range(2 * 76):
            twin.step(inbox)
            phases.append((tr.trafficlight.getPhase("C"), tr.trafficlight.getRedYellowGreenState("C")))
        assert phases[: 76 - 1] == (
            [(0, "GGrrr")] * (20 - 1) + [(1, "yyrrr")] * 3 + [(2, "rrGGG")] * 50 + [(3, "rryyy")] * 3
        )
        assert phases[76 - 1 : 2 * 76 - 1] == (
            [(0, "GGrrr")] * 20 + [(1, "yyrrr")] * 3 + [(2, "rrGGG")] * 50 + [(3, "rryyy")] * 3
        )
