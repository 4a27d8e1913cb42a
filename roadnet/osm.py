"""Import OpenStreetMap XML (``.osm``, ``.osm.bz2``, ``.osm.gz``) into a contract road graph.

Rules (documented defaults where OSM is silent):

* **Ways kept**: ``highway`` in :data:`DRIVABLE` (motorway … residential, their ``*_link``, living_street,
  unclassified); service, track, footway, cycleway, path, steps, construction etc. are skipped, as are
  ``area=yes`` and ways closed to cars (``access``/``motor_vehicle``/``motorcar`` = ``no``/``private``
  unless ``motor_vehicle``/``motorcar`` allows them). Node references missing from the extract cut the way.
* **Splitting**: a way is cut at every node shared by two or more kept ways (or used twice by one), at its
  ends, and at mid-block traffic signals (below). Piece ``k`` (0-based, along the way) of way ``W`` gives
  segment ``W#k`` in the way's direction and ``-W#k`` against it (SUMO's netconvert naming).
* **Direction**: ``oneway=yes/true/1`` forward only, ``-1``/``reverse`` backward only, ``no`` both;
  ``junction=roundabout|circular`` and ``highway=motorway`` imply ``oneway=yes``; ``reversible`` and
  ``alternating`` are imported as two-way.
* **Lanes** (per direction): ``lanes:forward``/``lanes:backward``; else ``lanes`` (all of it on a one-way
  road; on a two-way road the forward direction gets ``ceil(lanes/2)``, the backward ``floor(lanes/2)``, at
  least 1); else :data:`DEFAULT_LANES` by class. ``turn:lanes[:forward|:backward]`` gives lane turns when its
  lane count matches (OSM lists lanes left to right; the contract's lane 0 is the rightmost).
* **Speed**: ``maxspeed[:forward|:backward]`` in km/h, or with ``mph``/``knots`` units; the first value of a
  list; zone values such as ``DE:urban`` (``:urban`` 50, ``:rural`` 90, ``:living_street`` 10,
  ``:zone30`` 30); anything else (``none``, ``signals``, ``walk``, …) falls back to
  :data:`DEFAULT_SPEED_KMH` by class.
* **Signals**: a ``highway=traffic_signals`` node on a kept way signalises the junction it is on; a signal
  node within :data:`SIGNAL_SNAP_M` metres (along the way) of a junction signalises that junction (mapping
  styles that put the signal on the stop line); one further from any junction becomes its own signalised
  node (a mid-block crossing). Each signalised node (light id = node id) gets the derived default two-phase
  plan (:func:`roadnet.layout.default_signal_plan`).
* **Geometry**: ``geometry_lonlat`` from the node coordinates; ``geometry_xy_m`` and node ``x_m``/``y_m``
  from a local equirectangular projection around the bounding-box centre of the used nodes (crs
  ``EPSG:4326``); ``length_m`` = haversine length of the way geometry. Nodes joined to at most one other node
  are the fringe (``dead_end``). Detectors: the default layout.

``.osm.pbf`` files are read by a small pure-Python decoder (:func:`parse_osm_pbf`: zlib/lzma/raw blobs, nodes,
dense nodes, ways) with the same rules; it decodes about a megabyte of PBF per few seconds, so it suits city
extracts, not countries.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import networkx as nx

from roadnet.geojson import COORD_DECIMALS, EARTH_RADIUS_M, LocalProjection
from roadnet.graph import SCHEMA, RoadnetError, index_segments
from roadnet.layout import CAPACITY_BASIS, FRINGE_KIND, default_signal_plan, finish_graph, is_fringe, lane_record

DRIVABLE = frozenset(
    {
        "motorway",
        "trunk",
        "primary",
        "secondary",
        "tertiary",
        "unclassified",
        "residential",
        "living_street",
        "motorway_link",
        "trunk_link",
        "primary_link",
        "secondary_link",
        "tertiary_link",
    }
)
DEFAULT_LANES = {"motorway": 2, "trunk": 2, "primary": 2}
"""Lanes per direction by ``highway`` class when untagged; every other class (and every ``*_link``): 1."""
DEFAULT_SPEED_KMH = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": 50.0,
    "primary_link": 50.0,
    "secondary": 50.0,
    "secondary_link": 50.0,
    "tertiary": 50.0,
    "tertiary_link": 50.0,
    "unclassified": 50.0,
    "residential": 30.0,
    "living_street": 10.0,
}
"""Speed limit by ``highway`` class when ``maxspeed`` is missing or not a number, km/h."""
SIGNAL_SNAP_M = 30.0
"""A traffic-signal node this close (along its way, metres) to a junction signalises that junction."""
MPH_KMH = 1.609344
KNOT_KMH = 1.852
_ZONE_SPEEDS = {"urban": 50.0, "rural": 90.0, "living_street": 10.0, "zone30": 30.0, "zone:30": 30.0}
_TURN_LETTERS = {
    "left": "l",
    "slight_left": "l",
    "sharp_left": "l",
    "through": "s",
    "right": "r",
    "slight_right": "r",
    "sharp_right": "r",
    "reverse": "t",
    "merge_to_left": "s",
    "merge_to_right": "s",
}
_CLOSED = {"no", "private"}
_OPEN = {"yes", "designated", "permissive", "destination", "customers", "delivery"}


@dataclass
class OsmData:
    """Parsed OSM primitives needed for roads: node coordinates, traffic-signal nodes, kept ways."""

    coords: dict[str, tuple[float, float]] = field(default_factory=dict)  # node id -> (lon, lat)
    signals: set[str] = field(default_factory=set)
    ways: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)  # (id, refs, tags)


def is_drivable(tags: Mapping[str, str]) -> bool:
    """Whether a way's tags make it a road for motor vehicles (see the module docstring)."""
    if tags.get("highway") not in DRIVABLE or tags.get("area") == "yes":
        return False
    mv = tags.get("motor_vehicle", tags.get("motorcar"))
    if mv in _CLOSED:
        return False
    return not (tags.get("access") in _CLOSED and mv not in _OPEN)


