"""Import/export of the neutral ``traffic-net/1.0`` network format (e.g. the SUMO scenario's network.json).

All ids (nodes, edges, lanes, detectors, traffic lights) come from the file; nothing is parsed out of names.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.graph import SCHEMA, RoadnetError, index_segments, validate_graph

TRAFFICNET_SCHEMA = "traffic-net/1.0"
_SECTIONS = ("schema", "name", "nodes", "edges", "traffic_lights", "detectors")


class _Reader:
    """Required-key and type access that turns bad input into a RoadnetError naming the element."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, where: str, msg: str) -> RoadnetError:
        return RoadnetError(f"{self.label}: {where}: {msg}")

    def get(self, rec: Any, key: str, where: str) -> Any:
        if not isinstance(rec, Mapping):
            raise self.error(where, f"must be an object, got {type(rec).__name__}")
        if key not in rec:
            raise self.error(where, f"missing key {key!r}")
        return rec[key]

    def num(self, rec: Any, key: str, where: str) -> float:
        val = self.get(rec, key, where)
        if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val):
            raise self.error(where, f"{key} must be a number, got {val!r}")
        return float(val)

    def integer(self, rec: Any, key: str, where: str) -> int:
        val = self.get(rec, key, where)
        if isinstance(val, bool) or not isinstance(val, int):
            raise self.error(where, f"{key} must be an integer, got {val!r}")
        return val

    def text(self, rec: Any, key: str, where: str) -> str:
        val = self.get(rec, key, where)
        if not isinstance(val, str):
            raise self.error(where, f"{key} must be a string, got {val!r}")
        return val

    def seq(self, rec: Any, key: str, where: str) -> list[Any]:
        val = self.get(rec, key, where)
        if not isinstance(val, list):
            raise self.error(where, f"{key} must be a list, got {type(val).__name__}")
        return val

    def opt_str(self, rec: Any, key: str, where: str) -> str | None:
        val = self.get(rec, key, where)
        if val is not None and not isinstance(val, str):
            raise self.error(where, f"{key} must be a string or null, got {val!r}")
        return val


