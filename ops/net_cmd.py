"""``citybrain net info`` / ``citybrain net export``: summarise and convert road-network files.

Both read any format :func:`roadnet.load_network` knows (traffic-net/1.0 JSON, CityFlow roadnet JSON, SUMO
``.net.xml``, CBEngine text, OpenStreetMap XML/PBF) and raise :class:`roadnet.RoadnetError` with the file and
element on bad input.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.geojson import graph_projection, to_geojson
from roadnet.graph import RoadnetError
from roadnet.io import FORMAT_NAMES, detect_format, load_network
from roadnet.trafficnet import dump_trafficnet, load_trafficnet


def _bbox(points: list[tuple[float, float]]) -> tuple[float, float, float, float] | None:
    if not points:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def summarize(G: nx.MultiDiGraph) -> dict[str, Any]:
    """Key figures of a road graph.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A contract road graph.

    Returns
    -------
    dict
        ``nodes``, ``fringe_nodes``, ``signalised_nodes``, ``segments``, ``signalised_segments``, ``lanes``,
        ``road_km`` and ``lane_km`` (km), ``traffic_lights``, ``phases``, ``detectors`` (by kind/role),
        ``speed_limits`` (km/h -> [segments, lane-km]), ``bbox_lonlat`` / ``bbox_xy_m``
        ((min x, min y, max x, max y) in degrees / metres; lon/lat None when not geo-referenced), ``crs``.
    """
    nodes = list(G.nodes(data=True))
    edges = list(G.edges(data=True))
    dets = G.graph.get("detectors", {})
    tls = G.graph.get("traffic_lights", {})
    det_kinds = Counter(d["kind"] if d["kind"] == "camera" else f"loop {d.get('role')}" for d in dets.values())
    speeds: dict[float, list[float]] = defaultdict(lambda: [0, 0.0])
    for _, _, d in edges:
        row = speeds[d["speed_limit_kmh"]]
        row[0] += 1
        row[1] += d["lanes"] * d["length_m"] / 1000
    lonlat = [(d["lon"], d["lat"]) for _, d in nodes if "lon" in d and "lat" in d]
    if not lonlat and graph_projection(G) is not None:
        proj = graph_projection(G)
        assert proj is not None
        lonlat = [proj.to_lonlat(d["x_m"], d["y_m"]) for _, d in nodes]
    return {
        "name": G.graph.get("name"),
        "crs": G.graph.get("crs"),
        "nodes": len(nodes),
        "fringe_nodes": sum(1 for _, d in nodes if d.get("fringe")),
        "signalised_nodes": sum(1 for _, d in nodes if d.get("tls_id") is not None),
        "segments": len(edges),
        "signalised_segments": sum(1 for _, _, d in edges if d.get("signalised_end")),
        "lanes": sum(d["lanes"] for _, _, d in edges),
        "road_km": sum(d["length_m"] for _, _, d in edges) / 1000,
        "lane_km": sum(d["lanes"] * d["length_m"] for _, _, d in edges) / 1000,
        "traffic_lights": len(tls),
        "phases": sum(len(t["phases"]) for t in tls.values()),
        "detectors": dict(sorted(det_kinds.items())),
        "detector_count": len(dets),
        "speed_limits": {k: (int(v[0]), v[1]) for k, v in sorted(speeds.items())},
        "bbox_lonlat": _bbox(lonlat),
        "bbox_xy_m": _bbox([(d["x_m"], d["y_m"]) for _, d in nodes]),
    }


def _format_summary(path: Path, fmt: str, G: nx.MultiDiGraph, s: dict[str, Any]) -> str:
    meta = G.graph.get("source_meta") or {}
    lines = [f"{path.name}: {FORMAT_NAMES.get(fmt, fmt)}, network {s['name']!r}"]

    def row(key: str, text: str) -> None:
        lines.append(f"  {key:<15}{text}".rstrip())

    geo = "nodes carry WGS84 lon/lat; x/y in local metres" if s["bbox_lonlat"] else "local metres, no geo-reference"
    ref = (meta.get("geo_reference") or {}).get("type")
    row("crs", f"{s['crs']} ({geo}{f', {ref} projection' if ref else ''})")
    row("nodes", f"{s['nodes']} (fringe {s['fringe_nodes']}, signalised {s['signalised_nodes']})")
    row("segments", f"{s['segments']} ({s['signalised_segments']} end at a traffic light)")
    row("lanes", f"{s['lanes']}")
    row("length", f"{s['road_km']:.2f} road-km, {s['lane_km']:.2f} lane-km")
    row("signals", f"{s['traffic_lights']} traffic lights, {s['phases']} phases")
    if meta.get("signal_plans"):
        row("signal plans", str(meta["signal_plans"]))
    det = ", ".join(f"{n} {k}" for k, n in s["detectors"].items()) or "none"
    row("detectors", f"{s['detector_count']} ({det})")
    row("speed limits", "")
    for speed, (n, lkm) in s["speed_limits"].items():
        lines.append(f"    {speed:>7g} km/h: {n:>6} segments, {lkm:9.2f} lane-km")
    if s["bbox_lonlat"]:
        w, so, e, n = s["bbox_lonlat"]
        row("bbox lon/lat", f"{w:.6f}, {so:.6f} .. {e:.6f}, {n:.6f} (W, S .. E, N)")
    if s["bbox_xy_m"]:
        x0, y0, x1, y1 = s["bbox_xy_m"]
        row("bbox x/y m", f"{x0:.1f}, {y0:.1f} .. {x1:.1f}, {y1:.1f} ({x1 - x0:.0f} m x {y1 - y0:.0f} m)")
    if meta.get("capacity_basis"):
        row("capacity", str(meta["capacity_basis"]))
    return "\n".join(lines)


def info(path: str | os.PathLike[str]) -> str:
    """Summarise a network file.

    Parameters
    ----------
    path : str or os.PathLike
        Any format :func:`roadnet.load_network` reads.

    Returns
    -------
    str
        Multi-line text: format and name; crs; counts of nodes (fringe, signalised), segments, lanes, traffic
        lights / phases and detectors (by kind); road-km and lane-km; a speed-limit histogram (km/h ->
        segments, lane-km); the bounding box in lon/lat (when geo-referenced) and in local metres; the
        capacity basis.

    Raises
    ------
    roadnet.RoadnetError
        If the file is missing, of unknown format or malformed.
    """
    path = Path(path)
    fmt = detect_format(path)
    G = load_network(path)
    return _format_summary(path, fmt, G, summarize(G))


def export(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    geojson_path: str | os.PathLike[str] | None = None,
    *,
    origin_lonlat: tuple[float, float] | None = None,
) -> str:
    """Convert a network file to traffic-net/1.0 JSON, and optionally GeoJSON.

    The traffic-net file is read back with :func:`roadnet.load_trafficnet` before returning, so what was
    written is known to load. The GeoJSON is built before anything is written: a network in local metres
    without geo-reference fails up front (GeoJSON is WGS84 only) unless ``origin_lonlat`` places it.

    Parameters
    ----------
    path : str or os.PathLike
        Source network (any format :func:`roadnet.load_network` reads).
    out : str or os.PathLike
        traffic-net/1.0 JSON to write.
    geojson_path : str or os.PathLike, optional
        GeoJSON (RFC 7946, lon/lat) to write too.
    origin_lonlat : (float, float), optional
        (lon, lat) in degrees of the local origin, for GeoJSON of a network without geo-reference.

    Returns
    -------
    str
        What was written (files, counts, sizes).

    Raises
    ------
    roadnet.RoadnetError
        If the source is bad, the network cannot be placed on the map for GeoJSON, or a file cannot be
        written.
    """
    path, out = Path(path), Path(out)
    G = load_network(path)
    geo = to_geojson(G, origin_lonlat=origin_lonlat) if geojson_path is not None else None
    doc = dump_trafficnet(G)
    try:
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise RoadnetError(f"{out}: cannot write traffic-net file: {exc.strerror or exc}") from exc
    back = load_trafficnet(out)
    lines = [
        f"wrote {out} (traffic-net/1.0, {out.stat().st_size / 1e6:.2f} MB): {back.number_of_nodes()} nodes, "
        f"{back.number_of_edges()} segments, {len(back.graph['traffic_lights'])} traffic lights, "
        f"{len(back.graph['detectors'])} detectors"
    ]
    if geo is not None and geojson_path is not None:
        gpath = Path(geojson_path)
        try:
            gpath.write_text(json.dumps(geo, separators=(",", ":")), encoding="utf-8")
        except OSError as exc:
            raise RoadnetError(f"{gpath}: cannot write GeoJSON: {exc.strerror or exc}") from exc
        kinds = Counter(f["geometry"]["type"] for f in geo["features"])
        lines.append(
            f"wrote {gpath} (GeoJSON, {gpath.stat().st_size / 1e6:.2f} MB): {kinds.get('LineString', 0)} segment "
            f"LineStrings, {kinds.get('Point', 0)} signal Points, bbox {geo.get('bbox')}"
        )
    return "\n".join(lines)
