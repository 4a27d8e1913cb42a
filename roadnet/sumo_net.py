"""Import a SUMO network (``.net.xml``) into a contract road graph.

What is read:

* ``<edge>`` without a ``function`` (or ``function="normal"``) → a segment with the edge id; internal
  (``:``-prefixed), crossing, walking-area and connector edges are skipped. Only lanes that admit passenger
  cars are kept (``allow`` lists ``passenger`` or ``all``; else ``disallow`` does not); an edge without such a
  lane (footway, cycleway, rail, ...) is skipped. Kept lanes keep their SUMO ids and are renumbered 0.. from
  the right. ``length_m`` = mean kept-lane length; ``speed_limit_kmh`` = max kept-lane speed × 3.6 (rounded
  to 0.1 km/h); ``geometry_xy_m`` = the point-wise mean of the kept lane shapes (the carriageway centre of
  that direction, as in the SUMO scenario's network.json), else the middle lane's shape, else the edge shape,
  else the junction positions.
* ``<junction>`` (non-internal, ends of kept edges) → nodes at (x, y); ``kind`` = SUMO junction type;
  ``dead_end`` junctions and junctions joined to only one other node are ``fringe``.
* ``<connection>`` → lane turns (SUMO ``dir`` letters, ``L``/``R`` folded into ``l``/``r``), and, for
  traffic-light controlled ones (``tl``, ``linkIndex``), the approach ``links``.
* ``<tlLogic>`` (first program of each id) → the traffic light: phases with the source ``duration`` (the
  default duration of actuated programs), ``state``, ``kind`` = ``green`` if any kept vehicle link is green
  (``G g s o O``), ``yellow`` if any is yellow (``y Y u``), else ``red``; ``green_approaches`` = edges with a
  green link. Links of skipped edges (pedestrian crossings, bike lanes) are ignored; a light that controls no
  kept link is dropped. A light spanning several junctions becomes one record per junction,
  ``<tl>@<junction>``.
* ``<location>`` with ``projParameter`` ``+proj=utm +zone=N [+south]`` on WGS84 → node ``lon``/``lat`` and edge
  ``geometry_lonlat`` via the ``netOffset`` (crs ``EPSG:4326``); other projections stay ``local-m``.

Detectors: the default layout (:mod:`roadnet.layout`); ``.net.xml`` files carry none (SUMO detectors live in
additional files).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.geojson import COORD_DECIMALS, UTMProjection
from roadnet.graph import SCHEMA, RoadnetError, index_segments
from roadnet.layout import CAPACITY_BASIS, finish_graph, is_fringe, lane_record, tls_record

SKIPPED_FUNCTIONS = ("internal", "crossing", "walkingarea", "connector")
GREEN_STATES = frozenset("GgsoO")
YELLOW_STATES = frozenset("yYu")
_DIR_LETTERS = {"s": "s", "l": "l", "r": "r", "t": "t", "L": "l", "R": "r"}


def _allows_passenger(lane: ET.Element) -> bool:
    allow = lane.get("allow")
    if allow is not None:
        toks = set(allow.split())
        return "passenger" in toks or "all" in toks
    disallow = lane.get("disallow")
    if disallow is not None:
        toks = set(disallow.split())
        return not ("passenger" in toks or "all" in toks)
    return True


class _Sumo:
    """Attribute access that reports the file and element in a RoadnetError."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, where: str, msg: str) -> RoadnetError:
        return RoadnetError(f"{self.label}: {where}: {msg}")

    def attr(self, el: ET.Element, key: str, where: str) -> str:
        val = el.get(key)
        if val is None:
            raise self.error(where, f"missing attribute {key!r}")
        return val

    def num(self, el: ET.Element, key: str, where: str) -> float:
        raw = self.attr(el, key, where)
        try:
            val = float(raw)
        except ValueError:
            raise self.error(where, f"{key} must be a number, got {raw!r}") from None
        if val != val or val in (float("inf"), float("-inf")):
            raise self.error(where, f"{key} must be finite, got {raw!r}")
        return val

    def shape(self, raw: str, where: str) -> list[list[float]]:
        try:
            pts = [[float(c) for c in p.split(",")[:2]] for p in raw.split()]
        except ValueError:
            raise self.error(where, f"bad shape {raw[:60]!r}") from None
        if any(len(p) != 2 for p in pts):
            raise self.error(where, f"bad shape {raw[:60]!r}")
        return pts


def _projection(loc: ET.Element | None) -> UTMProjection | None:
    if loc is None:
        return None
    proj = loc.get("projParameter", "!")
    m = re.search(r"\+proj=utm\b.*?\+zone=(\d+)", proj)
    if not m or ("+ellps=WGS84" not in proj and "+datum=WGS84" not in proj):
        return None
    try:
        off_x, off_y = (float(c) for c in loc.get("netOffset", "0,0").split(","))
    except ValueError:
        return None
    return UTMProjection(int(m.group(1)), "+south" in proj, off_x, off_y)


