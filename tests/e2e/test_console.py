"""The console in real headless Chromium against a running pipeline (brokers, worker, bridge).

Skipped when Debian's ``chromium`` is not installed; ``.ci/run`` installs it. The screenshot is kept as a test
artifact in ``$CITYBRAIN_ARTIFACTS`` (default ``artifacts/``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.runtime import Stack
from tests.integration.conftest import Brokers, brokers, mqtt_publish, unique_settings  # noqa: F401 (fixture)

from .cdp import CHROMIUM, Browser

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium not installed"),
]
ARTIFACTS = Path(os.environ.get("CITYBRAIN_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
SEG = "A1left1"  # two lanes, leaves the demo city


def loops(ts_list: list[str], count: int, occ: float, speed: float) -> list[dict[str, Any]]:
    return [
        {
            "type": "loop",
            "detector_id": f"loop_mid_{SEG}_{lane}",
            "segment_id": SEG,
            "lane": f"{SEG}_{lane}",
            "lane_index": lane,
            "role": "mid_link",
            "ts": ts,
            "interval_s": 30,
            "count": count,
            "occupancy": occ,
            "speed_kmh": speed,
        }
        for ts in ts_list
        for lane in (0, 1)
    ]


@pytest.fixture
def stack(brokers: Brokers, tmp_path: Path) -> Iterator[tuple[Any, Any]]:  # noqa: F811
    s = unique_settings(brokers)
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        worker = st.start_worker()
        bridge = st.start_bridge()
        st.wait_healthy(bridge)
        st.wait_healthy(worker)
        yield st, worker


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def publish(st: Any, events: list[dict[str, Any]]) -> None:
    s = st.settings
    topic = f"{s.mqtt.topic_root}/{s.city}/loop/"
    mqtt_publish(s.mqtt.host, s.mqtt.port, [(topic + e["detector_id"], orjson.dumps(e)) for e in events])


def test_console_shows_live_congestion_and_keeps_an_acknowledgement(
    stack: tuple[Any, Any],
    browser: Browser,
    brokers: Brokers,  # noqa: F811
) -> None:
    st, worker = stack
    url = f"http://127.0.0.1:{worker.web_port}/"
    browser.goto(url)
    browser.wait_for("document.body.dataset.live === '1'")
    assert browser.js("document.querySelectorAll('path.seg').length") == 80  # the 4x4 demo city
    seg_los = f"document.querySelector('path[data-segment=\"{SEG}\"]').dataset.los"

    # free flow, then two congested minutes: the same segment turns from A to F without a reload
    publish(st, loops(["2025-01-06T07:30:30Z", "2025-01-06T07:31:00Z"], 4, 0.06, 46.0))
    assert browser.wait_for(f"['A','B'].includes({seg_los}) && {seg_los}")
    publish(
        st,
        loops(
            ["2025-01-06T07:31:30Z", "2025-01-06T07:32:00Z", "2025-01-06T07:32:30Z", "2025-01-06T07:33:00Z"],
            3,
            0.45,
            8.0,
        ),
    )
    assert browser.wait_for(f"{seg_los} === 'F'")
    colour = browser.js(f"getComputedStyle(document.querySelector('path[data-segment=\"{SEG}\"]')).stroke")
    assert colour.replace(" ", "") == "rgb(215,48,39)"  # the LOS F red

    # an incident alert on the alerts topic (as the incident agent publishes it)
    alert = {
        "event_id": "inc-e2e:1",
        "type": "incident.new",
        "time": "2025-01-06T07:33:00Z",
        "subject": "inc-e2e",
        "data": {
            "incident_id": "inc-e2e",
            "segment_id": SEG,
            "lanes": [1],
            "severity": "major",
            "kind": "blocked lane",
            "detected_at": "2025-01-06T07:33:00Z",
        },
    }

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=brokers.bootstrap)
        await p.start()
        try:
            await p.send_and_wait(st.settings.topics.name("alerts"), orjson.dumps(alert), key=b"inc-e2e")
        finally:
            await p.stop()

    asyncio.run(produce())
    item = "document.querySelector('li[data-incident=\"inc-e2e\"]')"
    browser.wait_for(f"!!{item}")
    browser.js("document.getElementById('operator').value = 'Operator Li'")
    browser.js(f"{item}.querySelector('input.note').value = 'tow truck sent'")
    browser.js(f"{item}.querySelector('button[data-act=\"acknowledge\"]').click()")
    assert browser.wait_for(f"{item}.querySelector('.ack-by')?.textContent") == "Operator Li"

    # persisted via Kafka: a fresh page load rebuilds it from the topics
    browser.call("Page.reload")
    browser.wait_for("document.body.dataset.live === '1'")
    assert browser.wait_for(f"{item}?.querySelector('.ack-by')?.textContent") == "Operator Li"
    assert "tow truck sent" in browser.js(f"{item}.textContent")
    assert browser.wait_for(f"{seg_los} === 'F'")
    browser.screenshot(ARTIFACTS / "console.png")
    assert (ARTIFACTS / "console.png").stat().st_size > 10_000
    assert browser.console_errors == []
