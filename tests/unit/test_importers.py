"""Unit tests for the network importers (SUMO, CityFlow, CBEngine, OSM XML/PBF), load_network, GeoJSON and
``citybrain net`` helpers.

Each format has a tiny hand-written network (written to tmp_path) with exact expected values; the real files
under ``../shared/data`` are checked when present (skipped otherwise).
"""

from __future__ import annotations

import bz2
import json
import math
import re
import zlib
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from roadnet import RoadnetError, dump_trafficnet, grid_city, load_network, load_trafficnet, to_geojson, validate_graph
from roadnet.cbengine import load_cbengine
from roadnet.cityflow import load_cityflow
from roadnet.geojson import LocalProjection, UTMProjection
from roadnet.io import detect_format
from roadnet.layout import capacity_veh_h, finish_graph, split_axes
from roadnet.osm import load_osm, parse_maxspeed
from roadnet.sumo_net import load_sumo_net

DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
HANGZHOU_TXT = DATA / "hangzhou/geo_roadnet_cbengine/hangzhou.txt"
CITYFLOW_DIR = DATA / "hangzhou/intersections_1x1_cityflow"
RESCO = DATA / "networks/sumo_resco"
OSM_DIR = DATA / "networks/osm"

EDGE_KEYS = (
    "segment_id",
    "length_m",
    "lanes",
    "speed_limit_kmh",
    "capacity_veh_h",
    "signalised_end",
    "free_flow_travel_time_s",
    "lane_detail",
    "geometry_xy_m",
    "detector_ids",
)


def edge(G: nx.MultiDiGraph, sid: str) -> dict[str, Any]:
    u, v = G.graph["segment_index"][sid]
    attrs: dict[str, Any] = G.edges[u, v, sid]
    return attrs


