"""The console in real headless Chromium against a running pipeline (brokers, worker, bridge).

Skipped when Debian's ``chromium`` is not installed; ``.ci/run`` installs it. The screenshot is kept as a test
artifact in ``$CITYBRAIN_ARTIFACTS`` (default ``artifacts/``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import struct
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

import roadnet
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
        worker, _bridge = st.start_pipeline()
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
    # no auth here: recorded as unauthenticated, the typed name shown as a claim
    assert browser.wait_for(f"{item}.querySelector('.ack-by')?.textContent") == "unauthenticated"
    assert browser.js(f"{item}.querySelector('.claimed').textContent") == "(says Operator Li)"

    # persisted via Kafka: a fresh page load rebuilds it from the topics
    browser.call("Page.reload")
    browser.wait_for("document.body.dataset.live === '1'")
    assert browser.wait_for(f"{item}?.querySelector('.ack-by')?.textContent") == "unauthenticated"
    assert "Operator Li" in browser.js(f"{item}.textContent")
    assert "tow truck sent" in browser.js(f"{item}.textContent")
    assert browser.wait_for(f"{seg_los} === 'F'")
    browser.screenshot(ARTIFACTS / "console.png")
    assert (ARTIFACTS / "console.png").stat().st_size > 10_000
    assert browser.console_errors == []

    # no base map configured: nothing but the worker's own origin was fetched, and the CSP allows nothing else
    assert browser.js("document.getElementById('tiles')") is None
    assert browser.js("document.getElementById('attribution').hidden") is True
    assert (
        browser.js(
            "performance.getEntriesByType('resource').filter(e => !e.name.startsWith(location.origin + '/'))"
            ".map(e => e.name)"
        )
        == []
    )
    assert csp_img_src(url) == "'self' data:"


def csp_img_src(url: str) -> str:
    with urllib.request.urlopen(url + "console/", timeout=5) as r:
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    return next(d.strip()[len("img-src ") :] for d in csp.split(";") if d.strip().startswith("img-src "))


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid one-colour RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class TileServer:
    """A local XYZ tile server: every ``/tiles/{z}/{x}/{y}.png`` is a grey PNG; requests are recorded."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        tile = png(256, 256, (120, 130, 140))
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(tile)))
                self.end_headers()
                self.wfile.write(tile)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ (slippy map) tile holding a lon/lat at zoom z."""
    n = 2**z
    phi = math.radians(lat)
    return int((lon + 180) / 360 * n), int((1 - math.log(math.tan(phi) + 1 / math.cos(phi)) / math.pi) / 2 * n)


def test_console_draws_a_configured_base_map_and_shows_its_attribution(
    brokers: Brokers,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    # the demo city geo-referenced (origin in Berlin), written as a traffic-net file the worker loads
    graph = roadnet.grid_city()
    graph.graph.setdefault("source_meta", {})["geo_reference"] = {"type": "equirectangular", "lon0": 13.4, "lat0": 52.5}
    network = tmp_path / "network.json"
    network.write_text(json.dumps(roadnet.dump_trafficnet(graph)))
    tiles = TileServer()
    try:
        s = unique_settings(
            brokers,
            network=network,
            console={"tile_url": tiles.origin + "/tiles/{z}/{x}/{y}.png", "tile_attribution": "© test tiles"},
        )
        with Stack(s, tmp_path) as st:
            worker = st.start_worker()
            st.wait_healthy(worker)
            url = f"http://127.0.0.1:{worker.web_port}/"  # type: ignore[attr-defined]
            assert csp_img_src(url) == "'self' data: " + tiles.origin

            browser.goto(url)
            browser.wait_for("document.querySelectorAll('path.seg').length === 80")
            assert browser.wait_for("document.getElementById('attribution').hidden === false")
            assert browser.js("document.getElementById('attribution').textContent") == "© test tiles"
            n_images = browser.wait_for("document.querySelectorAll('#tiles image').length")
            assert 0 < n_images <= 150
            # the browser really fetched tiles from the tile server (allowed by the CSP), around the network
            browser.wait_for(
                f"performance.getEntriesByType('resource').filter(e => e.name.startsWith('{tiles.origin}/')).length"
            )
            assert tiles.requests and all(r.startswith("/tiles/") and r.endswith(".png") for r in tiles.requests)
            zooms = {int(r.split("/")[2]) for r in tiles.requests}
            assert all(12 <= z <= 19 for z in zooms), zooms
            pts = [
                p
                for seg in browser.js("fetch('/api/network').then(r => r.json()).then(n => n.segments)")
                for p in seg["geometry_lonlat"]
            ]
            lon = sum(p[0] for p in pts) / len(pts)
            lat = sum(p[1] for p in pts) / len(pts)
            assert 13.4 < lon < 13.43 and 52.5 < lat < 52.52
            z = max(zooms)
            x, y = tile_of(lon, lat, z)
            assert f"/tiles/{z}/{x}/{y}.png" in tiles.requests, (z, x, y, sorted(tiles.requests))
            browser.screenshot(ARTIFACTS / "console-basemap.png")
            assert browser.console_errors == []
    finally:
        tiles.close()