def _read_source(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    """Return (document, label for messages, default network name)."""
    if isinstance(source, Mapping):
        return source, "traffic-net", "trafficnet"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read traffic-net file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RoadnetError(f"{path.name}: invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RoadnetError(f"{path.name}: not traffic-net/1.0 (top level is a {type(doc).__name__})")
    return doc, path.name, path.stem


def load_trafficnet(source: str | os.PathLike[str] | Mapping[str, Any]) -> nx.MultiDiGraph:
    """Load a ``traffic-net/1.0`` network into a contract road graph and validate it.

    Parameters
    ----------
    source : str, os.PathLike or Mapping
        Path of a traffic-net JSON file, or the already-parsed document. Positions and lengths are in
        metres, speeds in km/h, capacities in veh/h, durations and intervals in seconds.

    Returns
    -------
    networkx.MultiDiGraph
        The road graph (see ``docs/roadnet-contract.md``). Besides the contract attributes it keeps what
        the format carries beyond it, so :func:`dump_trafficnet` can write it back: ``G.graph["source_meta"]``
        (top-level keys such as ``generator``, ``crs``, ``capacity_basis``), traffic-light ``program_id`` /
        ``type``, phase ``state``, approach ``links`` and camera ``e2_ids``, when present.

    Raises
    ------
    RoadnetError
        If the file is missing or unreadable, is not JSON, is not ``traffic-net/1.0``, lacks a required
        key, or the resulting graph breaks the contract (see :func:`roadnet.graph.validate_graph`).
    """
    doc, label, default_name = _read_source(source)
    r = _Reader(label)
    if doc.get("schema") != TRAFFICNET_SCHEMA:
        raise RoadnetError(f"{label}: not {TRAFFICNET_SCHEMA} (schema={doc.get('schema')!r})")
    name = doc.get("name", default_name)
    if not isinstance(name, str):
        raise r.error("top level", f"name must be a string, got {name!r}")
    raw_nodes = r.seq(doc, "nodes", "top level")
    raw_edges = r.seq(doc, "edges", "top level")
    raw_tls = r.seq(doc, "traffic_lights", "top level")
    raw_dets = r.seq(doc, "detectors", "top level")

    geo = bool(raw_nodes) and all(isinstance(n, Mapping) and "lon" in n and "lat" in n for n in raw_nodes)
    G = nx.MultiDiGraph(
        schema=SCHEMA,
        name=name,
        crs="EPSG:4326" if geo else "local-m",
        source_meta={k: copy.deepcopy(v) for k, v in doc.items() if k not in _SECTIONS},
        detectors={},
        traffic_lights={},
    )
    for n in raw_nodes:
        nid = r.text(n, "id", "node")
        where = f"node {nid!r}"
        if nid in G:
            raise r.error(where, "duplicate node id")
        attrs: dict[str, Any] = {
            "x_m": r.num(n, "x", where),
            "y_m": r.num(n, "y", where),
            "kind": r.text(n, "type", where),
            "tls_id": r.opt_str(n, "tls_id", where),
            "fringe": r.get(n, "fringe", where),
        }
        if "lon" in n and "lat" in n:
            attrs["lon"] = r.num(n, "lon", where)
            attrs["lat"] = r.num(n, "lat", where)
        G.add_node(nid, **attrs)

    seen_edges: set[str] = set()
    for e in raw_edges:
        sid = r.text(e, "id", "edge")
        where = f"edge {sid!r}"
        u, v = r.text(e, "from", where), r.text(e, "to", where)
        for end in (u, v):
            if end not in G:
                raise r.error(where, f"node {end!r} is not in nodes")
        if sid in seen_edges:
            raise r.error(where, "duplicate edge id")
        seen_edges.add(sid)
        length = r.num(e, "length_m", where)
        speed = r.num(e, "speed_limit_kmh", where)
        lane_detail = []
        for ln in r.seq(e, "lane_detail", where):
            lid = r.text(ln, "id", f"{where} lane")
            lwhere = f"{where} lane {lid!r}"
            lane_detail.append(
                {
                    "lane_id": lid,
                    "index": r.integer(ln, "index", lwhere),
                    "length_m": r.num(ln, "length_m", lwhere),
                    "speed_limit_kmh": r.num(ln, "speed_limit_kmh", lwhere),
                    "turns": list(r.seq(ln, "turns", lwhere)),
                }
            )
        shape = r.seq(e, "shape", where)
        if not all(isinstance(p, list) and len(p) == 2 for p in shape):
            raise r.error(where, "shape must be a list of [x, y] points")
        G.add_edge(
            u,
            v,
            key=sid,
            segment_id=sid,
            length_m=length,
            lanes=r.integer(e, "lanes", where),
            speed_limit_kmh=speed,
            capacity_veh_h=r.num(e, "capacity_veh_h", where),
            signalised_end=r.get(e, "signalised_end", where),
            free_flow_travel_time_s=length / (speed / 3.6) if speed > 0 else float("inf"),
            lane_detail=lane_detail,
            geometry_xy_m=[[float(x), float(y)] for x, y in shape],
            detector_ids=[],
        )
    index = index_segments(G)

    for t in raw_tls:
        tid = r.text(t, "id", "traffic light")
        where = f"traffic light {tid!r}"
        if tid in G.graph["traffic_lights"]:
            raise r.error(where, "duplicate traffic light id")
        phases = []
        for i, ph in enumerate(r.seq(t, "phases", where)):
            pwhere = f"{where} phase {i}"
            phase = {
                "index": r.integer(ph, "index", pwhere),
                "duration_s": r.num(ph, "duration_s", pwhere),
                "kind": r.text(ph, "kind", pwhere),
                "green_approaches": list(r.seq(ph, "green_approaches", pwhere)),
            }
            if "state" in ph:
                phase["state"] = ph["state"]
            phases.append(phase)
        approaches = []
        for a in r.seq(t, "approaches", where):
            sid = r.text(a, "edge", f"{where} approach")
            awhere = f"{where} approach {sid!r}"
            approach = {
                "segment_id": sid,
                "lanes": list(r.seq(a, "lanes", awhere)),
                "green_phases": list(r.seq(a, "green_phases", awhere)),
                "fixed_green_ratio": r.num(a, "fixed_green_ratio", awhere),
            }
            if "links" in a:
                approach["links"] = copy.deepcopy(a["links"])
            approaches.append(approach)
        rec: dict[str, Any] = {
            "tls_id": tid,
            "node": r.text(t, "node", where),
            "cycle_s": r.num(t, "cycle_s", where),
            "offset_s": r.num(t, "offset_s", where),
            "phases": phases,
            "approaches": approaches,
        }
        for extra in ("program_id", "type"):
            if extra in t:
                rec[extra] = t[extra]
        G.graph["traffic_lights"][tid] = rec

    for d in raw_dets:
        did = r.text(d, "id", "detector")
        where = f"detector {did!r}"
        if did in G.graph["detectors"]:
            raise r.error(where, "duplicate detector id")
        kind = r.text(d, "kind", where)
        sid = r.text(d, "segment_id", where)
        if sid not in index:
            raise r.error(where, f"segment_id {sid!r} is not in edges")
        rec = {
            "detector_id": did,
            "kind": kind,
            "segment_id": sid,
            "interval_s": r.num(d, "interval_s", where),
            "tls_id": r.opt_str(d, "tls_id", where),
        }
        if kind == "camera":
            zone = r.num(d, "zone_m", where)
            seg_len = G.edges[index[sid][0], index[sid][1], sid]["length_m"]
            # traffic-net cameras cover the last zone_m metres before the stop line; pos_m = zone start
            pos = r.num(d, "pos_m", where) if "pos_m" in d else max(0.0, seg_len - zone)
            rec["pos_m"] = pos
            rec["dist_to_stop_line_m"] = (
                r.num(d, "dist_to_stop_line_m", where) if "dist_to_stop_line_m" in d else seg_len - pos
            )
            rec["lanes"] = list(r.seq(d, "lanes", where))
            rec["zone_length_m"] = zone
            if "e2_ids" in d:
                rec["e2_ids"] = list(d["e2_ids"])
        elif kind == "loop":
            rec["pos_m"] = r.num(d, "pos_m", where)
            rec["dist_to_stop_line_m"] = r.num(d, "dist_to_stop_line_m", where)
            rec["lane"] = r.text(d, "lane", where)
            rec["lane_index"] = r.integer(d, "lane_index", where)
            rec["role"] = r.text(d, "role", where)
        else:
            raise r.error(where, f"kind must be 'loop' or 'camera', got {kind!r}")
        G.graph["detectors"][did] = rec
        G.edges[index[sid][0], index[sid][1], sid]["detector_ids"].append(did)

    try:
        validate_graph(G)
    except RoadnetError as exc:
        raise RoadnetError(f"{label}: {exc}") from None
    return G


def dump_trafficnet(G: nx.MultiDiGraph) -> dict[str, Any]:
    """Export a road graph as a ``traffic-net/1.0`` document (the inverse of :func:`load_trafficnet`).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A contract road graph (metres, km/h, veh/h, seconds).

    Returns
    -------
    dict
        A JSON-serialisable traffic-net document; ``load_trafficnet(dump_trafficnet(G))`` reproduces every
        attribute the loader reads, including ``name`` (written as a top-level key).
    """
    meta = dict(G.graph.get("source_meta") or {})
    meta.setdefault("crs", G.graph["crs"])
    doc: dict[str, Any] = {"schema": TRAFFICNET_SCHEMA, "name": G.graph["name"], **copy.deepcopy(meta)}
    nodes = []
    for nid, d in G.nodes(data=True):
        node = {"id": nid, "x": d["x_m"], "y": d["y_m"], "type": d["kind"], "tls_id": d["tls_id"]}
        node["fringe"] = d["fringe"]
        if "lon" in d and "lat" in d:
            node["lon"], node["lat"] = d["lon"], d["lat"]
        nodes.append(node)
    edges = []
    for u, v, sid, d in G.edges(keys=True, data=True):
        edges.append(
            {
                "id": sid,
                "from": u,
                "to": v,
                "length_m": d["length_m"],
                "lanes": d["lanes"],
                "speed_limit_kmh": d["speed_limit_kmh"],
                "capacity_veh_h": d["capacity_veh_h"],
                "signalised_end": d["signalised_end"],
                "lane_detail": [
                    {
                        "id": ln["lane_id"],
                        "index": ln["index"],
                        "length_m": ln["length_m"],
                        "speed_limit_kmh": ln["speed_limit_kmh"],
                        "turns": list(ln["turns"]),
                    }
                    for ln in d["lane_detail"]
                ],
                "shape": [list(p) for p in d["geometry_xy_m"]],
            }
        )
    lights = []
    for tid, t in G.graph["traffic_lights"].items():
        light = {"id": tid, "node": t["node"]}
        light.update({k: t[k] for k in ("program_id", "type") if k in t})
        light.update({"offset_s": t["offset_s"], "cycle_s": t["cycle_s"]})
        light["phases"] = copy.deepcopy(t["phases"])
        light["approaches"] = [
            {"edge": a["segment_id"], **{k: copy.deepcopy(x) for k, x in a.items() if k != "segment_id"}}
            for a in t["approaches"]
        ]
        lights.append(light)
    dets = []
    for did, rec in G.graph["detectors"].items():
        det = {"id": did, **{k: copy.deepcopy(x) for k, x in rec.items() if k != "detector_id"}}
        if "zone_length_m" in det:
            det["zone_m"] = det.pop("zone_length_m")
        dets.append(det)
    doc.update(nodes=nodes, edges=edges, traffic_lights=lights, detectors=dets)
    return doc
