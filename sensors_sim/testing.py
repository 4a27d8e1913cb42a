"""Small hand-built road graphs for tests and examples (they pass ``roadnet.validate_graph``)."""

from __future__ import annotations

import networkx as nx

import roadnet
from roadnet.graph import SCHEMA, index_segments


def _segment(
    G: nx.MultiDiGraph,
    u: str,
    v: str,
    length: float,
    lanes: int,
    signalised: bool,
    *,
    speed_kmh: float = 50.0,
    loop_interval_s: int = 30,
) -> None:
    sid = f"{u}{v}"
    tls_id = v if signalised else None
    g_ratio = 0.45 if signalised else 1.0
    det_ids: list[str] = []
    lane_ids = [f"{sid}_{i}" for i in range(lanes)]
    for i, lid in enumerate(lane_ids):
        roles = [("mid_link", f"loop_mid_{lid}", length / 2)]
        if signalised:
            roles.append(("stop_line", f"loop_stop_{lid}", length - 5.0))
        for role, did, pos in roles:
            G.graph["detectors"][did] = {
                "detector_id": did,
                "kind": "loop",
                "segment_id": sid,
                "interval_s": loop_interval_s,
                "pos_m": pos,
                "dist_to_stop_line_m": length - pos,
                "tls_id": tls_id,
                "lane": lid,
                "lane_index": i,
                "role": role,
            }
            det_ids.append(did)
    if signalised:
        did = f"cam_{sid}"
        G.graph["detectors"][did] = {
            "detector_id": did,
            "kind": "camera",
            "segment_id": sid,
            "interval_s": 60,
            "pos_m": length - 100.0,
            "dist_to_stop_line_m": 100.0,
            "tls_id": tls_id,
            "lanes": lane_ids,
            "zone_length_m": 100.0,
        }
        det_ids.append(did)
    G.add_edge(
        u,
        v,
        key=sid,
        segment_id=sid,
        length_m=length,
        lanes=lanes,
        speed_limit_kmh=speed_kmh,
        capacity_veh_h=lanes * 1800.0 * g_ratio,
        signalised_end=signalised,
        free_flow_travel_time_s=length / (speed_kmh / 3.6),
        lane_detail=[
            {"lane_id": lid, "index": i, "length_m": length, "speed_limit_kmh": speed_kmh, "turns": ["s"]}
            for i, lid in enumerate(lane_ids)
        ],
        geometry_xy_m=[[G.nodes[n]["x_m"], G.nodes[n]["y_m"]] for n in (u, v)],
        detector_ids=det_ids,
    )


def tiny_graph() -> nx.MultiDiGraph:
    """W→X and N→X (2 lanes, 200 m, signalised at X), X→E (1 lane, 150 m, free): 9 loops, 2 cameras.

    Light ``X`` runs a 60 s cycle from offset 0: WX green [0, 27) s, yellow [27, 30), NX green [30, 57),
    yellow [57, 60). Loops report every 30 s, cameras every 60 s; W, N, E are fringe nodes.

    Returns
    -------
    networkx.MultiDiGraph
        The graph.
    """
    G = nx.MultiDiGraph(schema=SCHEMA, name="tiny", crs="local-m", detectors={}, traffic_lights={})
    for n, x, y, kind, tls in [
        ("W", 0.0, 200.0, "dead_end", None),
        ("N", 200.0, 400.0, "dead_end", None),
        ("X", 200.0, 200.0, "traffic_light", "X"),
        ("E", 350.0, 200.0, "dead_end", None),
    ]:
        G.add_node(n, x_m=x, y_m=y, kind=kind, tls_id=tls, fringe=tls is None)
    _segment(G, "W", "X", 200.0, 2, True)
    _segment(G, "N", "X", 200.0, 2, True)
    _segment(G, "X", "E", 150.0, 1, False)
    G.graph["traffic_lights"]["X"] = {
        "tls_id": "X",
        "node": "X",
        "cycle_s": 60.0,
        "offset_s": 0.0,
        "phases": [
            {"index": 0, "duration_s": 27.0, "kind": "green", "green_approaches": ["WX"]},
            {"index": 1, "duration_s": 3.0, "kind": "yellow", "green_approaches": []},
            {"index": 2, "duration_s": 27.0, "kind": "green", "green_approaches": ["NX"]},
            {"index": 3, "duration_s": 3.0, "kind": "yellow", "green_approaches": []},
        ],
        "approaches": [
            {"segment_id": sid, "lanes": [f"{sid}_0", f"{sid}_1"], "green_phases": [gp], "fixed_green_ratio": 0.45}
            for sid, gp in (("WX", 0), ("NX", 2))
        ],
    }
    index_segments(G)
    roadnet.validate_graph(G)
    return G


def corridor_graph(n_links: int = 3, length_m: float = 300.0, lanes: int = 2) -> nx.MultiDiGraph:
    """A one-way unsignalised corridor ``P0 → P1 → … → P<n>`` (fringe at both ends), loops only.

    Parameters
    ----------
    n_links : int
        Segments, ids ``P0P1``, ``P1P2``, …
    length_m : float
        Length of each, metres.
    lanes : int
        Lanes of each.

    Returns
    -------
    networkx.MultiDiGraph
        The graph.
    """
    G = nx.MultiDiGraph(schema=SCHEMA, name="corridor", crs="local-m", detectors={}, traffic_lights={})
    for k in range(n_links + 1):
        end = k in (0, n_links)
        G.add_node(f"P{k}", x_m=k * length_m, y_m=0.0, kind="dead_end" if end else "priority", tls_id=None, fringe=end)
    for k in range(n_links):
        _segment(G, f"P{k}", f"P{k + 1}", length_m, lanes, False)
    index_segments(G)
    roadnet.validate_graph(G)
    return G
