"""Unit tests for the roadnet package: contract validation, traffic-net import/export, demo grid, routing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from roadnet import (
    RoadnetError,
    detectors_of,
    dump_trafficnet,
    fastest_path,
    grid_city,
    load_trafficnet,
    segment,
    segments,
    validate_graph,
)
from roadnet.graph import index_segments

REAL_NETWORK = Path(__file__).parents[2].parent / "shared/eval/sumo/scenario/network.json"


def tiny_net() -> dict[str, Any]:
    """W -WC (2 lanes, 279.2 m, 50 km/h)-> C (traffic light) -CE (1 lane, 139.6 m, 36 km/h)-> E."""
    return {
        "schema": "traffic-net/1.0",
        "name": "tiny",
        "crs": "local planar metres (x east, y north); no geo-reference",
        "generator": "hand-written",
        "nodes": [
            {"id": "W", "x": 0.0, "y": 0.0, "type": "dead_end", "tls_id": None, "fringe": True},
            {"id": "C", "x": 300.0, "y": 0.0, "type": "traffic_light", "tls_id": "C", "fringe": False},
            {"id": "E", "x": 450, "y": 0, "type": "dead_end", "tls_id": None, "fringe": True},
        ],
        "edges": [
            {
                "id": "WC",
                "from": "W",
                "to": "C",
                "length_m": 279.2,
                "lanes": 2,
                "speed_limit_kmh": 50.0,
                "capacity_veh_h": 1681,
                "signalised_end": True,
                "lane_detail": [
                    {
                        "id": "WC_0",
                        "index": 0,
                        "length_m": 279.2,
                        "speed_limit_kmh": 50.0,
                        "turns": ["r", "s"],
                    },
                    {
                        "id": "WC_1",
                        "index": 1,
                        "length_m": 279.2,
                        "speed_limit_kmh": 50.0,
                        "turns": ["l", "s"],
                    },
                ],
                "shape": [[10.4, -3.2], [289.6, -3.2]],
            },
            {
                "id": "CE",
                "from": "C",
                "to": "E",
                "length_m": 139.6,
                "lanes": 1,
                "speed_limit_kmh": 36.0,
                "capacity_veh_h": 1800,
                "signalised_end": False,
                "lane_detail": [{"id": "CE_0", "index": 0, "length_m": 139.6, "speed_limit_kmh": 36.0, "turns": []}],
                "shape": [[310.4, -1.6], [450.0, -1.6]],
            },
        ],
        "traffic_lights": [
            {
                "id": "C",
                "node": "C",
                "program_id": "0",
                "type": "static",
                "offset_s": 0.0,
                "cycle_s": 90.0,
                "phases": [
                    {
                        "index": 0,
                        "duration_s": 42.0,
                        "state": "GG",
                        "kind": "green",
                        "green_approaches": ["WC"],
                    },
                    {"index": 1, "duration_s": 3.0, "state": "yy", "kind": "yellow", "green_approaches": []},
                    {"index": 2, "duration_s": 45.0, "state": "rr", "kind": "red", "green_approaches": []},
                ],
                "approaches": [
                    {
                        "edge": "WC",
                        "lanes": ["WC_0", "WC_1"],
                        "links": [
                            {
                                "link_index": 0,
                                "from_lane": "WC_0",
                                "to_edge": "CE",
                                "to_lane": "CE_0",
                                "dir": "s",
                            }
                        ],
                        "green_phases": [0],
                        "fixed_green_ratio": 0.467,
                    }
                ],
            }
        ],
        "detectors": [
            {
                "id": "loop_mid_CE_0",
                "kind": "loop",
                "role": "mid_link",
                "segment_id": "CE",
                "lane": "CE_0",
                "lane_index": 0,
                "pos_m": 69.8,
                "dist_to_stop_line_m": 69.8,
                "tls_id": None,
                "interval_s": 30,
            },
            {
                "id": "loop_stop_WC_1",
                "kind": "loop",
                "role": "stop_line",
                "segment_id": "WC",
                "lane": "WC_1",
                "lane_index": 1,
                "pos_m": 274.2,
                "dist_to_stop_line_m": 5.0,
                "tls_id": "C",
                "interval_s": 30,
            },
            {
                "id": "cam_WC",
                "kind": "camera",
                "segment_id": "WC",
                "lanes": ["WC_0", "WC_1"],
                "e2_ids": ["e2_WC_0", "e2_WC_1"],
                "zone_m": 100.0,
                "tls_id": "C",
                "interval_s": 60,
            },
        ],
    }


def assert_same_graph(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> None:
    assert a.graph == b.graph
    assert dict(a.nodes(data=True)) == dict(b.nodes(data=True))
    assert {(u, v, k): d for u, v, k, d in a.edges(keys=True, data=True)} == {
        (u, v, k): d for u, v, k, d in b.edges(keys=True, data=True)
    }


# ---------------------------------------------------------------- traffic-net import


def test_load_tiny_exact_values() -> None:
    G = load_trafficnet(tiny_net())
    assert isinstance(G, nx.MultiDiGraph)
    assert G.graph["schema"] == "citybrain-roadnet/1"
    assert G.graph["name"] == "tiny"
    assert G.graph["crs"] == "local-m"
    assert G.graph["segment_index"] == {"WC": ("W", "C"), "CE": ("C", "E")}
    assert G.nodes["C"] == {"x_m": 300.0, "y_m": 0.0, "kind": "traffic_light", "tls_id": "C", "fringe": False}
    assert G.nodes["E"] == {"x_m": 450.0, "y_m": 0.0, "kind": "dead_end", "tls_id": None, "fringe": True}
    assert isinstance(G.nodes["E"]["x_m"], float)

    wc = G.edges["W", "C", "WC"]
    assert wc["free_flow_travel_time_s"] == pytest.approx(20.1024)  # 279.2 m / (50 / 3.6 m/s)
    assert wc == {
        "segment_id": "WC",
        "length_m": 279.2,
        "lanes": 2,
        "speed_limit_kmh": 50.0,
        "capacity_veh_h": 1681.0,
        "signalised_end": True,
        "free_flow_travel_time_s": wc["free_flow_travel_time_s"],
        "lane_detail": [
            {"lane_id": "WC_0", "index": 0, "length_m": 279.2, "speed_limit_kmh": 50.0, "turns": ["r", "s"]},
            {"lane_id": "WC_1", "index": 1, "length_m": 279.2, "speed_limit_kmh": 50.0, "turns": ["l", "s"]},
        ],
        "geometry_xy_m": [[10.4, -3.2], [289.6, -3.2]],
        "detector_ids": ["loop_stop_WC_1", "cam_WC"],
    }
    ce = G.edges["C", "E", "CE"]
    assert ce["free_flow_travel_time_s"] == pytest.approx(13.96)  # 139.6 m / (36 / 3.6 m/s)
    assert ce["capacity_veh_h"] == 1800.0
    assert ce["detector_ids"] == ["loop_mid_CE_0"]

    dets = G.graph["detectors"]
    assert dets["loop_stop_WC_1"] == {
        "detector_id": "loop_stop_WC_1",
        "kind": "loop",
        "segment_id": "WC",
        "interval_s": 30.0,
        "tls_id": "C",
        "pos_m": 274.2,
        "dist_to_stop_line_m": 5.0,
        "lane": "WC_1",
        "lane_index": 1,
        "role": "stop_line",
    }
    assert dets["loop_mid_CE_0"]["tls_id"] is None
    cam = dets["cam_WC"]
    assert cam["lanes"] == ["WC_0", "WC_1"]
    assert cam["zone_length_m"] == 100.0
    assert cam["e2_ids"] == ["e2_WC_0", "e2_WC_1"]
    assert cam["interval_s"] == 60.0
    assert cam["pos_m"] == pytest.approx(179.2)  # zone start: 279.2 - 100
    assert cam["dist_to_stop_line_m"] == pytest.approx(100.0)

    tls = G.graph["traffic_lights"]["C"]
    assert tls["tls_id"] == "C"
    assert tls["node"] == "C"
    assert tls["cycle_s"] == 90.0
    assert tls["offset_s"] == 0.0
    assert tls["program_id"] == "0"
    assert tls["phases"][0] == {
        "index": 0,
        "duration_s": 42.0,
        "kind": "green",
        "green_approaches": ["WC"],
        "state": "GG",
    }
    assert [p["kind"] for p in tls["phases"]] == ["green", "yellow", "red"]
    (appr,) = tls["approaches"]
    assert appr["segment_id"] == "WC"
    assert appr["lanes"] == ["WC_0", "WC_1"]
    assert appr["green_phases"] == [0]
    assert appr["fixed_green_ratio"] == 0.467
    assert appr["links"][0]["to_edge"] == "CE"


def test_load_geo_referenced_nodes_sets_wgs84_crs() -> None:
    net = tiny_net()
    for i, n in enumerate(net["nodes"]):
        n["lon"], n["lat"] = 4.0 + i * 0.001, 52.0
    G = load_trafficnet(net)
    assert G.graph["crs"] == "EPSG:4326"
    assert G.nodes["C"]["lon"] == pytest.approx(4.001)
    assert G.nodes["C"]["lat"] == 52.0


def test_load_from_path_uses_file_name(tmp_path: Path) -> None:
    net = tiny_net()
    del net["name"]
    path = tmp_path / "city.json"
    path.write_text(json.dumps(net))
    G = load_trafficnet(path)
    assert G.graph["name"] == "city"
    assert load_trafficnet(str(path)).number_of_edges() == 2


def test_helpers() -> None:
    G = load_trafficnet(tiny_net())
    assert segment(G, "WC")["length_m"] == 279.2
    assert [s["segment_id"] for s in segments(G)] == ["WC", "CE"]
    assert [d["detector_id"] for d in detectors_of(G, "WC")] == ["loop_stop_WC_1", "cam_WC"]
    with pytest.raises(KeyError, match="unknown segment_id 'nope'"):
        segment(G, "nope")
    with pytest.raises(KeyError, match="nope"):
        detectors_of(G, "nope")


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(net: dict[str, Any]) -> None:
        obj: Any = net
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(net: dict[str, Any]) -> None:
        obj: Any = net
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(["schema"], "traffic-net/2.0"), "traffic-net: not traffic-net/1.0 (schema='traffic-net/2.0')"),
        (_delete(["schema"]), "not traffic-net/1.0 (schema=None)"),
        (_delete(["edges"]), "top level: missing key 'edges'"),
        (_delete(["edges", 0, "length_m"]), "edge 'WC': missing key 'length_m'"),
        (_set(["edges", 0, "lanes"], "2"), "edge 'WC': lanes must be an integer, got '2'"),
        (_set(["edges", 0, "to"], "X"), "edge 'WC': node 'X' is not in nodes"),
        (_set(["edges", 1, "id"], "WC"), "edge 'WC': duplicate edge id"),
        (_set(["nodes", 0, "x"], "0"), "node 'W': x must be a number, got '0'"),
        (_set(["nodes", 2, "id"], "W"), "node 'W': duplicate node id"),
        (_delete(["edges", 0, "lane_detail", 1, "turns"]), "edge 'WC' lane 'WC_1': missing key 'turns'"),
        (_set(["detectors", 1, "id"], "loop_mid_CE_0"), "detector 'loop_mid_CE_0': duplicate detector id"),
        (_set(["detectors", 2, "segment_id"], "XX"), "detector 'cam_WC': segment_id 'XX' is not in edges"),
        (_set(["detectors", 2, "kind"], "radar"), "detector 'cam_WC': kind must be 'loop' or 'camera'"),
        (_delete(["detectors", 2, "zone_m"]), "detector 'cam_WC': missing key 'zone_m'"),
        (_delete(["traffic_lights", 0, "approaches", 0, "edge"]), "traffic light 'C' approach: missing key"),
        (_set(["edges", 0, "length_m"], -3), "edge 'WC': length_m must be > 0, got -3"),
    ],
)
def test_load_rejects_malformed(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    net = tiny_net()
    mutate(net)
    with pytest.raises(RoadnetError) as exc:
        load_trafficnet(net)
    assert message in str(exc.value)


def test_load_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(RoadnetError, match="cannot read traffic-net file"):
        load_trafficnet(tmp_path / "missing.json")
    bad = tmp_path / "network.json"
    bad.write_text("{not json")
    with pytest.raises(RoadnetError, match=r"network\.json: invalid JSON"):
        load_trafficnet(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(RoadnetError, match=r"network\.json: not traffic-net/1\.0"):
        load_trafficnet(bad)
    bad.write_text(json.dumps({"schema": "sumo-net"}))
    with pytest.raises(RoadnetError, match=r"network\.json: not traffic-net/1\.0 \(schema='sumo-net'\)"):
        load_trafficnet(bad)


# ---------------------------------------------------------------- validation


def _dup_segment(G: nx.MultiDiGraph) -> None:
    G.add_edge("E", "C", key="WC", **copy.deepcopy(G.edges["W", "C", "WC"]))
    index_segments(G)


def _drop_phases(G: nx.MultiDiGraph) -> None:
    G.graph["traffic_lights"]["C"]["phases"] = []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda G: G.graph.update(schema="x"), "graph: schema must be 'citybrain-roadnet/1', got 'x'"),
        (lambda G: G.nodes["W"].update(x_m="0"), "node 'W': x_m must be a number, got '0'"),
        (lambda G: G.nodes["W"].pop("y_m"), "node 'W': missing y_m"),
        (lambda G: G.nodes["C"].update(tls_id="Z"), "node 'C': tls_id 'Z' is not a known traffic light"),
        (lambda G: G.edges["W", "C", "WC"].update(length_m=-3), "edge 'WC': length_m must be > 0, got -3"),
        (lambda G: G.edges["W", "C", "WC"].update(lanes=0), "edge 'WC': lanes must be an int >= 1, got 0"),
        (lambda G: G.edges["W", "C", "WC"].update(lanes=True), "edge 'WC': lanes must be an int >= 1"),
        (lambda G: G.edges["W", "C", "WC"].pop("capacity_veh_h"), "edge 'WC': missing capacity_veh_h"),
        (
            lambda G: G.edges["W", "C", "WC"].update(speed_limit_kmh="50"),
            "edge 'WC': speed_limit_kmh must be",
        ),
        (
            lambda G: G.edges["W", "C", "WC"].update(signalised_end=1),
            "edge 'WC': signalised_end must be a bool",
        ),
        (
            lambda G: G.edges["W", "C", "WC"].update(segment_id="X"),
            "edge 'WC': segment_id must equal the edge key",
        ),
        (
            lambda G: G.edges["W", "C", "WC"].update(free_flow_travel_time_s=10.0),
            "edge 'WC': free_flow_travel_time_s must be length_m / (speed_limit_kmh / 3.6) = 20.102",
        ),
        (lambda G: G.edges["W", "C", "WC"].update(geometry_xy_m=[[0, 0]]), "edge 'WC': geometry_xy_m"),
        (_dup_segment, "edge 'WC': duplicate segment_id"),
        (
            lambda G: G.edges["W", "C", "WC"]["lane_detail"].pop(),
            "edge 'WC': lane_detail has 1 entries but lanes = 2",
        ),
        (lambda G: G.add_edge("E", "W", key="EW"), "graph: segment_index missing or stale"),
        (
            lambda G: G.graph["detectors"]["cam_WC"].update(segment_id="XX"),
            "detector 'cam_WC': segment_id 'XX' is not a segment of the graph",
        ),
        (
            lambda G: G.graph["detectors"]["loop_stop_WC_1"].update(lane="CE_0"),
            "detector 'loop_stop_WC_1': lane 'CE_0' is not a lane of segment 'WC'",
        ),
        (
            lambda G: G.graph["detectors"]["cam_WC"].update(lanes=["WC_0", "WC_9"]),
            "detector 'cam_WC': lanes ['WC_9'] are not lanes of segment 'WC'",
        ),
        (
            lambda G: G.graph["detectors"]["loop_mid_CE_0"].update(role="upstream"),
            "detector 'loop_mid_CE_0': role must be one of ('mid_link', 'stop_line'), got 'upstream'",
        ),
        (
            lambda G: G.graph["detectors"]["loop_mid_CE_0"].update(interval_s=0),
            "detector 'loop_mid_CE_0': interval_s must be > 0, got 0",
        ),
        (
            lambda G: G.graph["detectors"]["loop_mid_CE_0"].update(kind="radar"),
            "detector 'loop_mid_CE_0': kind must be one of ('loop', 'camera'), got 'radar'",
        ),
        (
            lambda G: G.edges["C", "E", "CE"]["detector_ids"].append("ghost"),
            "edge 'CE': detector_ids lists unknown detector 'ghost'",
        ),
        (
            lambda G: G.edges["C", "E", "CE"]["detector_ids"].clear(),
            "detector 'loop_mid_CE_0': missing from detector_ids of segment 'CE'",
        ),
        (
            lambda G: G.graph["traffic_lights"]["C"]["approaches"][0].update(segment_id="XX"),
            "traffic light 'C' approach 'XX': segment_id is not a segment of the graph",
        ),
        (
            lambda G: G.graph["traffic_lights"]["C"]["approaches"][0].update(segment_id="CE"),
            "traffic light 'C' approach 'CE': segment does not end at node 'C'",
        ),
        (_drop_phases, "traffic light 'C': phases must be a non-empty list"),
        (
            lambda G: G.graph["traffic_lights"]["C"]["phases"][1].update(duration_s=0),
            "traffic light 'C' phase 1: duration_s must be > 0, got 0",
        ),
        (
            lambda G: G.graph["traffic_lights"]["C"].update(cycle_s=91.0),
            "traffic light 'C': cycle_s 91.0 != sum of phase durations 90",
        ),
        (
            lambda G: G.graph["traffic_lights"]["C"]["phases"][0].update(green_approaches=["XX"]),
            "traffic light 'C' phase 0: green approach 'XX' is not a segment of the graph",
        ),
    ],
)
def test_validate_graph_failures(mutate: Callable[[nx.MultiDiGraph], None], message: str) -> None:
    G = load_trafficnet(tiny_net())
    mutate(G)
    with pytest.raises(RoadnetError) as exc:
        validate_graph(G)
    assert message in str(exc.value)


def test_validate_cycle_within_tolerance_and_problem_cap() -> None:
    G = load_trafficnet(tiny_net())
    G.graph["traffic_lights"]["C"]["cycle_s"] = 90.4  # within 0.5 s of 42 + 3 + 45
    validate_graph(G)
    for d in G.graph["detectors"].values():
        d["interval_s"] = -1
    for _, _, d in G.edges(data=True):
        d["length_m"] = 0
        d["capacity_veh_h"] = 0
        d["speed_limit_kmh"] = 0
    for _, d in G.nodes(data=True):
        d["x_m"] = None
    # 3 detectors x interval_s + 2 edges x (length, speed, capacity) + 3 nodes x x_m = 12 problems
    with pytest.raises(RoadnetError) as exc:
        validate_graph(G)
    msg = str(exc.value)
    assert msg.startswith("12 problems in road graph 'tiny':")
    assert msg.endswith("... and 2 more")


def test_validate_rejects_non_multidigraph() -> None:
    with pytest.raises(RoadnetError, match=r"must be a networkx\.MultiDiGraph"):
        validate_graph(nx.DiGraph())


# ---------------------------------------------------------------- export


def test_round_trip_tiny() -> None:
    G = load_trafficnet(tiny_net())
    doc = dump_trafficnet(G)
    assert doc["schema"] == "traffic-net/1.0"
    assert doc["generator"] == "hand-written"
    G2 = load_trafficnet(json.loads(json.dumps(doc)))
    assert_same_graph(G, G2)
    assert dump_trafficnet(G2) == doc


def test_dump_matches_source_fields() -> None:
    src = tiny_net()
    doc = dump_trafficnet(load_trafficnet(src))
    assert doc["edges"][0] == {**src["edges"][0], "capacity_veh_h": 1681.0}
    assert doc["traffic_lights"] == src["traffic_lights"]
    cam = next(d for d in doc["detectors"] if d["id"] == "cam_WC")
    assert cam["zone_m"] == 100.0
    assert "zone_length_m" not in cam


# ---------------------------------------------------------------- demo grid


def test_grid_city_counts_and_validity() -> None:
    G = grid_city()
    # 4x4: 16 signalised nodes + 4 sides x 4 fringe nodes = 32 nodes.
    # Edges: 2 directions x (4 rows x 3 horizontal + 4 columns x 3 vertical links) = 48 interior,
    #        + 16 fringe stubs x 2 directions = 32  -> 80.
    # Signalised approaches: 48 interior + 16 inbound stubs = 64.
    # Detectors: 80 edges x 2 lanes mid-link (160) + 64 x 2 stop-line (128) + 64 cameras = 352.
    assert G.number_of_nodes() == 32
    assert G.number_of_edges() == 80
    assert len(G.graph["traffic_lights"]) == 16
    dets = G.graph["detectors"]
    assert len(dets) == 352
    assert sum(d["kind"] == "camera" for d in dets.values()) == 64
    assert sum(d.get("role") == "stop_line" for d in dets.values()) == 128
    assert sum(bool(d["signalised_end"]) for d in segments(G)) == 64
    validate_graph(G)
    assert G.graph["name"] == "demo"
    assert G.graph["crs"] == "local-m"


def test_grid_city_attributes() -> None:
    G = grid_city()
    assert G.nodes["A0"] == {
        "x_m": 300.0,
        "y_m": 300.0,
        "kind": "traffic_light",
        "tls_id": "A0",
        "fringe": False,
    }
    assert G.nodes["bottom0"]["fringe"] is True
    assert G.nodes["top3"]["y_m"] == 1500.0
    a0a1 = segment(G, "A0A1")
    assert G.graph["segment_index"]["A0A1"] == ("A0", "A1")
    assert a0a1["length_m"] == 300.0
    assert a0a1["free_flow_travel_time_s"] == pytest.approx(21.6)  # 300 m / (50 / 3.6 m/s)
    assert a0a1["capacity_veh_h"] == 1681.0  # round(2 x 1800 x 0.467), green 42 s of 90 s
    assert [ln["lane_id"] for ln in a0a1["lane_detail"]] == ["A0A1_0", "A0A1_1"]
    assert segment(G, "A0bottom0")["capacity_veh_h"] == 3600.0  # 2 x 1800, unsignalised exit
    assert segment(G, "A0bottom0")["detector_ids"] == ["loop_mid_A0bottom0_0", "loop_mid_A0bottom0_1"]
    assert a0a1["detector_ids"] == [
        "loop_mid_A0A1_0",
        "loop_stop_A0A1_0",
        "loop_mid_A0A1_1",
        "loop_stop_A0A1_1",
        "cam_A0A1",
    ]
    stop = G.graph["detectors"]["loop_stop_A0A1_1"]
    assert (stop["pos_m"], stop["dist_to_stop_line_m"], stop["interval_s"], stop["tls_id"]) == (
        295.0,
        5.0,
        30.0,
        "A1",
    )
    cam = G.graph["detectors"]["cam_A0A1"]
    assert (cam["zone_length_m"], cam["interval_s"], cam["lanes"]) == (100.0, 60.0, ["A0A1_0", "A0A1_1"])
    tls = G.graph["traffic_lights"]["B1"]
    assert [(p["kind"], p["duration_s"]) for p in tls["phases"]] == [
        ("green", 42.0),
        ("yellow", 3.0),
        ("green", 42.0),
        ("yellow", 3.0),
    ]
    assert tls["phases"][0]["green_approaches"] == ["B0B1", "B2B1"]  # north-south
    assert tls["phases"][2]["green_approaches"] == ["A1B1", "C1B1"]  # east-west
    assert {a["segment_id"]: a["green_phases"] for a in tls["approaches"]} == {
        "A1B1": [2],
        "B0B1": [0],
        "B2B1": [0],
        "C1B1": [2],
    }


def test_grid_city_matches_sumo_scenario_size_and_is_deterministic() -> None:
    G = grid_city(rows=5, cols=5)
    # Same layout as the SUMO scenario: 45 nodes, 120 edges, 25 lights, 540 detectors.
    assert (G.number_of_nodes(), G.number_of_edges()) == (45, 120)
    assert (len(G.graph["traffic_lights"]), len(G.graph["detectors"])) == (25, 540)
    assert dump_trafficnet(G) == dump_trafficnet(grid_city(rows=5, cols=5))


def test_grid_city_options_and_round_trip() -> None:
    G = grid_city(rows=1, cols=2, spacing_m=200.0, lanes=1, speed_limit_kmh=36.0, cycle_s=60.0, name="small")
    # 2 lights + 6 fringe nodes; 1 interior link x 2 + 6 stubs x 2 = 14 edges.
    assert (G.number_of_nodes(), G.number_of_edges()) == (8, 14)
    assert segment(G, "A0B0")["capacity_veh_h"] == 810.0  # round(1 x 1800 x round(27 / 60, 3))
    assert segment(G, "A0B0")["lane_detail"][0]["turns"] == ["l", "r", "s"]
    doc = dump_trafficnet(G)
    G2 = load_trafficnet(json.loads(json.dumps(doc)))
    assert G2.graph.pop("source_meta") == {"crs": "local-m"}
    assert_same_graph(G, G2)


@pytest.mark.parametrize("kwargs", [{"rows": 0}, {"cols": 27}, {"lanes": 0}, {"spacing_m": 5.0}, {"cycle_s": 6.0}])
def test_grid_city_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="grid_city"):
        grid_city(**kwargs)


# ---------------------------------------------------------------- routing


def _hand_graph() -> nx.MultiDiGraph:
    G = nx.MultiDiGraph()
    for sid, u, v, t in [
        ("ab_slow", "a", "b", 30.0),
        ("ab_fast", "a", "b", 10.0),  # parallel, faster
        ("bd", "b", "d", 10.0),
        ("ac", "a", "c", 5.0),
        ("cd", "c", "d", 20.0),
    ]:
        G.add_edge(u, v, key=sid, free_flow_travel_time_s=t, length_m=t * 10)
    G.add_node("island")
    return G


def test_fastest_path_picks_best_parallel_edge() -> None:
    G = _hand_graph()
    assert fastest_path(G, "a", "d") == (["ab_fast", "bd"], 20.0)
    assert fastest_path(G, "a", "d", weight="length_m") == (["ab_fast", "bd"], 200.0)
    assert fastest_path(G, "a", "a") == ([], 0.0)
    with pytest.raises(nx.NetworkXNoPath):
        fastest_path(G, "a", "island")
    with pytest.raises(nx.NodeNotFound):
        fastest_path(G, "a", "nowhere")


def test_fastest_path_on_grid() -> None:
    G = grid_city()
    route, seconds = fastest_path(G, "left1", "right1")
    assert route == ["left1A1", "A1B1", "B1C1", "C1D1", "D1right1"]
    assert seconds == pytest.approx(5 * 21.6)


# ---------------------------------------------------------------- the SUMO scenario's network.json

real = pytest.mark.skipif(not REAL_NETWORK.exists(), reason=f"{REAL_NETWORK} not available")


@real
def test_real_network() -> None:
    G = load_trafficnet(REAL_NETWORK)
    assert G.number_of_nodes() == 45
    assert G.number_of_edges() == 120
    assert len(G.graph["detectors"]) == 540
    assert len(G.graph["traffic_lights"]) == 25
    assert G.graph["name"] == "network"
    b2c2 = segment(G, "B2C2")
    assert b2c2["length_m"] == 279.2
    assert b2c2["lanes"] == 2
    assert b2c2["free_flow_travel_time_s"] == pytest.approx(20.1024)
    assert [d["detector_id"] for d in detectors_of(G, "B2C2")] == [
        "loop_mid_B2C2_0",
        "loop_stop_B2C2_0",
        "loop_mid_B2C2_1",
        "loop_stop_B2C2_1",
        "cam_B2C2",
    ]
    route, seconds = fastest_path(G, "left2", "right2")
    assert route == ["left2A2", "A2B2", "B2C2", "C2D2", "D2E2", "E2right2"]
    assert seconds == pytest.approx((2 * 289.6 + 4 * 279.2) / (50 / 3.6))


@real
def test_real_network_round_trip() -> None:
    G = load_trafficnet(REAL_NETWORK)
    assert_same_graph(G, load_trafficnet(json.loads(json.dumps(dump_trafficnet(G)))))
