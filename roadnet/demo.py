"""A generated signalised grid city, in the style of the SUMO evaluation scenario (no files needed)."""

from __future__ import annotations

from typing import Any

import networkx as nx

from roadnet.graph import SCHEMA, index_segments, validate_graph
from roadnet.layout import (
    STOP_LINE_SETBACK_M,
    YELLOW_S,
    capacity_veh_h,
    default_signal_plan,
    lane_turns,
    segment_detectors,
)


def grid_city(
    rows: int = 4,
    cols: int = 4,
    spacing_m: float = 300.0,
    lanes: int = 2,
    speed_limit_kmh: float = 50.0,
    cycle_s: float = 90.0,
    name: str = "demo",
) -> nx.MultiDiGraph:
    """Generate a signalised grid road graph that passes :func:`roadnet.graph.validate_graph`.

    Interior nodes are traffic lights named ``<column letter><row>`` (``A0`` at the south-west corner,
    columns run east, rows north), spaced ``spacing_m`` apart. Every border intersection gets fringe
    (``dead_end``) nodes ``bottom<col>``, ``top<col>``, ``left<row>``, ``right<row>`` one spacing outside
    the grid, joined by stub edges. Edges run both ways, id ``<from><to>``, length ``spacing_m`` along a
    straight node-to-node polyline; lanes are ``<segment_id>_<index>``.

    Each light runs a fixed two-phase plan: N–S green, yellow 3 s, E–W green, yellow 3 s (the two greens
    share ``cycle_s - 6``). Detectors: a mid-link loop per lane ``loop_mid_<lane_id>`` (30 s), and on
    signalised approaches a stop-line loop per lane ``loop_stop_<lane_id>`` 5 m before the stop line (30 s)
    and a camera ``cam_<segment_id>`` covering the last 100 m (60 s). Capacity is
    ``lanes * 1800 * green ratio`` veh/h on signalised approaches (ratio rounded to 3 decimals, capacity
    to the vehicle, as in the SUMO scenario), ``lanes * 1800`` otherwise. Detectors, plan and capacity follow
    the rules every importer shares (:mod:`roadnet.layout`).

    Parameters
    ----------
    rows, cols : int
        Signalised intersections north–south and east–west (``cols`` <= 26).
    spacing_m : float
        Node spacing and segment length, metres (> 5).
    lanes : int
        Lanes per direction.
    speed_limit_kmh : float
        Speed limit on every lane, km/h.
    cycle_s : float
        Signal cycle length, seconds (> 6).
    name : str
        Network name (``G.graph["name"]``).

    Returns
    -------
    networkx.MultiDiGraph
        The road graph (deterministic for given arguments).

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    if not (1 <= cols <= 26 and rows >= 1 and lanes >= 1):
        raise ValueError(f"grid_city: need 1 <= cols <= 26, rows >= 1, lanes >= 1; got {rows=}, {cols=}, {lanes=}")
    if spacing_m <= STOP_LINE_SETBACK_M or speed_limit_kmh <= 0 or cycle_s <= 2 * YELLOW_S:
        raise ValueError(
            f"grid_city: need spacing_m > {STOP_LINE_SETBACK_M}, speed_limit_kmh > 0, "
            f"cycle_s > {2 * YELLOW_S}; got {spacing_m=}, {speed_limit_kmh=}, {cycle_s=}"
        )
    green_s = (cycle_s - 2 * YELLOW_S) / 2
    green_ratio = round(green_s / cycle_s, 3)
    G = nx.MultiDiGraph(schema=SCHEMA, name=name, crs="local-m", detectors={}, traffic_lights={})

    def inner(c: int, r: int) -> str:
        return f"{chr(ord('A') + c)}{r}"

    for c in range(cols):
        for r in range(rows):
            nid = inner(c, r)
            G.add_node(
                nid,
                x_m=(c + 1) * spacing_m,
                y_m=(r + 1) * spacing_m,
                kind="traffic_light",
                tls_id=nid,
                fringe=False,
            )
    links: list[tuple[str, str]] = []  # undirected node pairs
    for c in range(cols):
        for r in range(rows):
            if c + 1 < cols:
                links.append((inner(c, r), inner(c + 1, r)))
            if r + 1 < rows:
                links.append((inner(c, r), inner(c, r + 1)))
    fringe: list[tuple[str, float, float, str]] = []  # (fringe id, x, y, attached interior node)
    for c in range(cols):
        x = (c + 1) * spacing_m
        fringe.append((f"bottom{c}", x, 0.0, inner(c, 0)))
        fringe.append((f"top{c}", x, (rows + 1) * spacing_m, inner(c, rows - 1)))
    for r in range(rows):
        y = (r + 1) * spacing_m
        fringe.append((f"left{r}", 0.0, y, inner(0, r)))
        fringe.append((f"right{r}", (cols + 1) * spacing_m, y, inner(cols - 1, r)))
    for fid, x, y, attached in fringe:
        G.add_node(fid, x_m=x, y_m=y, kind="dead_end", tls_id=None, fringe=True)
        links.append((fid, attached))

    directed = sorted({(a, b) for a, b in links} | {(b, a) for a, b in links}, key=lambda uv: uv[0] + uv[1])
    free_flow_s = spacing_m / (speed_limit_kmh / 3.6)
    detectors: dict[str, dict[str, Any]] = G.graph["detectors"]
    for u, v in directed:
        sid = f"{u}{v}"
        tls_id = G.nodes[v]["tls_id"]
        signalised = tls_id is not None
        lane_ids = [f"{sid}_{i}" for i in range(lanes)]
        det_ids: list[str] = []
        for rec in segment_detectors(sid, spacing_m, lane_ids, tls_id, signalised):
            detectors[rec["detector_id"]] = rec
            det_ids.append(rec["detector_id"])
        capacity = capacity_veh_h(lanes, green_ratio if signalised else None)
        G.add_edge(
            u,
            v,
            key=sid,
            segment_id=sid,
            length_m=float(spacing_m),
            lanes=lanes,
            speed_limit_kmh=float(speed_limit_kmh),
            capacity_veh_h=capacity,
            signalised_end=signalised,
            free_flow_travel_time_s=free_flow_s,
            lane_detail=[
                {
                    "lane_id": lid,
                    "index": i,
                    "length_m": float(spacing_m),
                    "speed_limit_kmh": float(speed_limit_kmh),
                    "turns": lane_turns(lanes, i) if signalised else [],
                }
                for i, lid in enumerate(lane_ids)
            ],
            geometry_xy_m=[[G.nodes[n]["x_m"], G.nodes[n]["y_m"]] for n in (u, v)],
            detector_ids=det_ids,
        )

    index_segments(G)  # default_signal_plan looks approaches up by segment id
    for c in range(cols):
        for r in range(rows):
            nid = inner(c, r)
            G.graph["traffic_lights"][nid] = default_signal_plan(G, nid, nid, cycle_s=cycle_s)
    index_segments(G)
    validate_graph(G)
    return G
