"""Import a CBEngine road network (KDD Cup 2021 City Brain Challenge text format, e.g. ``hangzhou.txt``).

The format (CityBrainChallenge/KDDCup2021-CityBrainChallenge ``docs/cbengine.rst``), whitespace-separated,
``//`` comments allowed, blank lines ignored:

1. ``N`` then ``N`` intersection lines ``latitude longitude inter_id signalized`` (degrees; 1 = has a light).
2. ``M`` then ``M`` road records of three lines each:
   ``from_inter_id to_inter_id length_m speed_limit_m_s dir1_num_lane dir2_num_lane dir1_id dir2_id``, then
   ``dir1_mov`` and ``dir2_mov``: three 0/1 flags (left, through, right) per lane, innermost lane first.
   Direction 1 runs from → to with id ``dir1_id``, direction 2 to → from with ``dir2_id``; a direction with 0
   lanes does not exist (its movement line is still present and ignored).
3. ``K`` then ``K`` signal lines ``inter_id road1 road2 road3 road4`` (``-1`` = no road).

Reading of this data set (checked on ``hangzhou.txt``): the four signal roads are roads *leaving* the
intersection (as in the format's own 1x1 example), and their order does not follow the documented
north/east/south/west sequence, so they are only checked for consistency. The file carries no signal timing
(CBEngine agents pick one of 8 phases online), so every signalised intersection (flag 1 or a signal line) gets
the derived default two-phase plan (:func:`roadnet.layout.default_signal_plan`).

Mapping: segments keep the road ids; lanes get CBEngine's lane ids ``road_id × 100 + lane`` (lane 0 = the
innermost, left-turn lane); the contract's lane 0 is the rightmost, so contract index ``i`` is CBEngine lane
``n-1-i``. Turns from the movement flags (``l``/``s``/``r``). Speeds m/s → km/h (0.1 km/h); lengths as given
(they follow the road, longer than the straight node-to-node geometry). Nodes get ``lon``/``lat`` and
``x_m``/``y_m`` from a local equirectangular projection around the bounding-box centre (crs ``EPSG:4326``);
nodes joined to at most one other node are the fringe. Detectors: the default layout.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.geojson import COORD_DECIMALS, LocalProjection
from roadnet.graph import SCHEMA, RoadnetError, index_segments
from roadnet.layout import CAPACITY_BASIS, FRINGE_KIND, default_signal_plan, finish_graph, is_fringe, lane_record


class _Lines:
    """Non-blank, comment-stripped lines with their 1-based line numbers; errors name file and line."""

    def __init__(self, text: str, label: str) -> None:
        self.label = label
        self.rows: list[tuple[int, list[str]]] = []
        for no, line in enumerate(text.splitlines(), 1):
            toks = line.split("//", 1)[0].split()
            if toks:
                self.rows.append((no, toks))
        self.pos = 0

    def error(self, where: str, msg: str, line: int | None = None) -> RoadnetError:
        at = f" (line {line})" if line is not None else ""
        return RoadnetError(f"{self.label}: {where}{at}: {msg}")

    def next(self, where: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.rows):
            raise self.error(where, "unexpected end of file")
        row = self.rows[self.pos]
        self.pos += 1
        return row

    def count(self, where: str) -> int:
        no, toks = self.next(where)
        if len(toks) != 1 or not toks[0].isdigit():
            raise self.error(where, f"expected a count, got {' '.join(toks)!r}", no)
        return int(toks[0])

    def number(self, tok: str, what: str, where: str, line: int) -> float:
        try:
            val = float(tok)
        except ValueError:
            raise self.error(where, f"{what} must be a number, got {tok!r}", line) from None
        if not math.isfinite(val):
            raise self.error(where, f"{what} must be finite, got {tok!r}", line)
        return val


def _lane_id(road: str, k: int) -> str:
    return str(int(road) * 100 + k) if road.lstrip("-").isdigit() else f"{road}_{k}"


def load_cbengine(path: str | os.PathLike[str], *, name: str | None = None, detectors: bool = True) -> nx.MultiDiGraph:
    """Load a CBEngine roadnet text file as a contract road graph (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The roadnet file (degrees, metres, m/s).
    name : str, optional
        Network name; default the file stem.
    detectors : bool
        Add the default detector layout.

    Returns
    -------
    networkx.MultiDiGraph
        The validated, geo-referenced road graph (crs ``EPSG:4326``; metres, km/h, veh/h, seconds).

    Raises
    ------
    RoadnetError
        If the file cannot be read or a count, intersection, road or signal record is malformed (the message
        names the file, the record and its line).
    """
    path = Path(path)
    label = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read CBEngine roadnet: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RoadnetError(f"{label}: not a CBEngine roadnet (not UTF-8 text: {exc.reason})") from exc
    src = _Lines(text, label)

    # ---- intersections
    inters: dict[str, tuple[float, float, bool]] = {}  # id -> (lon, lat, signalised)
    for i in range(src.count("intersection count")):
        no, toks = src.next(f"intersection {i}")
        where = f"intersection {toks[2] if len(toks) > 2 else i}"
        if len(toks) != 4:
            raise src.error(where, f"expected 'lat lon id signalized', got {' '.join(toks)!r}", no)
        lat = src.number(toks[0], "latitude", where, no)
        lon = src.number(toks[1], "longitude", where, no)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise src.error(where, f"lat/lon out of range: {lat}, {lon}", no)
        if toks[3] not in ("0", "1"):
            raise src.error(where, f"signalized must be 0 or 1, got {toks[3]!r}", no)
        if toks[2] in inters:
            raise src.error(where, "duplicate intersection id", no)
        inters[toks[2]] = (lon, lat, toks[3] == "1")

    # ---- roads
    edges: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in range(src.count("road count")):
        no, toks = src.next(f"road record {i}")
        where = f"road record {i}"
        if len(toks) != 8:
            raise src.error(
                where, f"expected 8 fields 'from to length speed lanes1 lanes2 id1 id2', got {len(toks)}", no
            )
        frm, to = toks[0], toks[1]
        where = f"road {toks[6]}/{toks[7]} ({frm}->{to})"
        for end in (frm, to):
            if end not in inters:
                raise src.error(where, f"intersection {end!r} is not in the intersection list", no)
        length = src.number(toks[2], "length", where, no)
        speed = src.number(toks[3], "speed_limit", where, no)
        if length <= 0 or speed <= 0:
            raise src.error(where, f"length and speed_limit must be > 0, got {length}, {speed}", no)
        n_lanes = []
        for tok in toks[4:6]:
            if not tok.isdigit():
                raise src.error(where, f"lane count must be a non-negative integer, got {tok!r}", no)
            n_lanes.append(int(tok))
        movs = [src.next(f"{where} dir1_mov"), src.next(f"{where} dir2_mov")]
        for d, (u, v, rid, n, (mno, mov)) in enumerate(
            [(frm, to, toks[6], n_lanes[0], movs[0]), (to, frm, toks[7], n_lanes[1], movs[1])], 1
        ):
            if n == 0:
                continue
            if rid in seen:
                raise src.error(f"road {rid}", "duplicate road id", no)
            seen.add(rid)
            if len(mov) != 3 * n or any(t not in ("0", "1") for t in mov):
                raise src.error(
                    f"road {rid} dir{d}_mov", f"expected {3 * n} flags 0/1 (3 per lane), got {' '.join(mov)!r}", mno
                )
            turns_by_k = [
                [t for t, flag in zip("lsr", mov[3 * k : 3 * k + 3], strict=True) if flag == "1"] for k in range(n)
            ]
            edges.append({"id": rid, "u": u, "v": v, "n": n, "length": length, "speed": speed, "turns": turns_by_k})

    # ---- signals
    sig_nodes: set[str] = set()
    by_id = {e["id"]: e for e in edges}
    n_sig = src.count("signal count") if src.pos < len(src.rows) else 0
    for i in range(n_sig):
        no, toks = src.next(f"signal record {i}")
        where = f"signal record {i}"
        if len(toks) != 5:
            raise src.error(where, f"expected 'inter_id road1 road2 road3 road4', got {' '.join(toks)!r}", no)
        iid = toks[0]
        where = f"signal of intersection {iid}"
        if iid not in inters:
            raise src.error(where, "intersection is not in the intersection list", no)
        for rid in toks[1:]:
            if rid == "-1":
                continue
            e = by_id.get(rid)
            if e is None:
                raise src.error(where, f"road {rid!r} is not in the road list", no)
            if iid not in (e["u"], e["v"]):
                raise src.error(where, f"road {rid!r} does not touch the intersection", no)
        sig_nodes.add(iid)
    if src.pos < len(src.rows):
        no, toks = src.rows[src.pos]
        raise src.error("end of file", f"unexpected extra data {' '.join(toks)[:40]!r}", no)

    # ---- graph
    proj = LocalProjection.around([(lon, lat) for lon, lat, _ in inters.values()])
    G = nx.MultiDiGraph(schema=SCHEMA, name=name or path.stem, crs="EPSG:4326")
    for iid, (lon, lat, flag) in inters.items():
        x, y = proj.to_xy(lon, lat)
        signalised = flag or iid in sig_nodes
        G.add_node(
            iid,
            x_m=round(x, 2),
            y_m=round(y, 2),
            lon=lon,
            lat=lat,
            kind="traffic_light" if signalised else "priority",
            tls_id=iid if signalised else None,
            fringe=False,
        )
    for e in edges:
        n, u, v = e["n"], e["u"], e["v"]
        speed_kmh = round(e["speed"] * 3.6, 1)
        G.add_edge(
            u,
            v,
            key=e["id"],
            segment_id=e["id"],
            length_m=e["length"],
            lanes=n,
            speed_limit_kmh=speed_kmh,
            lane_detail=[
                lane_record(_lane_id(e["id"], n - 1 - i), i, e["length"], speed_kmh, e["turns"][n - 1 - i])
                for i in range(n)
            ],
            geometry_xy_m=[[G.nodes[p]["x_m"], G.nodes[p]["y_m"]] for p in (u, v)],
            geometry_lonlat=[
                [round(G.nodes[p]["lon"], COORD_DECIMALS), round(G.nodes[p]["lat"], COORD_DECIMALS)] for p in (u, v)
            ],
        )
    index_segments(G)
    G.graph["traffic_lights"] = {}
    for n, d in G.nodes(data=True):
        if is_fringe(G, n):
            d["fringe"] = True
            if d["tls_id"] is None:
                d["kind"] = FRINGE_KIND
        if d["tls_id"] is not None:
            G.graph["traffic_lights"][d["tls_id"]] = default_signal_plan(G, n, d["tls_id"])
    G.graph["detectors"] = {}
    G.graph["source_meta"] = {
        "generator": f"citybrain roadnet.cbengine from {label}",
        "source_format": "cbengine",
        "crs": "EPSG:4326",
        "capacity_basis": CAPACITY_BASIS,
        "signal_plans": "derived default two-phase plan (CBEngine files carry no timing)",
        "geo_reference": proj.meta(),
    }
    try:
        return finish_graph(G, detectors=detectors)
    except RoadnetError as exc:
        raise RoadnetError(f"{label}: {exc}") from None