def load_sumo_net(path: str | os.PathLike[str], *, name: str | None = None, detectors: bool = True) -> nx.MultiDiGraph:
    """Load a SUMO ``.net.xml`` network as a contract road graph (see the module docstring for the mapping).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.net.xml`` file (SUMO units: metres, m/s, seconds).
    name : str, optional
        Network name; default the file name without ``.net.xml``.
    detectors : bool
        Add the default detector layout.

    Returns
    -------
    networkx.MultiDiGraph
        The validated road graph (metres, km/h, veh/h, seconds).

    Raises
    ------
    RoadnetError
        If the file cannot be read, is not XML or not a SUMO network, or an element lacks or garbles a
        needed attribute (the message names the file and the element).
    """
    path = Path(path)
    label = path.name
    s = _Sumo(label)
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read SUMO network: {exc.strerror or exc}") from exc
    except ET.ParseError as exc:
        raise RoadnetError(f"{label}: invalid XML: {exc}") from exc
    if root.tag != "net":
        raise RoadnetError(f"{label}: not a SUMO network (root element <{root.tag}>, expected <net>)")
    if name is None:
        name = label[: -len(".net.xml")] if label.endswith(".net.xml") else path.stem
    proj = _projection(root.find("location"))

    junctions: dict[str, ET.Element] = {}
    for j in root.iter("junction"):
        jid = s.attr(j, "id", "junction")
        if j.get("type") != "internal" and not jid.startswith(":"):
            junctions[jid] = j

    # ---- edges and their vehicle lanes
    G = nx.MultiDiGraph(schema=SCHEMA, name=name, crs="EPSG:4326" if proj else "local-m")
    kept_lanes: dict[str, tuple[str, int]] = {}  # SUMO lane id -> (edge id, contract index)
    edge_rows: list[dict[str, Any]] = []
    for e in root.iter("edge"):
        eid = s.attr(e, "id", "edge")
        if e.get("function", "normal") in SKIPPED_FUNCTIONS or eid.startswith(":"):
            continue
        where = f"edge {eid!r}"
        u, v = s.attr(e, "from", where), s.attr(e, "to", where)
        for end in (u, v):
            if end not in junctions:
                raise s.error(where, f"junction {end!r} is not in the network")
        lanes = []
        for ln in e.iter("lane"):
            lid = s.attr(ln, "id", f"{where} lane")
            lwhere = f"lane {lid!r}"
            idx = int(s.num(ln, "index", lwhere))
            lanes.append((idx, ln, lid, lwhere))
        lanes.sort(key=lambda t: t[0])
        drivable = [t for t in lanes if _allows_passenger(t[1])]
        if not drivable:
            continue
        rows = []
        for i, (_, ln, lid, lwhere) in enumerate(drivable):
            length = s.num(ln, "length", lwhere)
            speed = s.num(ln, "speed", lwhere)
            if length <= 0 or speed <= 0:
                raise s.error(lwhere, f"length and speed must be > 0, got length={length}, speed={speed}")
            shape = s.shape(ln.get("shape", ""), lwhere) if ln.get("shape") else []
            rows.append((lid, i, length, speed, shape))
            kept_lanes[lid] = (eid, i)
        edge_rows.append({"id": eid, "from": u, "to": v, "lanes": rows, "el": e, "where": where})

    # ---- connections: turns per lane and traffic-light links
    turns: dict[str, set[str]] = defaultdict(set)
    tl_links: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for c in root.iter("connection"):
        frm = c.get("from", "")
        if frm.startswith(":"):
            continue
        where = f"connection {frm}->{c.get('to')}"
        from_lane = f"{frm}_{c.get('fromLane')}"
        to_lane = f"{c.get('to')}_{c.get('toLane')}"
        if from_lane not in kept_lanes:
            continue
        letter = _DIR_LETTERS.get(c.get("dir", ""))
        to_kept = to_lane in kept_lanes
        if letter and to_kept:
            turns[from_lane].add(letter)
        tl = c.get("tl")
        if tl is not None and to_kept:
            link_index = int(s.num(c, "linkIndex", where))
            tl_links[tl][link_index] = {
                "link_index": link_index,
                "from_lane": from_lane,
                "to_edge": kept_lanes[to_lane][0],
                "to_lane": to_lane,
                "dir": c.get("dir", ""),
            }

    # ---- nodes
    used = {r["from"] for r in edge_rows} | {r["to"] for r in edge_rows}
    for jid, j in junctions.items():
        if jid not in used:
            continue
        where = f"junction {jid!r}"
        x, y = s.num(j, "x", where), s.num(j, "y", where)
        attrs: dict[str, Any] = {
            "x_m": x,
            "y_m": y,
            "kind": j.get("type", "unknown"),
            "tls_id": None,
            "fringe": j.get("type") == "dead_end",
        }
        if proj:
            lon, lat = proj.to_lonlat(x, y)
            attrs["lon"], attrs["lat"] = round(lon, COORD_DECIMALS), round(lat, COORD_DECIMALS)
        G.add_node(jid, **attrs)

    for r in edge_rows:
        rows = r["lanes"]
        shapes = [row[4] for row in rows]
        if shapes and all(len(sh) == len(shapes[0]) >= 2 for sh in shapes):
            geom = [
                [
                    round(sum(sh[k][0] for sh in shapes) / len(shapes), 2),
                    round(sum(sh[k][1] for sh in shapes) / len(shapes), 2),
                ]
                for k in range(len(shapes[0]))
            ]
        elif len(shapes[len(shapes) // 2]) >= 2:
            geom = shapes[len(shapes) // 2]
        elif r["el"].get("shape"):
            geom = s.shape(r["el"].get("shape"), r["where"])
        else:
            geom = [[G.nodes[n]["x_m"], G.nodes[n]["y_m"]] for n in (r["from"], r["to"])]
        if len(geom) < 2:
            geom = [[G.nodes[n]["x_m"], G.nodes[n]["y_m"]] for n in (r["from"], r["to"])]
        attrs = {
            "segment_id": r["id"],
            "length_m": round(sum(row[2] for row in rows) / len(rows), 2),
            "lanes": len(rows),
            "speed_limit_kmh": round(max(row[3] for row in rows) * 3.6, 1),
            "lane_detail": [
                lane_record(lid, i, length, round(speed * 3.6, 1), turns.get(lid, ()))
                for lid, i, length, speed, _ in rows
            ],
            "geometry_xy_m": geom,
        }
        if proj:
            attrs["geometry_lonlat"] = [[round(c, COORD_DECIMALS) for c in proj.to_lonlat(p[0], p[1])] for p in geom]
        G.add_edge(r["from"], r["to"], key=r["id"], **attrs)
    index = index_segments(G)

    # ---- traffic lights
    lights: dict[str, dict[str, Any]] = {}
    seen_tl: set[str] = set()
    for t in root.iter("tlLogic"):
        tid = s.attr(t, "id", "tlLogic")
        where = f"tlLogic {tid!r}"
        if tid in seen_tl:
            continue  # further programs of the same light: the first one is the plan
        seen_tl.add(tid)
        links = tl_links.get(tid, {})
        if not links:
            continue
        raw_phases = []
        for i, ph in enumerate(t.iter("phase")):
            pwhere = f"{where} phase {i}"
            dur = s.num(ph, "duration", pwhere)
            state = s.attr(ph, "state", pwhere)
            if dur <= 0:
                raise s.error(pwhere, f"duration must be > 0, got {dur}")
            if max(links) >= len(state):
                raise s.error(pwhere, f"state {state!r} is shorter than linkIndex {max(links)}")
            raw_phases.append((dur, state))
        if not raw_phases:
            raise s.error(where, "has no phases")
        by_junction: dict[str, list[int]] = defaultdict(list)
        for li in sorted(links):
            by_junction[index[kept_lanes[links[li]["from_lane"]][0]][1]].append(li)
        for junction, idxs in by_junction.items():
            light_id = tid if len(by_junction) == 1 else f"{tid}@{junction}"
            approaches: list[str] = []
            approach_links: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for li in idxs:
                sid = kept_lanes[links[li]["from_lane"]][0]
                if sid not in approach_links:
                    approaches.append(sid)
                approach_links[sid].append(links[li])
            phases = []
            for i, (dur, state) in enumerate(raw_phases):
                greens: list[str] = []
                yellow = False
                for li in idxs:
                    ch = state[li]
                    sid = kept_lanes[links[li]["from_lane"]][0]
                    if ch in GREEN_STATES and sid not in greens:
                        greens.append(sid)
                    yellow = yellow or ch in YELLOW_STATES
                kind = "green" if greens else "yellow" if yellow else "red"
                phases.append({"index": i, "duration_s": dur, "kind": kind, "green_approaches": greens, "state": state})
            lights[light_id] = tls_record(
                G,
                junction,
                light_id,
                phases,
                approaches,
                offset_s=float(t.get("offset", "0") or 0),
                approach_extra={sid: {"links": lk} for sid, lk in approach_links.items()},
                extra={"program_id": t.get("programID", "0"), "type": t.get("type", "static")},
            )
            G.nodes[junction]["tls_id"] = light_id
    G.graph["traffic_lights"] = lights
    G.graph["detectors"] = {}
    for n in G.nodes:
        if is_fringe(G, n):
            G.nodes[n]["fringe"] = True
    meta: dict[str, Any] = {
        "generator": f"citybrain roadnet.sumo_net from {label}",
        "source_format": "sumo-net",
        "crs": G.graph["crs"],
        "capacity_basis": CAPACITY_BASIS,
        "signal_plans": "source tlLogic programs (first program per light; phase durations as given)",
    }
    if proj:
        meta["geo_reference"] = proj.meta()
    G.graph["source_meta"] = meta
    try:
        return finish_graph(G, detectors=detectors)
    except RoadnetError as exc:
        raise RoadnetError(f"{label}: {exc}") from None