def assert_round_trip(G: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """importer -> dump_trafficnet -> JSON -> load_trafficnet reproduces every contract attribute."""
    H = load_trafficnet(json.loads(json.dumps(dump_trafficnet(G))))
    assert dict(H.nodes(data=True)) == dict(G.nodes(data=True))
    assert sorted(H.graph["segment_index"].items()) == sorted(G.graph["segment_index"].items())
    for u, v, sid, d in G.edges(keys=True, data=True):
        assert {k: H.edges[u, v, sid][k] for k in EDGE_KEYS} == {k: d[k] for k in EDGE_KEYS}, sid
    assert H.graph["traffic_lights"] == G.graph["traffic_lights"]
    assert H.graph["detectors"] == G.graph["detectors"]
    assert H.graph["source_meta"] == G.graph["source_meta"]
    assert H.graph["crs"] == G.graph["crs"]
    return H


def det_counts(G: nx.MultiDiGraph) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in G.graph["detectors"].values():
        key = "camera" if d["kind"] == "camera" else d["role"]
        out[key] = out.get(key, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------ shared layout


def test_demo_city_follows_the_shared_layout() -> None:
    """Re-deriving a demo city's capacities and detectors with layout.finish_graph changes nothing."""
    G = grid_city(rows=2, cols=3, spacing_m=279.2, lanes=3, cycle_s=60)
    H = G.copy()
    H.graph = {k: v for k, v in G.graph.items() if k != "detectors"}
    H.graph["detectors"] = {}
    for _, _, d in H.edges(data=True):
        d.pop("capacity_veh_h")
        d.pop("detector_ids")
    finish_graph(H, ndigits=None)
    assert H.graph["detectors"] == G.graph["detectors"]
    for u, v, sid, d in G.edges(keys=True, data=True):
        assert H.edges[u, v, sid]["capacity_veh_h"] == d["capacity_veh_h"]
        assert H.edges[u, v, sid]["detector_ids"] == d["detector_ids"]


def test_split_axes_handles_rotated_grids() -> None:
    assert split_axes({"n": 180.0, "s": 0.0, "e": 270.0, "w": 90.0}) == (["n", "s"], ["e", "w"])
    # a grid rotated by 40 degrees still splits into its two roads
    assert split_axes({"a": 40.0, "b": 220.0, "c": 130.0, "d": 310.0}) == (["a", "b"], ["c", "d"])
    assert split_axes({"only": 90.0}) == ([], ["only"])  # a lone eastbound approach is on the E-W axis
    assert capacity_veh_h(2, 0.467) == 1681.0
    assert capacity_veh_h(2, None) == 3600.0
    assert capacity_veh_h(1, 0.0) == 1.0  # never-green approach: capacity floor, keeps the contract (> 0)


def test_projections_round_trip() -> None:
    utm = UTMProjection(32)
    x, y = utm.to_xy(9.0, 50.0)  # on the central meridian: easting 500 km, northing = k0 x meridian arc
    assert x == pytest.approx(500000.0, abs=1e-6)
    assert y == pytest.approx(5538630.70, abs=0.01)
    lon, lat = utm.to_lonlat(*utm.to_xy(6.9583, 50.9413))
    assert (lon, lat) == (pytest.approx(6.9583, abs=1e-7), pytest.approx(50.9413, abs=1e-7))
    south = UTMProjection(33, south=True)
    lon, lat = south.to_lonlat(*south.to_xy(15.3, -30.2))
    assert (lon, lat) == (pytest.approx(15.3, abs=1e-7), pytest.approx(-30.2, abs=1e-7))
    loc = LocalProjection(120.0, 30.0)
    x, y = loc.to_xy(120.001, 30.001)
    assert (x, y) == (pytest.approx(96.30, abs=0.01), pytest.approx(111.20, abs=0.01))
    assert loc.to_lonlat(x, y) == (pytest.approx(120.001), pytest.approx(30.001))


# ------------------------------------------------------------------------------------------------ SUMO

SUMO_NET = """<?xml version="1.0" encoding="UTF-8"?>
<net version="1.9">
    <location netOffset="-500000.00,-5538630.70" convBoundary="0,0,200,100" origBoundary="8,49,10,51"
              projParameter="+proj=utm +zone=32 +ellps=WGS84 +datum=WGS84 +units=m +no_defs"/>
    <edge id=":C_0" function="internal">
        <lane id=":C_0_0" index="0" speed="13.89" length="5.00" shape="100,-4.8 105,-1.6"/>
    </edge>
    <edge id="WC" from="W" to="C" priority="9" type="highway.primary">
        <lane id="WC_0" index="0" allow="pedestrian" speed="2.78" length="95.50" width="2.00"
              shape="4.5,-7.0 100.0,-7.0"/>
        <lane id="WC_1" index="1" disallow="tram rail" speed="13.89" length="95.50" shape="4.5,-4.8 100.0,-4.8"/>
        <lane id="WC_2" index="2" disallow="tram rail" speed="13.89" length="95.50" shape="4.5,-1.6 100.0,-1.6"/>
    </edge>
    <edge id="CW" from="C" to="W" priority="9">
        <lane id="CW_0" index="0" speed="13.89" length="91.00" shape="95.5,1.6 4.5,1.6"/>
    </edge>
    <edge id="CE" from="C" to="E" priority="9">
        <lane id="CE_0" index="0" speed="16.67" length="95.00" shape="105.0,-1.6 200.0,-1.6"/>
    </edge>
    <edge id="NC" from="N" to="C" priority="4">
        <lane id="NC_0" index="0" speed="8.33" length="90.00" shape="101.6,100.0 101.6,10.0"/>
    </edge>
    <edge id="WN_path" from="W" to="N" priority="1" type="highway.footway">
        <lane id="WN_path_0" index="0" allow="pedestrian bicycle" speed="2.78" length="141.42"/>
    </edge>
    <tlLogic id="C" type="static" programID="0" offset="7">
        <phase duration="40" state="GGrr"/>
        <phase duration="5"  state="yyrr"/>
        <phase duration="30" state="rrGg"/>
        <phase duration="5"  state="rryy"/>
    </tlLogic>
    <junction id="W" type="dead_end" x="0.00" y="0.00" incLanes="CW_0" intLanes="" shape=""/>
    <junction id="C" type="traffic_light" x="100.00" y="0.00" incLanes="WC_1 WC_2 NC_0" intLanes=":C_0_0"
              shape=""/>
    <junction id="E" type="dead_end" x="200.00" y="0.00" incLanes="CE_0" intLanes="" shape=""/>
    <junction id="N" type="dead_end" x="100.00" y="100.00" incLanes="" intLanes="" shape=""/>
    <junction id=":C_0_0" type="internal" x="102.00" y="-2.00" incLanes="" intLanes=""/>
    <connection from="WC" to="CE" fromLane="1" toLane="0" via=":C_0_0" tl="C" linkIndex="0" dir="s" state="O"/>
    <connection from="WC" to="CE" fromLane="2" toLane="0" via=":C_0_0" tl="C" linkIndex="1" dir="s" state="O"/>
    <connection from="NC" to="CE" fromLane="0" toLane="0" via=":C_0_0" tl="C" linkIndex="2" dir="l" state="o"/>
    <connection from="NC" to="CW" fromLane="0" toLane="0" via=":C_0_0" tl="C" linkIndex="3" dir="R" state="o"/>
    <connection from=":C_0" to="CE" fromLane="0" toLane="0" dir="s" state="M"/>
</net>
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_sumo_tiny_exact(tmp_path: Path) -> None:
    G = load_sumo_net(write(tmp_path, "tiny.net.xml", SUMO_NET))
    assert G.graph["name"] == "tiny"
    assert G.graph["crs"] == "EPSG:4326"
    assert sorted(G.nodes) == ["C", "E", "N", "W"]
    assert sorted(G.graph["segment_index"]) == ["CE", "CW", "NC", "WC"]  # internal edge and footway skipped
    wc = edge(G, "WC")
    assert wc["lanes"] == 2  # the sidewalk lane is dropped
    assert [ln["lane_id"] for ln in wc["lane_detail"]] == ["WC_1", "WC_2"]
    assert [ln["turns"] for ln in wc["lane_detail"]] == [["s"], ["s"]]
    assert wc["length_m"] == 95.5
    assert wc["speed_limit_kmh"] == 50.0
    assert wc["geometry_xy_m"] == [[4.5, -3.2], [100.0, -3.2]]  # mean of the two car-lane shapes
    assert wc["capacity_veh_h"] == 1800.0  # 2 lanes x 1800 x 40/80
    assert wc["signalised_end"] is True
    nc = edge(G, "NC")
    assert (nc["speed_limit_kmh"], nc["lane_detail"][0]["turns"], nc["capacity_veh_h"]) == (30.0, ["l", "r"], 675.0)
    ce = edge(G, "CE")
    assert (ce["speed_limit_kmh"], ce["capacity_veh_h"], ce["signalised_end"]) == (60.0, 1800.0, False)
    assert ce["free_flow_travel_time_s"] == pytest.approx(95.0 / (60.0 / 3.6))
    t = G.graph["traffic_lights"]["C"]
    assert (t["node"], t["cycle_s"], t["offset_s"], t["program_id"], t["type"]) == ("C", 80.0, 7.0, "0", "static")
    assert [(p["kind"], p["duration_s"], p["green_approaches"]) for p in t["phases"]] == [
        ("green", 40.0, ["WC"]),
        ("yellow", 5.0, []),
        ("green", 30.0, ["NC"]),
        ("yellow", 5.0, []),
    ]
    assert [(a["segment_id"], a["green_phases"], a["fixed_green_ratio"]) for a in t["approaches"]] == [
        ("WC", [0], 0.5),
        ("NC", [2], 0.375),
    ]
    assert [lk["link_index"] for lk in t["approaches"][1]["links"]] == [2, 3]
    assert G.nodes["C"]["tls_id"] == "C" and G.nodes["C"]["kind"] == "traffic_light"
    assert all(G.nodes[n]["fringe"] for n in "WEN") and not G.nodes["C"]["fringe"]
    # lon/lat from UTM zone 32 + netOffset: W sits at easting 500 km, northing 5538630.70 m -> (9 E, 50 N)
    assert (G.nodes["W"]["lon"], G.nodes["W"]["lat"]) == (pytest.approx(9.0, abs=1e-7), pytest.approx(50.0, abs=1e-7))
    assert G.nodes["C"]["lon"] == pytest.approx(9.0 + 100 / (111319.49 * math.cos(math.radians(50))), abs=1e-5)
    assert det_counts(G) == {"mid_link": 5, "stop_line": 3, "camera": 2}
    cam = G.graph["detectors"]["cam_WC"]
    assert (cam["pos_m"], cam["zone_length_m"], cam["lanes"], cam["tls_id"]) == (0.0, 95.5, ["WC_1", "WC_2"], "C")
    stop = G.graph["detectors"]["loop_stop_WC_2"]
    assert (stop["pos_m"], stop["dist_to_stop_line_m"], stop["lane_index"]) == (90.5, 5.0, 1)
    assert G.graph["source_meta"]["geo_reference"]["type"] == "utm"
    assert_round_trip(G)


def test_sumo_without_projection_is_local(tmp_path: Path) -> None:
    text = re.sub(r"<location[^>]*/>", '<location netOffset="0,0" projParameter="!"/>', SUMO_NET, flags=re.S)
    G = load_sumo_net(write(tmp_path, "local.net.xml", text))
    assert G.graph["crs"] == "local-m"
    assert "lon" not in G.nodes["C"]
    with pytest.raises(RoadnetError, match="GeoJSON"):
        to_geojson(G)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('length="95.00"', 'length="x"', r"tiny\.net\.xml: lane 'CE_0': length must be a number"),
        ('from="N" to="C"', 'from="Q" to="C"', r"edge 'NC': junction 'Q' is not in the network"),
        ('state="rryy"', 'state="ry"', r"tlLogic 'C' phase 3: state 'ry' is shorter than linkIndex 3"),
        ('<phase duration="5"  state="yyrr"/>', '<phase duration="0" state="yyrr"/>', r"phase 1: duration must be > 0"),
        ("</net>", "", r"tiny\.net\.xml: invalid XML"),
    ],
)
def test_sumo_malformed(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in SUMO_NET
    with pytest.raises(RoadnetError, match=message):
        load_sumo_net(write(tmp_path, "tiny.net.xml", SUMO_NET.replace(old, new, 1)))


def test_sumo_rejects_other_xml(tmp_path: Path) -> None:
    with pytest.raises(RoadnetError, match=r"not a SUMO network \(root element <routes>"):
        load_sumo_net(write(tmp_path, "x.net.xml", "<routes/>"))
    with pytest.raises(RoadnetError, match="cannot read"):
        load_sumo_net(tmp_path / "missing.net.xml")


# ------------------------------------------------------------------------------------------------ CityFlow


def cityflow_doc() -> dict[str, Any]:
    """A virtual intersection on each of W, E, N around the light I (width 10 m) at the origin."""

    def inter(iid: str, x: float, y: float, virtual: bool, **kw: Any) -> dict[str, Any]:
        return {"id": iid, "point": {"x": x, "y": y}, "width": 0 if virtual else 10, "virtual": virtual, **kw}

    def road(rid: str, a: str, b: str, pts: list[tuple[float, float]], speeds: list[float]) -> dict[str, Any]:
        return {
            "id": rid,
            "startIntersection": a,
            "endIntersection": b,
            "points": [{"x": x, "y": y} for x, y in pts],
            "lanes": [{"width": 3, "maxSpeed": s} for s in speeds],
        }

    links = [
        {
            "type": "go_straight",
            "startRoad": "rAI",
            "endRoad": "rIB",
            "laneLinks": [{"startLaneIndex": 1, "endLaneIndex": 0}],
        },
        {
            "type": "turn_left",
            "startRoad": "rAI",
            "endRoad": "rIN",
            "laneLinks": [{"startLaneIndex": 0, "endLaneIndex": 0}],
        },
        {
            "type": "turn_left",
            "startRoad": "rNI",
            "endRoad": "rIB",
            "laneLinks": [{"startLaneIndex": 0, "endLaneIndex": 0}],
        },
    ]
    light = {
        "roadLinkIndices": [0, 1, 2],
        "lightphases": [
            {"time": 5, "availableRoadLinks": []},
            {"time": 30, "availableRoadLinks": [0, 1]},
            {"time": 25, "availableRoadLinks": [2]},
        ],
    }
    return {
        "intersections": [
            inter("A", -200, 0, True),
            inter("I", 0, 0, False, roadLinks=links, trafficLight=light),
            inter("B", 200, 0, True),
            inter("N", 0, 200, True),
        ],
        "roads": [
            road("rAI", "A", "I", [(-200, 0), (0, 0)], [11.111, 11.111]),
            road("rIB", "I", "B", [(0, 0), (200, 0)], [16.667]),
            road("rNI", "N", "I", [(0, 200), (0, 0)], [11.111]),
            road("rIN", "I", "N", [(0, 0), (0, 200)], [11.111]),
        ],
    }


def test_cityflow_tiny_exact(tmp_path: Path) -> None:
    folder = tmp_path / "site_1x1"
    folder.mkdir()
    G = load_cityflow(write(folder, "roadnet.json", json.dumps(cityflow_doc())))
    assert G.graph["name"] == "site_1x1" and G.graph["crs"] == "local-m"
    assert sorted(G.graph["segment_index"]) == ["rAI", "rIB", "rIN", "rNI"]
    assert {n: (d["kind"], d["fringe"], d["tls_id"]) for n, d in G.nodes(data=True)} == {
        "A": ("dead_end", True, None),
        "I": ("traffic_light", False, "I"),
        "B": ("dead_end", True, None),
        "N": ("dead_end", True, None),
    }
    rai = edge(G, "rAI")
    assert rai["length_m"] == 190.0  # 200 m centre to centre minus the 10 m intersection width
    assert rai["geometry_xy_m"] == [[-200.0, 0.0], [-10.0, 0.0]]
    assert rai["speed_limit_kmh"] == 40.0
    # contract lane 0 (rightmost) is CityFlow lane 1 (CityFlow counts from the inside)
    assert [(ln["lane_id"], ln["turns"]) for ln in rai["lane_detail"]] == [("rAI_1", ["s"]), ("rAI_0", ["l"])]
    assert rai["capacity_veh_h"] == 1800.0  # 2 x 1800 x 30/60
    assert edge(G, "rNI")["capacity_veh_h"] == 751.0  # 1 x 1800 x round(25/60, 3)
    assert (edge(G, "rIB")["speed_limit_kmh"], edge(G, "rIB")["capacity_veh_h"]) == (60.0, 1800.0)
    t = G.graph["traffic_lights"]["I"]
    assert t["cycle_s"] == 60.0
    assert [(p["kind"], p["duration_s"], p["green_approaches"]) for p in t["phases"]] == [
        ("yellow", 5.0, []),
        ("green", 30.0, ["rAI"]),
        ("green", 25.0, ["rNI"]),
    ]
    assert [(a["segment_id"], a["green_phases"], a["fixed_green_ratio"]) for a in t["approaches"]] == [
        ("rAI", [1], 0.5),
        ("rNI", [2], 0.417),
    ]
    assert det_counts(G) == {"mid_link": 5, "stop_line": 3, "camera": 2}
    assert_round_trip(G)
    assert load_cityflow(cityflow_doc()).graph["name"] == "cityflow"


def _mutate(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target: Any = doc
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    last = keys[-1]
    target[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("roads.0.startIntersection", "Z", r"road 'rAI': intersection 'Z' is not in intersections"),
        ("roads.1.lanes.0.maxSpeed", "fast", r"road 'rIB' lane 0: maxSpeed must be a number"),
        ("roads.2.points", [{"x": 0, "y": 0}], r"road 'rNI': points must hold at least 2 points"),
        (
            "intersections.1.trafficLight.lightphases.2.availableRoadLinks",
            [7],
            r"intersection 'I' trafficLight phase 2: availableRoadLinks entry 7",
        ),
        (
            "intersections.1.trafficLight.lightphases.1.time",
            0,
            r"intersection 'I' trafficLight phase 1: time must be > 0",
        ),
        (
            "intersections.1.roadLinks.0.startRoad",
            "rIB",
            r"intersection 'I' roadLink 0: road 'rIB' must end and road 'rIB' start",
        ),
    ],
)
def test_cityflow_malformed(tmp_path: Path, path: str, value: Any, message: str) -> None:
    p = write(tmp_path, "roadnet.json", json.dumps(_mutate(cityflow_doc(), path, value)))
    with pytest.raises(RoadnetError, match=r"roadnet\.json: " + message):
        load_cityflow(p)


# ------------------------------------------------------------------------------------------------ CBEngine

CBENGINE_TXT = """5 // intersections: lat lon id signalized
30.000 120.000 0 1
30.001 120.000 1 0
30.000 120.001 2 0
29.999 120.000 3 0
30.000 119.999 4 0
4 // roads
0 1 111.2 13.8888888889 3 3 1 2
1 0 0 0 1 0 0 0 1
1 0 0 0 1 0 0 0 1
0 2 96.3 16.6666666667 2 2 3 4
1 1 0 0 1 1
1 1 0 0 1 1
0 3 111.2 13.8888888889 3 3 5 6
1 0 0 0 1 0 0 0 1
1 0 0 0 1 0 0 0 1
0 4 96.3 16.6666666667 2 2 7 8
1 1 0 0 1 1
1 1 0 0 1 1
1 // signals
0 1 3 5 7
"""


def test_cbengine_tiny_exact(tmp_path: Path) -> None:
    G = load_cbengine(write(tmp_path, "cross.txt", CBENGINE_TXT))
    assert (G.graph["name"], G.graph["crs"]) == ("cross", "EPSG:4326")
    assert G.number_of_nodes() == 5 and G.number_of_edges() == 8
    assert G.graph["segment_index"]["2"] == ("1", "0")  # dir2 of road 0-1 runs 1 -> 0
    assert (G.nodes["0"]["x_m"], G.nodes["0"]["y_m"]) == (0.0, 0.0)  # bbox centre
    assert G.nodes["1"]["y_m"] == pytest.approx(111.2, abs=0.01)
    assert G.nodes["2"]["x_m"] == pytest.approx(96.3, abs=0.01)
    assert (G.nodes["2"]["lon"], G.nodes["2"]["lat"]) == (120.001, 30.0)
    assert {n for n, d in G.nodes(data=True) if d["fringe"]} == {"1", "2", "3", "4"}
    assert G.nodes["0"]["kind"] == "traffic_light" and G.nodes["1"]["kind"] == "dead_end"
    r2 = edge(G, "2")
    assert (r2["length_m"], r2["lanes"], r2["speed_limit_kmh"]) == (111.2, 3, 50.0)
    # CBEngine lane ids road*100+k, k=0 the inner left-turn lane; contract lane 0 is the rightmost
    assert [(ln["lane_id"], ln["turns"]) for ln in r2["lane_detail"]] == [
        ("202", ["r"]),
        ("201", ["s"]),
        ("200", ["l"]),
    ]
    r4 = edge(G, "4")
    assert [(ln["lane_id"], ln["turns"]) for ln in r4["lane_detail"]] == [("401", ["r", "s"]), ("400", ["l", "s"])]
    assert r4["speed_limit_kmh"] == 60.0
    assert r2["geometry_lonlat"] == [[120.0, 30.001], [120.0, 30.0]]
    t = G.graph["traffic_lights"]["0"]
    assert [(p["kind"], p["duration_s"], p["green_approaches"]) for p in t["phases"]] == [
        ("green", 42.0, ["2", "6"]),  # from north and south
        ("yellow", 3.0, []),
        ("green", 42.0, ["4", "8"]),  # from east and west
        ("yellow", 3.0, []),
    ]
    assert t["cycle_s"] == 90.0
    assert {a["segment_id"]: a["fixed_green_ratio"] for a in t["approaches"]} == dict.fromkeys("2468", 0.467)
    assert (r2["capacity_veh_h"], r4["capacity_veh_h"], edge(G, "1")["capacity_veh_h"]) == (2522.0, 1681.0, 5400.0)
    assert det_counts(G) == {"mid_link": 20, "stop_line": 10, "camera": 4}
    assert_round_trip(G)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "0 2 96.3 16.6666666667 2 2 3 4\n1 1 0 0 1 1",
            "0 2 96.3 16.6666666667 2 2 3 4\n1 1 0 0 1",
            r"road 3 dir1_mov \(line 12\): expected 6 flags",
        ),
        ("0 3 111.2", "0 9 111.2", r"road 5/6 \(0->9\) \(line 14\): intersection '9' is not in"),
        ("30.001 120.000 1 0", "30.001 east 1 0", r"intersection 1 \(line 3\): longitude must be a number"),
        ("0 1 3 5 7", "0 1 3 5 99", r"signal of intersection 0 \(line 21\): road '99' is not in the road list"),
        ("4 // roads", "5 // roads", r"road record 4 \(line 20\): expected 8 fields"),
        (
            "0 1 111.2 13.8888888889 3 3 1 2",
            "0 1 -5 13.8888888889 3 3 1 2",
            r"road 1/2 \(0->1\) \(line 8\): length and speed_limit must be > 0",
        ),
    ],
)
def test_cbengine_malformed(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in CBENGINE_TXT
    with pytest.raises(RoadnetError, match=r"bad\.txt: " + message):
        load_cbengine(write(tmp_path, "bad.txt", CBENGINE_TXT.replace(old, new, 1)))


# ------------------------------------------------------------------------------------------------ OSM

OSM_NODES = [  # id, lat, lon, tags
    ("1", 0.0, 0.0, {}),
    ("2", 0.0, 0.001, {}),
    ("3", 0.0, 0.002, {}),
    ("4", 0.001, 0.001, {}),
    ("5", -0.001, 0.001, {}),
    ("6", 0.001, 0.002, {}),
    ("7", 0.0001, 0.001, {"highway": "traffic_signals"}),  # on way 11, 11 m before junction 2: snaps to it
    ("8", 0.0005, 0.002, {"highway": "traffic_signals"}),  # mid-block on way 14, 56 m from any junction
]
OSM_WAYS = [  # id, refs, tags
    ("10", ["1", "2", "3"], {"highway": "primary", "lanes": "4", "maxspeed": "30 mph"}),
    ("11", ["4", "7", "2"], {"highway": "residential", "oneway": "yes"}),
    ("12", ["2", "5"], {"highway": "footway"}),
    ("13", ["5", "1"], {"highway": "service"}),
    ("14", ["3", "8", "6"], {"highway": "secondary", "oneway": "-1", "lanes": "2", "maxspeed": "50"}),
    ("15", ["4", "6"], {"highway": "residential", "access": "private"}),
]


def osm_xml() -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="hand">']
    for nid, lat, lon, tags in OSM_NODES:
        body = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        out.append(f'<node id="{nid}" lat="{lat}" lon="{lon}">{body}</node>')
    for wid, refs, tags in OSM_WAYS:
        body = "".join(f'<nd ref="{r}"/>' for r in refs) + "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        out.append(f'<way id="{wid}">{body}</way>')
    out.append('<relation id="99"><member type="way" ref="10" role=""/></relation>')
    out.append("</osm>")
    return "\n".join(out)


def check_osm_tiny(G: nx.MultiDiGraph) -> None:
    deg = 111195.08 * 0.001  # metres per 0.001 degree on the 6371008.8 m sphere
    assert G.graph["crs"] == "EPSG:4326"
    assert sorted(G.nodes) == ["1", "2", "3", "4", "6", "8"]
    assert sorted(G.graph["segment_index"]) == ["-10#0", "-10#1", "-14#0", "-14#1", "10#0", "10#1", "11#0"]
    assert G.graph["segment_index"]["-14#1"] == ("6", "8")  # oneway=-1: against the way's node order
    assert G.graph["segment_index"]["11#0"] == ("4", "2")
    e = edge(G, "10#0")
    assert (e["lanes"], e["speed_limit_kmh"], e["length_m"]) == (2, 48.3, round(deg, 2))  # lanes=4 two-way
    assert e["geometry_lonlat"] == [[0.0, 0.0], [0.001, 0.0]]
    assert e["geometry_xy_m"][1][0] - e["geometry_xy_m"][0][0] == pytest.approx(deg, abs=0.01)
    e = edge(G, "11#0")
    assert (e["lanes"], e["speed_limit_kmh"], e["length_m"], len(e["geometry_xy_m"])) == (1, 30.0, round(deg, 2), 3)
    e = edge(G, "-14#1")
    assert (e["lanes"], e["speed_limit_kmh"], e["length_m"]) == (2, 50.0, round(deg / 2, 2))
    assert {n for n, d in G.nodes(data=True) if d["fringe"]} == {"1", "4", "6"}
    assert set(G.graph["traffic_lights"]) == {"2", "8"}
    t2 = G.graph["traffic_lights"]["2"]
    assert [(p["kind"], p["green_approaches"]) for p in t2["phases"]] == [
        ("green", ["11#0"]),
        ("yellow", []),
        ("green", ["-10#1", "10#0"]),
        ("yellow", []),
    ]
    t8 = G.graph["traffic_lights"]["8"]  # a single southbound approach: the E-W stage is the pedestrian stage
    assert [(p["kind"], p["green_approaches"]) for p in t8["phases"]] == [
        ("green", ["-14#1"]),
        ("yellow", []),
        ("red", []),
        ("yellow", []),
    ]
    assert G.nodes["8"]["kind"] == "traffic_light" and G.nodes["3"]["kind"] == "priority"
    assert (edge(G, "10#0")["capacity_veh_h"], edge(G, "11#0")["capacity_veh_h"]) == (1681.0, 841.0)
    assert edge(G, "10#1")["capacity_veh_h"] == 3600.0
    assert det_counts(G) == {"mid_link": 13, "stop_line": 7, "camera": 4}


def test_osm_tiny_exact(tmp_path: Path) -> None:
    G = load_osm(write(tmp_path, "tiny.osm", osm_xml()))
    assert G.graph["name"] == "tiny"
    check_osm_tiny(G)
    assert_round_trip(G)


def test_osm_bz2_and_sniffing(tmp_path: Path) -> None:
    p = tmp_path / "tiny.osm.bz2"
    p.write_bytes(bz2.compress(osm_xml().encode()))
    check_osm_tiny(load_network(p))
    q = write(tmp_path, "extract", osm_xml())  # no extension: recognised by its <osm> root
    assert detect_format(q) == "osm-xml"
    check_osm_tiny(load_network(q))


def test_osm_malformed(tmp_path: Path) -> None:
    with pytest.raises(RoadnetError, match=r"bad\.osm: node '2': needs numeric lat and lon"):
        load_osm(write(tmp_path, "bad.osm", osm_xml().replace('lat="0.0" lon="0.001"', 'lat="x" lon="0.001"')))
    with pytest.raises(RoadnetError, match=r"cut\.osm: invalid OSM XML"):
        load_osm(write(tmp_path, "cut.osm", osm_xml()[:-20]))
    with pytest.raises(RoadnetError, match=r"paths\.osm: no drivable roads"):
        only_paths = re.sub(r'v="(primary|residential|secondary)"', 'v="footway"', osm_xml())
        load_osm(write(tmp_path, "paths.osm", only_paths))
    with pytest.raises(RoadnetError, match=r"not OSM XML \(root element <net>"):
        load_osm(write(tmp_path, "net.osm", "<net/>"))


def test_parse_maxspeed() -> None:
    assert parse_maxspeed("50") == 50.0
    assert parse_maxspeed("30 mph") == 48.3
    assert parse_maxspeed("60;40") == 60.0
    assert parse_maxspeed("DE:urban") == 50.0
    assert parse_maxspeed("none") is None
    assert parse_maxspeed("signals") is None
    assert parse_maxspeed(None) is None


# A minimal OSM PBF writer (protobuf wire format), to test the pure-Python reader on the same tiny network.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zz(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _f(field: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(field << 3) + _varint(payload)
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _packed(field: int, values: list[int]) -> bytes:
    return _f(field, b"".join(_varint(v) for v in values))


def _blob(kind: str, data: bytes) -> bytes:
    blob = _f(2, len(data)) + _f(3, zlib.compress(data))
    header = _f(1, kind.encode()) + _f(3, len(blob))
    return len(header).to_bytes(4, "big") + header + blob


def osm_pbf() -> bytes:
    strings = [""]

    def s(x: str) -> int:
        if x not in strings:
            strings.append(x)
        return strings.index(x)

    ids = [int(n[0]) for n in OSM_NODES]
    lats = [round(n[1] * 1e7) for n in OSM_NODES]  # granularity 100 nanodegrees
    lons = [round(n[2] * 1e7) for n in OSM_NODES]
    kv: list[int] = []
    for _, _, _, tags in OSM_NODES:
        for k, v in tags.items():
            kv += [s(k), s(v)]
        kv.append(0)

    def delta(xs: list[int]) -> list[int]:
        return [_zz(x - (xs[i - 1] if i else 0)) for i, x in enumerate(xs)]

    dense = _packed(1, delta(ids)) + _packed(8, delta(lats)) + _packed(9, delta(lons)) + _packed(10, kv)
    ways = b""
    for wid, refs, tags in OSM_WAYS:
        way = _f(1, int(wid)) + _packed(2, [s(k) for k in tags]) + _packed(3, [s(v) for v in tags.values()])
        way += _packed(8, delta([int(r) for r in refs]))
        ways += _f(3, way)
    table = b"".join(_f(1, x.encode()) for x in strings)
    block = _f(1, table) + _f(2, _f(2, dense)) + _f(2, ways)
    header = _f(4, b"OsmSchema-V0.6") + _f(4, b"DenseNodes")
    return _blob("OSMHeader", header) + _blob("OSMData", block)


def test_osm_pbf_tiny_matches_xml(tmp_path: Path) -> None:
    p = tmp_path / "tiny.osm.pbf"
    p.write_bytes(osm_pbf())
    assert detect_format(p) == "osm-pbf"
    G = load_network(p)
    check_osm_tiny(G)
    X = load_osm(write(tmp_path, "tiny.osm", osm_xml()))
    same = {"generator": None, "source_format": None}  # the only differences: source file and format
    assert dump_trafficnet(G) | same == dump_trafficnet(X) | same


def test_osm_pbf_malformed(tmp_path: Path) -> None:
    data = osm_pbf()
    with pytest.raises(RoadnetError, match=r"cut\.osm\.pbf: truncated PBF blob"):
        (tmp_path / "cut.osm.pbf").write_bytes(data[:-10])
        load_osm(tmp_path / "cut.osm.pbf")
    with pytest.raises(RoadnetError, match=r"junk\.pbf: not an OSM PBF file"):
        (tmp_path / "junk.pbf").write_bytes(b"\xff\xff\xff\xffhello")
        load_network(tmp_path / "junk.pbf")
    with pytest.raises(RoadnetError, match=r"unsupported features \['HistoricalInformation'\]"):
        header = _f(4, b"OsmSchema-V0.6") + _f(4, b"HistoricalInformation")
        (tmp_path / "hist.osm.pbf").write_bytes(_blob("OSMHeader", header))
        load_osm(tmp_path / "hist.osm.pbf")


# ------------------------------------------------------------------------------------------------ load_network


def test_load_network_dispatch(tmp_path: Path) -> None:
    files = {
        "sumo-net": write(tmp_path, "a.net.xml", SUMO_NET),
        "cityflow": write(tmp_path, "b.json", json.dumps(cityflow_doc())),
        "cbengine": write(tmp_path, "c.txt", CBENGINE_TXT),
        "osm-xml": write(tmp_path, "d.osm", osm_xml()),
    }
    for fmt, p in files.items():
        assert detect_format(p) == fmt
        G = load_network(p)
        validate_graph(G)
        assert G.graph["source_meta"]["source_format"] == fmt
    tn = tmp_path / "e.json"
    tn.write_text(json.dumps(dump_trafficnet(grid_city(rows=1, cols=2))))
    assert detect_format(tn) == "traffic-net"
    assert load_network(tn).number_of_edges() == grid_city(rows=1, cols=2).number_of_edges()
    # content sniffing without a telling extension
    assert detect_format(write(tmp_path, "net.xml", SUMO_NET)) == "sumo-net"
    assert detect_format(write(tmp_path, "roads.dat", CBENGINE_TXT)) == "cbengine"
    assert detect_format(write(tmp_path, "flows", json.dumps(cityflow_doc()))) == "cityflow"


def test_load_network_errors(tmp_path: Path) -> None:
    with pytest.raises(RoadnetError, match="no such network file"):
        load_network(tmp_path / "nope.json")
    with pytest.raises(RoadnetError, match=r"x\.json: JSON is neither traffic-net/1.0 \(schema='other'\)"):
        load_network(write(tmp_path, "x.json", '{"schema": "other"}'))
    with pytest.raises(RoadnetError, match=r"y\.json: invalid JSON"):
        load_network(write(tmp_path, "y.json", "{"))
    with pytest.raises(RoadnetError, match=r"z\.bin: unknown network format; supported: traffic-net/1.0 JSON"):
        load_network(write(tmp_path, "z.bin", "hello"))


# ------------------------------------------------------------------------------------------------ GeoJSON


def test_geojson_valid_lonlat(tmp_path: Path) -> None:
    G = load_cbengine(write(tmp_path, "cross.txt", CBENGINE_TXT))
    doc = to_geojson(G)
    assert doc["type"] == "FeatureCollection"
    w, s, e, n = doc["bbox"]
    assert (w, s, e, n) == (119.999, 29.999, 120.001, 30.001)
    lines = [f for f in doc["features"] if f["geometry"]["type"] == "LineString"]
    points = [f for f in doc["features"] if f["geometry"]["type"] == "Point"]
    assert len(lines) == 8 and len(points) == 1
    for f in lines:
        coords = f["geometry"]["coordinates"]
        assert len(coords) >= 2
        for lon, lat in coords:  # lon first, inside the bbox, at most 7 decimals
            assert w <= lon <= e and s <= lat <= n
            assert 119 < lon < 121 and 29 < lat < 31
            assert round(lon, 7) == lon and round(lat, 7) == lat
        assert set(f["properties"]) >= {"segment_id", "lanes", "speed_limit_kmh", "length_m"}
    assert points[0]["geometry"]["coordinates"] == [120.0, 30.0]
    assert points[0]["properties"]["tls_id"] == "0"
    # after a traffic-net round trip (no geometry_lonlat) the recorded geo-reference places the segments
    H = load_trafficnet(json.loads(json.dumps(dump_trafficnet(G))))
    again = to_geojson(H)
    for a, b in zip(doc["features"], again["features"], strict=True):
        assert a["geometry"]["type"] == b["geometry"]["type"]
        pa, pb = a["geometry"]["coordinates"], b["geometry"]["coordinates"]
        pairs = zip(pa, pb, strict=True) if a["geometry"]["type"] == "LineString" else [(pa, pb)]
        for p, q in pairs:
            assert q == pytest.approx(p, abs=2e-7)
    json.dumps(doc, allow_nan=False)


def test_geojson_local_network_needs_origin() -> None:
    G = grid_city(rows=1, cols=1)
    with pytest.raises(RoadnetError, match=r"local metres .* GeoJSON \(RFC 7946\) requires WGS84 .* origin_lonlat"):
        to_geojson(G)
    doc = to_geojson(G, origin_lonlat=(10.0, 50.0))
    first = doc["features"][0]["geometry"]["coordinates"]
    assert all(9.99 < lon < 10.02 and 49.99 < lat < 50.01 for lon, lat in first)
    with pytest.raises(RoadnetError, match="origin_lonlat must be"):
        to_geojson(G, origin_lonlat=(50.0, 200.0))


# ------------------------------------------------------------------------------------------------ net info/export


def test_net_info_and_export(tmp_path: Path) -> None:
    from ops.net_cmd import export, info

    src = write(tmp_path, "cross.txt", CBENGINE_TXT)
    text = info(src)
    assert "CBEngine roadnet text" in text
    assert "nodes          5 (fringe 4, signalised 1)" in text
    assert "segments       8 (4 end at a traffic light)" in text
    assert "lanes          20" in text
    assert "34 (4 camera, 20 loop mid_link, 10 loop stop_line)" in text
    assert "50 km/h:      4 segments" in text and "60 km/h:      4 segments" in text
    assert "bbox lon/lat   119.999000, 29.999000 .. 120.001000, 30.001000" in text
    out, geo = tmp_path / "net.json", tmp_path / "net.geojson"
    msg = export(src, out, geo)
    assert "5 nodes, 8 segments, 1 traffic lights, 34 detectors" in msg
    assert load_trafficnet(out).number_of_edges() == 8
    assert json.loads(geo.read_text())["type"] == "FeatureCollection"
    # a local-metre network: refuse GeoJSON up front, write nothing
    local = write(tmp_path, "roadnet.json", json.dumps(cityflow_doc()))
    out2 = tmp_path / "local.json"
    with pytest.raises(RoadnetError, match="GeoJSON"):
        export(local, out2, tmp_path / "local.geojson")
    assert not out2.exists()
    assert "traffic-net/1.0" in export(local, out2, None, origin_lonlat=None)


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not HANGZHOU_TXT.exists(), reason="hangzhou.txt not available")
def test_real_cbengine_hangzhou() -> None:
    G = load_network(HANGZHOU_TXT)
    # MANIFEST: 269 intersections, 448 (two-way) roads, 247 signalised; 30.242-30.260 N, 120.154-120.183 E
    assert G.number_of_nodes() == 269
    assert G.number_of_edges() == 2 * 448
    assert len(G.graph["traffic_lights"]) == 247
    assert all(d["lanes"] == 3 for _, _, d in G.edges(data=True))
    lats = [d["lat"] for _, d in G.nodes(data=True)]
    lons = [d["lon"] for _, d in G.nodes(data=True)]
    assert 30.241 < min(lats) and max(lats) < 30.261 and 120.153 < min(lons) and max(lons) < 120.184
    # the file's lengths follow the road: never shorter than the straight node-to-node distance
    for _, _, d in G.edges(data=True):
        (x0, y0), (x1, y1) = d["geometry_xy_m"]
        assert d["length_m"] >= math.hypot(x1 - x0, y1 - y0) - 1.0
    assert_round_trip(G)


RESCO_NETS = ["cologne1", "cologne8", "ingolstadt7"]


@pytest.mark.skipif(not RESCO.is_dir(), reason="sumo_resco networks not available")
@pytest.mark.parametrize("name", RESCO_NETS)
def test_real_sumo_resco(name: str) -> None:
    path = RESCO / name / f"{name}.net.xml"
    text = path.read_text()
    normal_edges = len(re.findall(r'<edge id="[^:"][^"]*" from=', text))  # independent count (no function attr)
    tls_ids = set(re.findall(r'<tlLogic id="([^"]+)"', text))
    G = load_network(path)
    assert G.number_of_edges() == normal_edges  # every normal edge of these nets has car lanes
    assert set(G.graph["traffic_lights"]) == tls_ids
    m = re.search(r'origBoundary="([^"]+)"', text)
    assert m is not None
    w, s, e, n = map(float, m.group(1).split(","))
    assert all(w <= d["lon"] <= e and s <= d["lat"] <= n for _, d in G.nodes(data=True))
    for t in G.graph["traffic_lights"].values():
        assert any(p["kind"] == "green" for p in t["phases"])
        assert all(0 < a["fixed_green_ratio"] < 1 for a in t["approaches"])
    if name == "cologne1":
        assert_round_trip(G)
        assert len(to_geojson(G)["features"]) == normal_edges + len(tls_ids)


@pytest.mark.skipif(not CITYFLOW_DIR.is_dir(), reason="CityFlow Hangzhou data not available")
def test_real_cityflow_hangzhou() -> None:
    files = sorted(CITYFLOW_DIR.glob("*/roadnet.json"))
    assert files
    for f in files:
        G = load_network(f)
        assert (G.number_of_nodes(), G.number_of_edges(), len(G.graph["traffic_lights"])) == (5, 8, 1)
        t = next(iter(G.graph["traffic_lights"].values()))
        assert t["cycle_s"] == 245.0 and len(t["phases"]) == 9


@pytest.mark.skipif(not (OSM_DIR / "West-Oakland.osm.bz2").exists(), reason="OSM extracts not available")
def test_real_osm_extracts() -> None:
    raw = bz2.decompress((OSM_DIR / "West-Oakland.osm.bz2").read_bytes()).decode()
    G = load_network(OSM_DIR / "West-Oakland.osm.bz2")
    signal_nodes = set(
        re.findall(r'<node id="(\d+)"[^>]*>\s*(?:<tag[^>]*>\s*)*?<tag k="highway" v="traffic_signals"', raw)
    )
    assert len(signal_nodes) == 4
    assert set(G.graph["traffic_lights"]) == signal_nodes  # all four sit on junctions of drivable roads
    ways = {m.group(1) for m in re.finditer(r'<way id="(\d+)"', raw)}
    seg_ways = {sid.lstrip("-").split("#")[0] for sid in G.graph["segment_index"]}
    assert seg_ways <= ways
    assert_round_trip(G)
    bavaria = load_network(OSM_DIR / "planet_10.068,48.135_10.071,48.137.osm")
    assert all(10.0 < d["lon"] < 10.1 and 48.1 < d["lat"] < 48.2 for _, d in bavaria.nodes(data=True))


@pytest.mark.skipif(not (OSM_DIR / "test.osm.pbf").exists(), reason="OSM PBF extract not available")
def test_real_osm_pbf() -> None:
    G = load_network(OSM_DIR / "test.osm.pbf")
    assert G.number_of_edges() > 100
    assert all(26.9 < d["lon"] < 27.0 and 60.5 < d["lat"] < 60.55 for _, d in G.nodes(data=True))
    assert_round_trip(G)