def parse_maxspeed(value: str | None) -> float | None:
    """A ``maxspeed`` value in km/h, or None when it is not a usable number.

    Parameters
    ----------
    value : str or None
        e.g. ``"50"``, ``"30 mph"``, ``"50;30"``, ``"DE:urban"``, ``"none"``.

    Returns
    -------
    float or None
        km/h (> 0), or None.
    """
    if not value:
        return None
    v = value.split(";")[0].strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(km/h|kmh|kph|mph|knots)?", v)
    if m:
        speed = float(m.group(1)) * {"mph": MPH_KMH, "knots": KNOT_KMH}.get(m.group(2) or "", 1.0)
        return round(speed, 1) if speed > 0 else None
    if ":" in v:
        return _ZONE_SPEEDS.get(v.split(":", 1)[1])
    return None


def _parse_lanes(value: str | None) -> int | None:
    if not value:
        return None
    m = re.match(r"\s*(\d+)", value.split(";")[0])
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def _open(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def parse_osm_xml(path: str | os.PathLike[str]) -> OsmData:
    """Stream-parse an OSM XML file (optionally bz2/gzip compressed), keeping what road import needs.

    Parameters
    ----------
    path : str or os.PathLike
        ``.osm``, ``.osm.bz2`` or ``.osm.gz``.

    Returns
    -------
    OsmData
        All node coordinates (degrees), the ``highway=traffic_signals`` nodes and the drivable ways.

    Raises
    ------
    RoadnetError
        If the file is unreadable, not XML / not OSM, or a node or way is malformed.
    """
    path = Path(path)
    label = path.name
    data = OsmData()
    try:
        with _open(path) as fh:
            root_seen = False
            for event, el in ET.iterparse(fh, events=("start", "end")):
                if event == "start":
                    if not root_seen:
                        root_seen = True
                        if el.tag != "osm":
                            raise RoadnetError(f"{label}: not OSM XML (root element <{el.tag}>, expected <osm>)")
                    continue
                if el.tag == "node":
                    nid = el.get("id")
                    try:
                        lat, lon = float(el.get("lat", "")), float(el.get("lon", ""))
                    except ValueError:
                        raise RoadnetError(f"{label}: node {nid!r}: needs numeric lat and lon") from None
                    if nid is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
                        raise RoadnetError(f"{label}: node {nid!r}: needs an id and lat/lon in range")
                    data.coords[nid] = (lon, lat)
                    for t in el.iter("tag"):
                        if t.get("k") == "highway" and t.get("v") == "traffic_signals":
                            data.signals.add(nid)
                    el.clear()
                elif el.tag == "way":
                    wid = el.get("id")
                    if wid is None:
                        raise RoadnetError(f"{label}: way without id")
                    tags = {t.get("k", ""): t.get("v", "") for t in el.iter("tag")}
                    if is_drivable(tags):
                        refs = []
                        for nd in el.iter("nd"):
                            ref = nd.get("ref")
                            if ref is None:
                                raise RoadnetError(f"{label}: way {wid!r}: <nd> without ref")
                            refs.append(ref)
                        data.ways.append((wid, refs, tags))
                    el.clear()
                elif el.tag == "relation":
                    el.clear()
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read OSM file: {exc.strerror or exc}") from exc
    except (ET.ParseError, EOFError) as exc:
        raise RoadnetError(f"{label}: invalid OSM XML: {exc}") from exc
    if not root_seen:
        raise RoadnetError(f"{label}: empty file")
    return data


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _runs(refs: list[str], coords: Mapping[str, Any]) -> Iterator[list[str]]:
    """Consecutive runs of a way's nodes that are present in the extract (>= 2 nodes each)."""
    run: list[str] = []
    for ref in refs:
        if ref in coords:
            if not run or run[-1] != ref:  # drop repeated consecutive refs
                run.append(ref)
        else:
            if len(run) >= 2:
                yield run
            run = []
    if len(run) >= 2:
        yield run


def _direction(tags: Mapping[str, str]) -> tuple[bool, bool]:
    """(forward, backward) travel allowed."""
    oneway = tags.get("oneway", "").lower()
    if oneway in ("yes", "true", "1"):
        return True, False
    if oneway in ("-1", "reverse"):
        return False, True
    if oneway in ("no", "false", "0", "reversible", "alternating"):
        return True, True
    if tags.get("junction") in ("roundabout", "circular") or tags.get("highway") == "motorway":
        return True, False
    return True, True


def _lanes(tags: Mapping[str, str], fwd: bool, bwd: bool) -> tuple[int, int]:
    """Lanes (forward, backward) of a way."""
    default = DEFAULT_LANES.get(tags.get("highway", ""), 1)
    total = _parse_lanes(tags.get("lanes"))
    lf, lb = _parse_lanes(tags.get("lanes:forward")), _parse_lanes(tags.get("lanes:backward"))
    if fwd and bwd:
        if lf is None and lb is None and total is not None:
            lf, lb = max(1, (total + 1) // 2), max(1, total // 2)
        elif total is not None and lf is not None and lb is None:
            lb = max(1, total - lf)
        elif total is not None and lb is not None and lf is None:
            lf = max(1, total - lb)
        return lf or default, lb or default
    one = total or (lf if fwd else lb) or default
    return (one, 0) if fwd else (0, one)


def _turns(tags: Mapping[str, str], key: str, lanes: int) -> list[list[str]]:
    """Per contract lane (0 = rightmost) the turn letters from ``turn:lanes``-style tags, else empty lists."""
    raw = tags.get(key)
    if not raw:
        return [[] for _ in range(lanes)]
    per_lane = raw.split("|")
    if len(per_lane) != lanes:
        return [[] for _ in range(lanes)]
    letters = [[_TURN_LETTERS[t] for t in lane.split(";") if t in _TURN_LETTERS] for lane in per_lane]
    return letters[::-1]


def _snap_signals(data: OsmData, runs: list[tuple[str, int, list[str]]], split: set[str]) -> tuple[set[str], set[str]]:
    """(signalised junction nodes, extra split nodes for mid-block signals)."""
    signalised: set[str] = set()
    extra: set[str] = set()
    for _, _, run in runs:
        for i, n in enumerate(run):
            if n not in data.signals:
                continue
            if n in split:
                signalised.add(n)
                continue
            best: tuple[float, str] | None = None
            for step in (-1, 1):
                dist, j = 0.0, i
                while 0 <= j + step < len(run):
                    dist += _haversine_m(data.coords[run[j]], data.coords[run[j + step]])
                    j += step
                    if dist > SIGNAL_SNAP_M:
                        break
                    if run[j] in split:
                        if best is None or dist < best[0]:
                            best = (dist, run[j])
                        break
            if best is not None:
                signalised.add(best[1])
            else:
                extra.add(n)
                signalised.add(n)
    return signalised, extra


def build_osm_graph(
    data: OsmData, *, name: str, label: str, detectors: bool = True, source_format: str = "osm-xml"
) -> nx.MultiDiGraph:
    """Turn parsed OSM primitives into a contract road graph (the rules in the module docstring).

    Parameters
    ----------
    data : OsmData
        Nodes (degrees), signal nodes and drivable ways.
    name : str
        Network name.
    label : str
        Source name for messages and metadata.
    detectors : bool
        Add the default detector layout.
    source_format : str
        ``"osm-xml"`` or ``"osm-pbf"``, recorded in ``source_meta``.

    Returns
    -------
    networkx.MultiDiGraph
        The validated road graph (crs ``EPSG:4326``; metres, km/h, veh/h, seconds).

    Raises
    ------
    RoadnetError
        If no drivable road remains, or the result breaks the contract.
    """
    runs = [(wid, k, run) for k, (wid, refs, _) in enumerate(data.ways) for run in _runs(refs, data.coords)]
    if not runs:
        raise RoadnetError(f"{label}: no drivable roads (highway={'/'.join(sorted(DRIVABLE))}) in the extract")
    use = Counter(n for _, _, run in runs for n in run)
    split = {n for n, c in use.items() if c >= 2} | {run[0] for *_, run in runs} | {run[-1] for *_, run in runs}
    signalised, extra = _snap_signals(data, runs, split)
    split |= extra

    G = nx.MultiDiGraph(schema=SCHEMA, name=name, crs="EPSG:4326")
    pieces: list[tuple[str, int, list[str], dict[str, str]]] = []
    piece_no: Counter[str] = Counter()
    for wid, k, run in runs:
        tags = data.ways[k][2]
        start = 0
        for i in range(1, len(run)):
            if run[i] in split:
                pieces.append((wid, piece_no[wid], run[start : i + 1], tags))
                piece_no[wid] += 1
                start = i
    ends = {p[2][0] for p in pieces} | {p[2][-1] for p in pieces}
    proj = LocalProjection.around([data.coords[n] for n in ends] + [data.coords[n] for p in pieces for n in p[2]])

    def xy(n: str) -> list[float]:
        x, y = proj.to_xy(*data.coords[n])
        return [round(x, 2), round(y, 2)]

    for n in sorted(ends, key=lambda s: (len(s), s)):
        lon, lat = data.coords[n]
        x, y = xy(n)
        sig = n in signalised
        G.add_node(
            n,
            x_m=x,
            y_m=y,
            lon=lon,
            lat=lat,
            kind="traffic_light" if sig else "priority",
            tls_id=n if sig else None,
            fringe=False,
        )
    for wid, k, nodes, tags in pieces:
        length = round(sum(_haversine_m(data.coords[a], data.coords[b]) for a, b in itertools.pairwise(nodes)), 2)
        if length <= 0:
            continue
        fwd, bwd = _direction(tags)
        lanes_f, lanes_b = _lanes(tags, fwd, bwd)
        default_speed = DEFAULT_SPEED_KMH.get(tags.get("highway", ""), 50.0)
        base_speed = parse_maxspeed(tags.get("maxspeed"))
        for forward, n_lanes in ((True, lanes_f), (False, lanes_b)):
            if n_lanes == 0:
                continue
            suffix = "forward" if forward else "backward"
            speed = parse_maxspeed(tags.get(f"maxspeed:{suffix}")) or base_speed or default_speed
            seq = nodes if forward else nodes[::-1]
            sid = f"{wid}#{k}" if forward else f"-{wid}#{k}"
            turn_key = f"turn:lanes:{suffix}" if (fwd and bwd) or f"turn:lanes:{suffix}" in tags else "turn:lanes"
            turns = _turns(tags, turn_key, n_lanes)
            G.add_edge(
                seq[0],
                seq[-1],
                key=sid,
                segment_id=sid,
                length_m=length,
                lanes=n_lanes,
                speed_limit_kmh=speed,
                lane_detail=[lane_record(f"{sid}_{i}", i, length, speed, turns[i]) for i in range(n_lanes)],
                geometry_xy_m=[xy(n) for n in seq],
                geometry_lonlat=[[round(c, COORD_DECIMALS) for c in data.coords[n]] for n in seq],
            )
    G.remove_nodes_from([n for n in list(G.nodes) if G.degree(n) == 0])
    index_segments(G)
    G.graph["traffic_lights"] = {}
    for n, d in G.nodes(data=True):
        if is_fringe(G, n):
            d["fringe"] = True
            if d["tls_id"] is None:
                d["kind"] = FRINGE_KIND
        if d["tls_id"] is not None:
            G.graph["traffic_lights"][n] = default_signal_plan(G, n, n)
    G.graph["detectors"] = {}
    G.graph["source_meta"] = {
        "generator": f"citybrain roadnet.osm from {label}",
        "source_format": source_format,
        "crs": "EPSG:4326",
        "capacity_basis": CAPACITY_BASIS,
        "signal_plans": "derived default two-phase plan at highway=traffic_signals junctions",
        "geo_reference": proj.meta(),
    }
    try:
        return finish_graph(G, detectors=detectors)
    except RoadnetError as exc:
        raise RoadnetError(f"{label}: {exc}") from None


# --------------------------------------------------------------------------------------------------- PBF
# A minimal pure-Python reader of the OSM PBF format (https://wiki.openstreetmap.org/wiki/PBF_Format): blobs
# (raw, zlib or lzma), string tables, nodes, dense nodes and ways; relations and metadata are skipped.

_PBF_FEATURES = {"OsmSchema-V0.6", "DenseNodes"}
_MAX_BLOB_BYTES = 64 * 1024 * 1024


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    val = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if b < 0x80:
            return val, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        wt = key & 7
        val: Any
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wt == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wt == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield key >> 3, wt, val


def _packed(val: Any, wt: int) -> list[int]:
    """A repeated varint field: packed bytes or one unpacked value."""
    if wt == 0:
        return [val]
    out: list[int] = []
    v = shift = 0
    for b in val:
        v |= (b & 0x7F) << shift
        if b < 0x80:
            out.append(v)
            v = shift = 0
        else:
            shift += 7
    return out


def _int64(n: int) -> int:
    """A protobuf int64 varint as a signed integer (two's complement)."""
    return n - (1 << 64) if n >= 1 << 63 else n


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _delta(values: list[int]) -> list[int]:
    return list(itertools.accumulate(_zigzag(v) for v in values))


def _pbf_blobs(fh: IO[bytes], label: str) -> Iterator[tuple[str, bytes]]:
    import lzma
    import zlib

    while True:
        head = fh.read(4)
        if not head:
            return
        if len(head) < 4:
            raise RoadnetError(f"{label}: truncated PBF blob header")
        size = int.from_bytes(head, "big")
        if size > _MAX_BLOB_BYTES:
            raise RoadnetError(f"{label}: not an OSM PBF file (blob header of {size} bytes)")
        header = fh.read(size)
        kind, datasize = "", 0
        for fn, _, val in _fields(header):
            if fn == 1:
                kind = bytes(val).decode("utf-8", "replace")
            elif fn == 3:
                datasize = val
        if datasize <= 0 or datasize > _MAX_BLOB_BYTES:
            raise RoadnetError(f"{label}: not an OSM PBF file (blob {kind!r} of {datasize} bytes)")
        blob = fh.read(datasize)
        if len(blob) < datasize:
            raise RoadnetError(f"{label}: truncated PBF blob {kind!r}")
        data: bytes | None = None
        for fn, _, val in _fields(blob):
            if fn == 1:
                data = bytes(val)
            elif fn == 3:
                data = zlib.decompress(val)
            elif fn == 4:
                data = lzma.decompress(val)
            elif fn in (5, 6, 7):
                raise RoadnetError(f"{label}: PBF blob compression (field {fn}: bzip2/lz4/zstd) is not supported")
        if data is None:
            raise RoadnetError(f"{label}: PBF blob {kind!r} has no data")
        yield kind, data


def _pbf_block(block: bytes, data: OsmData) -> None:
    strings: list[str] = []
    groups: list[bytes] = []
    gran, lat_off, lon_off = 100, 0, 0
    for fn, _, val in _fields(block):
        if fn == 1:
            strings = [bytes(v).decode("utf-8", "replace") for f, _, v in _fields(val) if f == 1]
        elif fn == 2:
            groups.append(val)
        elif fn == 17:
            gran = val
        elif fn == 19:
            lat_off = _int64(val)
        elif fn == 20:
            lon_off = _int64(val)
    sig_k = strings.index("highway") if "highway" in strings else -1
    sig_v = strings.index("traffic_signals") if "traffic_signals" in strings else -1

    def deg(off: int, v: int) -> float:
        return round(1e-9 * (off + gran * v), 9)  # nanodegrees; rounding drops float noise

    for group in groups:
        for fn, _, msg in _fields(group):
            if fn == 1:  # Node
                nid, lat, lon, keys, vals = 0, 0, 0, [], []
                for f, w, v in _fields(msg):
                    if f == 1:
                        nid = _zigzag(v)
                    elif f == 2:
                        keys = _packed(v, w)
                    elif f == 3:
                        vals = _packed(v, w)
                    elif f == 8:
                        lat = _zigzag(v)
                    elif f == 9:
                        lon = _zigzag(v)
                data.coords[str(nid)] = (deg(lon_off, lon), deg(lat_off, lat))
                if any(k == sig_k and v == sig_v for k, v in zip(keys, vals, strict=False)):
                    data.signals.add(str(nid))
            elif fn == 2:  # DenseNodes
                ids: list[int] = []
                lats: list[int] = []
                lons: list[int] = []
                kv: list[int] = []
                for f, w, v in _fields(msg):
                    if f == 1:
                        ids = _delta(_packed(v, w))
                    elif f == 8:
                        lats = _delta(_packed(v, w))
                    elif f == 9:
                        lons = _delta(_packed(v, w))
                    elif f == 10:
                        kv = _packed(v, w)
                for nid, lat, lon in zip(ids, lats, lons, strict=False):
                    data.coords[str(nid)] = (deg(lon_off, lon), deg(lat_off, lat))
                if kv and sig_k >= 0 and sig_v >= 0:
                    i = node = 0
                    while i < len(kv):
                        if kv[i] == 0:
                            node += 1
                            i += 1
                            continue
                        if kv[i] == sig_k and i + 1 < len(kv) and kv[i + 1] == sig_v and node < len(ids):
                            data.signals.add(str(ids[node]))
                        i += 2
            elif fn == 3:  # Way
                wid, keys, vals, refs = 0, [], [], []
                for f, w, v in _fields(msg):
                    if f == 1:
                        wid = _int64(v)
                    elif f == 2:
                        keys = _packed(v, w)
                    elif f == 3:
                        vals = _packed(v, w)
                    elif f == 8:
                        refs = _delta(_packed(v, w))
                tags = {strings[k]: strings[v] for k, v in zip(keys, vals, strict=False)}
                if is_drivable(tags):
                    data.ways.append((str(wid), [str(r) for r in refs], tags))


def parse_osm_pbf(path: str | os.PathLike[str]) -> OsmData:
    """Parse an OSM PBF file in pure Python, keeping what road import needs (as :func:`parse_osm_xml`).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.osm.pbf`` file (raw, zlib or lzma blobs; relations and metadata are skipped).

    Returns
    -------
    OsmData
        Node coordinates (degrees), ``highway=traffic_signals`` nodes and drivable ways.

    Raises
    ------
    RoadnetError
        If the file is unreadable, not PBF, truncated, uses an unsupported compression or required feature.
    """
    path = Path(path)
    label = path.name
    data = OsmData()
    seen_header = False
    try:
        with open(path, "rb") as fh:
            for kind, blob in _pbf_blobs(fh, label):
                if kind == "OSMHeader":
                    seen_header = True
                    required = {bytes(v).decode("utf-8", "replace") for f, _, v in _fields(blob) if f == 4}
                    missing = required - _PBF_FEATURES
                    if missing:
                        raise RoadnetError(f"{label}: PBF needs unsupported features {sorted(missing)}")
                elif kind == "OSMData":
                    if not seen_header:
                        raise RoadnetError(f"{label}: not an OSM PBF file (data before the OSMHeader blob)")
                    _pbf_block(blob, data)
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read OSM PBF file: {exc.strerror or exc}") from exc
    except (IndexError, ValueError, EOFError) as exc:  # truncated varints, bad wire types, bad compression
        raise RoadnetError(f"{label}: corrupt OSM PBF data: {exc}") from exc
    except Exception as exc:
        if exc.__class__.__name__ in ("error", "LZMAError"):  # zlib.error / lzma.LZMAError
            raise RoadnetError(f"{label}: corrupt OSM PBF blob: {exc}") from exc
        raise
    if not seen_header:
        raise RoadnetError(f"{label}: not an OSM PBF file (no OSMHeader blob)")
    return data


def osm_name(path: Path) -> str:
    """Default network name of an OSM file: its name without ``.osm[.bz2|.gz|.pbf]``."""
    name = path.name
    for ext in (".bz2", ".gz", ".pbf", ".xml", ".osm"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name or path.stem


def load_osm(path: str | os.PathLike[str], *, name: str | None = None, detectors: bool = True) -> nx.MultiDiGraph:
    """Load an OpenStreetMap extract as a contract road graph (see the module docstring for the rules).

    Parameters
    ----------
    path : str or os.PathLike
        ``.osm``/``.osm.xml``, optionally ``.bz2``/``.gz`` compressed, or ``.osm.pbf``.
    name : str, optional
        Network name; default the file name without its extensions.
    detectors : bool
        Add the default detector layout.

    Returns
    -------
    networkx.MultiDiGraph
        The validated road graph (crs ``EPSG:4326``; metres, km/h, veh/h, seconds).

    Raises
    ------
    RoadnetError
        If the file cannot be read or parsed, holds no drivable road, or an element is malformed.
    """
    path = Path(path)
    pbf = path.name.lower().endswith(".pbf")
    data = parse_osm_pbf(path) if pbf else parse_osm_xml(path)
    return build_osm_graph(
        data,
        name=name or osm_name(path),
        label=path.name,
        detectors=detectors,
        source_format="osm-pbf" if pbf else "osm-xml",
    )
