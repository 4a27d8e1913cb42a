"""The road-graph contract (``docs/roadnet-contract.md``): validation and lookup helpers.

Every importer returns a ``networkx.MultiDiGraph`` whose edges are directed road segments keyed by
``segment_id``. :func:`validate_graph` checks a graph against the contract; the helpers look up segments and
their detectors through ``G.graph["segment_index"]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypeGuard

import networkx as nx

SCHEMA = "citybrain-roadnet/1"
LOOP_ROLES = ("mid_link", "stop_line")
DETECTOR_KINDS = ("loop", "camera")
PHASE_KINDS = ("green", "yellow", "red")
CYCLE_TOLERANCE_S = 0.5
MAX_REPORTED_PROBLEMS = 10


class RoadnetError(ValueError):
    """A road graph or network file that breaks the contract; the message names the offending element."""


def _is_num(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_positive(problems: list[str], where: str, rec: dict[str, Any], key: str) -> bool:
    """Append a problem unless ``rec[key]`` is a finite number > 0; return whether it is."""
    if key not in rec:
        problems.append(f"{where}: missing {key}")
        return False
    val = rec[key]
    if not _is_num(val):
        problems.append(f"{where}: {key} must be a number, got {val!r}")
        return False
    if val <= 0:
        problems.append(f"{where}: {key} must be > 0, got {val!r}")
        return False
    return True


def _check_number(problems: list[str], where: str, rec: dict[str, Any], key: str) -> bool:
    if key not in rec:
        problems.append(f"{where}: missing {key}")
        return False
    if not _is_num(rec[key]):
        problems.append(f"{where}: {key} must be a number, got {rec[key]!r}")
        return False
    return True


def _check_nodes(G: nx.MultiDiGraph, tls: dict[str, Any], problems: list[str]) -> None:
    for n, d in G.nodes(data=True):
        where = f"node {n!r}"
        if not isinstance(n, str):
            problems.append(f"{where}: id must be a str")
        for key in ("x_m", "y_m"):
            _check_number(problems, where, d, key)
        for key in ("lon", "lat"):
            if key in d and not _is_num(d[key]):
                problems.append(f"{where}: {key} must be a number, got {d[key]!r}")
        if not isinstance(d.get("kind"), str):
            problems.append(f"{where}: kind must be a str, got {d.get('kind')!r}")
        if not isinstance(d.get("fringe"), bool):
            problems.append(f"{where}: fringe must be a bool, got {d.get('fringe')!r}")
        tls_id = d.get("tls_id", "<missing>")
        if tls_id is not None and tls_id not in tls:
            problems.append(f"{where}: tls_id {tls_id!r} is not a known traffic light")


def _check_edges(G: nx.MultiDiGraph, problems: list[str]) -> dict[str, set[str]]:
    """Check every edge; return segment_id -> its lane ids (for the detector and signal checks)."""
    lanes_of: dict[str, set[str]] = {}
    for u, v, k, d in G.edges(keys=True, data=True):
        where = f"edge {k!r}"
        if d.get("segment_id") != k:
            problems.append(f"{where}: segment_id must equal the edge key, got {d.get('segment_id')!r}")
        if k in lanes_of:
            problems.append(f"{where}: duplicate segment_id (also on another node pair, now {u!r}->{v!r})")
        lanes_of[k] = set()
        length_ok = _check_positive(problems, where, d, "length_m")
        speed_ok = _check_positive(problems, where, d, "speed_limit_kmh")
        _check_positive(problems, where, d, "capacity_veh_h")
        lanes = d.get("lanes")
        if not _is_int(lanes) or lanes < 1:
            problems.append(f"{where}: lanes must be an int >= 1, got {lanes!r}")
        if not isinstance(d.get("signalised_end"), bool):
            problems.append(f"{where}: signalised_end must be a bool, got {d.get('signalised_end')!r}")
        if _check_positive(problems, where, d, "free_flow_travel_time_s") and length_ok and speed_ok:
            expected = d["length_m"] / (d["speed_limit_kmh"] / 3.6)
            if not math.isclose(d["free_flow_travel_time_s"], expected, rel_tol=1e-6):
                problems.append(
                    f"{where}: free_flow_travel_time_s must be length_m / (speed_limit_kmh / 3.6) "
                    f"= {expected:.3f}, got {d['free_flow_travel_time_s']!r}"
                )
        geom = d.get("geometry_xy_m")
        if (
            not isinstance(geom, list)
            or len(geom) < 2
            or not all(isinstance(p, list | tuple) and len(p) == 2 and all(map(_is_num, p)) for p in geom)
        ):
            problems.append(f"{where}: geometry_xy_m must be a list of >= 2 [x, y] points")
        if not isinstance(d.get("detector_ids"), list):
            problems.append(f"{where}: detector_ids must be a list, got {d.get('detector_ids')!r}")
        detail = d.get("lane_detail")
        if not isinstance(detail, list):
            problems.append(f"{where}: lane_detail must be a list, got {detail!r}")
            continue
        if _is_int(lanes) and len(detail) != lanes:
            problems.append(f"{where}: lane_detail has {len(detail)} entries but lanes = {lanes}")
        for i, lane in enumerate(detail):
            lwhere = f"{where} lane {i}"
            if not isinstance(lane, dict) or not isinstance(lane.get("lane_id"), str):
                problems.append(f"{lwhere}: needs a str lane_id")
                continue
            lwhere = f"{where} lane {lane['lane_id']!r}"
            lanes_of[k].add(lane["lane_id"])
            if lane.get("index") != i:
                problems.append(f"{lwhere}: index must be {i}, got {lane.get('index')!r}")
            _check_positive(problems, lwhere, lane, "length_m")
            _check_positive(problems, lwhere, lane, "speed_limit_kmh")
            if not isinstance(lane.get("turns"), list):
                problems.append(f"{lwhere}: turns must be a list, got {lane.get('turns')!r}")
    return lanes_of


def _check_detectors(
    G: nx.MultiDiGraph,
    dets: dict[str, Any],
    tls: dict[str, Any],
    lanes_of: dict[str, set[str]],
    problems: list[str],
) -> None:
    for did, rec in dets.items():
        where = f"detector {did!r}"
        if not isinstance(rec, dict):
            problems.append(f"{where}: record must be a dict")
            continue
        if rec.get("detector_id") != did:
            problems.append(f"{where}: detector_id must equal its key, got {rec.get('detector_id')!r}")
        kind = rec.get("kind")
        if kind not in DETECTOR_KINDS:
            problems.append(f"{where}: kind must be one of {DETECTOR_KINDS}, got {kind!r}")
        sid = rec.get("segment_id")
        if sid not in lanes_of:
            problems.append(f"{where}: segment_id {sid!r} is not a segment of the graph")
        _check_positive(problems, where, rec, "interval_s")
        for key in ("pos_m", "dist_to_stop_line_m"):
            if _check_number(problems, where, rec, key) and rec[key] < 0:
                problems.append(f"{where}: {key} must be >= 0, got {rec[key]!r}")
        if rec.get("tls_id", "<missing>") is not None and rec.get("tls_id") not in tls:
            problems.append(f"{where}: tls_id {rec.get('tls_id', '<missing>')!r} is not a known traffic light")
        seg_lanes = lanes_of.get(sid, set()) if isinstance(sid, str) else set()
        if kind == "loop":
            if rec.get("role") not in LOOP_ROLES:
                problems.append(f"{where}: role must be one of {LOOP_ROLES}, got {rec.get('role')!r}")
            if sid in lanes_of and rec.get("lane") not in seg_lanes:
                problems.append(f"{where}: lane {rec.get('lane')!r} is not a lane of segment {sid!r}")
            if not _is_int(rec.get("lane_index")):
                problems.append(f"{where}: lane_index must be an int, got {rec.get('lane_index')!r}")
        elif kind == "camera":
            cam_lanes = rec.get("lanes")
            if not isinstance(cam_lanes, list) or not cam_lanes:
                problems.append(f"{where}: lanes must be a non-empty list of lane ids, got {cam_lanes!r}")
            elif sid in lanes_of and not set(cam_lanes) <= seg_lanes:
                bad = sorted(set(cam_lanes) - seg_lanes)
                problems.append(f"{where}: lanes {bad} are not lanes of segment {sid!r}")
            _check_positive(problems, where, rec, "zone_length_m")
        if sid in lanes_of:
            u, v = G.graph["segment_index"].get(sid, (None, None))
            if G.has_edge(u, v, sid) and did not in (G.edges[u, v, sid].get("detector_ids") or []):
                problems.append(f"{where}: missing from detector_ids of segment {sid!r}")
    for _, _, k, d in G.edges(keys=True, data=True):
        for did in d.get("detector_ids") or []:
            if did not in dets:
                problems.append(f"edge {k!r}: detector_ids lists unknown detector {did!r}")
            elif isinstance(dets[did], dict) and dets[did].get("segment_id") != k:
                problems.append(f"edge {k!r}: detector {did!r} belongs to {dets[did].get('segment_id')!r}")


def _check_traffic_lights(
    G: nx.MultiDiGraph, tls: dict[str, Any], lanes_of: dict[str, set[str]], problems: list[str]
) -> None:
    for tid, rec in tls.items():
        where = f"traffic light {tid!r}"
        if not isinstance(rec, dict):
            problems.append(f"{where}: record must be a dict")
            continue
        if rec.get("tls_id") != tid:
            problems.append(f"{where}: tls_id must equal its key, got {rec.get('tls_id')!r}")
        node = rec.get("node")
        if node not in G:
            problems.append(f"{where}: node {node!r} is not a node of the graph")
        cycle_ok = _check_positive(problems, where, rec, "cycle_s")
        _check_number(problems, where, rec, "offset_s")
        phases = rec.get("phases")
        if not isinstance(phases, list) or not phases:
            problems.append(f"{where}: phases must be a non-empty list")
            phases = []
        total = 0.0
        durations_ok = True
        for i, ph in enumerate(phases):
            pwhere = f"{where} phase {i}"
            if not isinstance(ph, dict):
                problems.append(f"{pwhere}: must be a dict")
                durations_ok = False
                continue
            if ph.get("index") != i:
                problems.append(f"{pwhere}: index must be {i}, got {ph.get('index')!r}")
            if _check_positive(problems, pwhere, ph, "duration_s"):
                total += ph["duration_s"]
            else:
                durations_ok = False
            if ph.get("kind") not in PHASE_KINDS:
                problems.append(f"{pwhere}: kind must be one of {PHASE_KINDS}, got {ph.get('kind')!r}")
            greens = ph.get("green_approaches")
            if not isinstance(greens, list):
                problems.append(f"{pwhere}: green_approaches must be a list, got {greens!r}")
            else:
                for sid in greens:
                    if sid not in lanes_of:
                        problems.append(f"{pwhere}: green approach {sid!r} is not a segment of the graph")
        if cycle_ok and durations_ok and phases and abs(total - rec["cycle_s"]) > CYCLE_TOLERANCE_S:
            problems.append(f"{where}: cycle_s {rec['cycle_s']!r} != sum of phase durations {total:g}")
        approaches = rec.get("approaches")
        if not isinstance(approaches, list):
            problems.append(f"{where}: approaches must be a list, got {approaches!r}")
            continue
        for a in approaches:
            sid = a.get("segment_id") if isinstance(a, dict) else None
            awhere = f"{where} approach {sid!r}"
            if not isinstance(a, dict) or sid not in lanes_of:
                problems.append(f"{awhere}: segment_id is not a segment of the graph")
                continue
            if G.graph["segment_index"].get(sid, (None, None))[1] != node:
                problems.append(f"{awhere}: segment does not end at node {node!r}")
            a_lanes = a.get("lanes")
            if not isinstance(a_lanes, list) or not set(a_lanes) <= lanes_of[sid]:
                problems.append(f"{awhere}: lanes {a_lanes!r} are not all lanes of the segment")
            gp = a.get("green_phases")
            if not isinstance(gp, list) or not all(_is_int(i) and 0 <= i < len(phases) for i in gp):
                problems.append(f"{awhere}: green_phases {gp!r} must index into phases")
            ratio = a.get("fixed_green_ratio")
            if not _is_num(ratio) or not 0 <= ratio <= 1:
                problems.append(f"{awhere}: fixed_green_ratio must be in [0, 1], got {ratio!r}")


def validate_graph(G: nx.MultiDiGraph) -> None:
    """Check a road graph against the contract in ``docs/roadnet-contract.md``.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        The road graph: nodes are intersections (positions in metres), edges are directed segments keyed
        by ``segment_id`` (lengths in m, speeds in km/h, capacities in veh/h, times in s).

    Raises
    ------
    RoadnetError
        If anything breaks the contract. The message lists up to ten problems, each naming the offending
        node, edge, detector or traffic light, e.g. ``edge 'A0A1': length_m must be > 0, got -3``.
    """
    if not isinstance(G, nx.MultiDiGraph):
        raise RoadnetError(f"graph: must be a networkx.MultiDiGraph, got {type(G).__name__}")
    problems: list[str] = []
    if G.graph.get("schema") != SCHEMA:
        problems.append(f"graph: schema must be {SCHEMA!r}, got {G.graph.get('schema')!r}")
    for key in ("name", "crs"):
        if not isinstance(G.graph.get(key), str):
            problems.append(f"graph: {key} must be a str, got {G.graph.get(key)!r}")
    dets = G.graph.get("detectors")
    if not isinstance(dets, dict):
        problems.append("graph: detectors must be a dict detector_id -> record")
        dets = {}
    tls = G.graph.get("traffic_lights")
    if not isinstance(tls, dict):
        problems.append("graph: traffic_lights must be a dict tls_id -> record")
        tls = {}
    index = G.graph.get("segment_index")
    expected_index = {k: (u, v) for u, v, k in G.edges(keys=True)}
    if index != expected_index:
        problems.append("graph: segment_index missing or stale (call roadnet.graph.index_segments(G))")
        G = G.copy()  # check the rest against a correct index, without touching the caller's graph
        G.graph["segment_index"] = expected_index
    _check_nodes(G, tls, problems)
    lanes_of = _check_edges(G, problems)
    _check_detectors(G, dets, tls, lanes_of, problems)
    _check_traffic_lights(G, tls, lanes_of, problems)
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        if len(problems) == 1:
            raise RoadnetError(problems[0])
        msg = f"{len(problems)} problems in road graph {G.graph.get('name')!r}:\n  " + "\n  ".join(shown)
        if more:
            msg += f"\n  ... and {more} more"
        raise RoadnetError(msg)


def index_segments(G: nx.MultiDiGraph) -> dict[str, tuple[str, str]]:
    """Build ``G.graph["segment_index"]``: segment_id -> (from node, to node), for O(1) lookup.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        The road graph; modified in place.

    Returns
    -------
    dict[str, tuple[str, str]]
        The index that was stored in ``G.graph["segment_index"]``.
    """
    index = {k: (u, v) for u, v, k in G.edges(keys=True)}
    G.graph["segment_index"] = index
    return index


def segment(G: nx.MultiDiGraph, segment_id: str) -> dict[str, Any]:
    """Return the attribute dict of one segment (live: edits change the graph).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A road graph with ``G.graph["segment_index"]``.
    segment_id : str
        The segment (edge key).

    Returns
    -------
    dict
        The edge attributes (``length_m`` in m, ``speed_limit_kmh`` in km/h, ``capacity_veh_h`` in veh/h,
        ``free_flow_travel_time_s`` in s, ...).

    Raises
    ------
    KeyError
        If the segment is unknown.
    """
    try:
        u, v = G.graph["segment_index"][segment_id]
        attrs: dict[str, Any] = G.edges[u, v, segment_id]
    except KeyError:
        raise KeyError(f"unknown segment_id {segment_id!r} in road graph {G.graph.get('name')!r}") from None
    return attrs


def segments(G: nx.MultiDiGraph) -> Iterator[dict[str, Any]]:
    """Iterate over the attribute dicts of all segments, in graph order.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A road graph.

    Yields
    ------
    dict
        One edge attribute dict per segment (see :func:`segment`).
    """
    for _, _, attrs in G.edges(data=True):
        yield attrs


def detectors_of(G: nx.MultiDiGraph, segment_id: str) -> list[dict[str, Any]]:
    """Return the detector records on one segment, in the order of its ``detector_ids``.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A road graph.
    segment_id : str
        The segment (edge key).

    Returns
    -------
    list[dict]
        Detector records from ``G.graph["detectors"]`` (positions in m, ``interval_s`` in s).

    Raises
    ------
    KeyError
        If the segment is unknown.
    """
    dets = G.graph["detectors"]
    return [dets[d] for d in segment(G, segment_id)["detector_ids"]]
