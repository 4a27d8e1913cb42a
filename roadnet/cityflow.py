"""Import a CityFlow ``roadnet.json`` into a contract road graph.

What is read:

* ``intersections`` → nodes at ``point`` (x, y; local metres). ``virtual`` intersections are the fringe
  (``kind`` ``dead_end``); a non-virtual one is a ``traffic_light`` (light id = intersection id) when some
  light phase has ``availableRoadLinks``, else ``priority``.
* ``roads`` → segments ``startIntersection → endIntersection`` with the road id. Their drivable length is the
  polyline length of ``points`` minus the ``width`` of each non-virtual end intersection (CityFlow starts and
  ends lanes at the intersection boundary; the lane-link shapes confirm it), and ``geometry_xy_m`` is that
  trimmed centre line. Lanes: ``maxSpeed`` m/s → km/h (0.1 km/h); turns from the ``roadLinks``
  (``go_straight``/``turn_left``/``turn_right`` → ``s``/``l``/``r``).
* ``trafficLight.lightphases`` → phases (``time`` → ``duration_s``): a phase with ``availableRoadLinks`` is
  ``green`` for the roads those links start from; one without is taken as ``yellow`` (CityFlow's
  inter-green). Cycle = sum of the phase times. Note that CityFlow plans are usually an *action set* for
  adaptive agents rather than a fixed cycle, so the green ratios are those of cycling through every phase.

Lane order: CityFlow's lane 0 is the innermost (leftmost) lane; the contract's lane 0 is the rightmost, so
contract index ``i`` is CityFlow lane ``n-1-i``. Lane ids keep CityFlow's own naming ``<road>_<cityflow
index>``, so they match the engine's lane ids. Detectors: the default layout (:mod:`roadnet.layout`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.graph import SCHEMA, RoadnetError, index_segments
from roadnet.layout import (
    CAPACITY_BASIS,
    FRINGE_KIND,
    cut_polyline,
    finish_graph,
    lane_record,
    polyline_length,
    tls_record,
)
from roadnet.trafficnet import _Reader as _TrafficNetReader

_TURN_OF = {"go_straight": "s", "turn_left": "l", "turn_right": "r"}


class _Reader(_TrafficNetReader):
    """The traffic-net reader, with CityFlow's ids (strings or integers) and points."""

    def text(self, rec: Any, key: str, where: str) -> str:
        val = self.get(rec, key, where)
        if not isinstance(val, str | int) or isinstance(val, bool):
            raise self.error(where, f"{key} must be a string, got {val!r}")
        return str(val)

    def point(self, rec: Any, where: str) -> list[float]:
        return [self.num(rec, "x", where), self.num(rec, "y", where)]


def is_cityflow(doc: Any) -> bool:
    """Whether a parsed JSON document looks like a CityFlow roadnet (``intersections`` and ``roads`` lists)."""
    return (
        isinstance(doc, Mapping) and isinstance(doc.get("intersections"), list) and isinstance(doc.get("roads"), list)
    )


def load_cityflow(
    source: str | os.PathLike[str] | Mapping[str, Any], *, name: str | None = None, detectors: bool = True
) -> nx.MultiDiGraph:
    """Load a CityFlow roadnet as a contract road graph (see the module docstring for the mapping).

    Parameters
    ----------
    source : str, os.PathLike or Mapping
        The ``roadnet.json`` file, or its parsed document (CityFlow units: metres, m/s, seconds).
    name : str, optional
        Network name; default the file stem, or the folder name for a file called ``roadnet.json``.
    detectors : bool
        Add the default detector layout.

    Returns
    -------
    networkx.MultiDiGraph
        The validated road graph (metres, km/h, veh/h, seconds; crs ``local-m``).

    Raises
    ------
    RoadnetError
        If the file cannot be read or parsed, or an intersection, road, road link or phase is malformed (the
        message names the file and the element).
    """
    if isinstance(source, Mapping):
        doc: Any = source
        label = "cityflow roadnet"
        default_name = "cityflow"
    else:
        path = Path(source)
        label = path.name
        default_name = path.parent.name if path.stem == "roadnet" and path.parent.name else path.stem
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RoadnetError(f"{path}: cannot read CityFlow roadnet: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise RoadnetError(f"{label}: invalid JSON: {exc}") from exc
    r = _Reader(label)
    if not is_cityflow(doc):
        raise RoadnetError(f"{label}: not a CityFlow roadnet (needs 'intersections' and 'roads' lists)")

    G = nx.MultiDiGraph(schema=SCHEMA, name=name or default_name, crs="local-m")
    inters: dict[str, Any] = {}
    for it in doc["intersections"]:
        iid = r.text(it, "id", "intersection")
        where = f"intersection {iid!r}"
        if iid in inters:
            raise r.error(where, "duplicate intersection id")
        inters[iid] = it
        x, y = r.point(r.get(it, "point", where), f"{where} point")
        virtual = bool(it.get("virtual", False))
        G.add_node(iid, x_m=x, y_m=y, kind=FRINGE_KIND if virtual else "priority", tls_id=None, fringe=virtual)

    def width(iid: str) -> float:
        it = inters[iid]
        if it.get("virtual", False):
            return 0.0
        w = it.get("width", 0.0)
        return float(w) if isinstance(w, int | float) and not isinstance(w, bool) and w > 0 else 0.0

    lane_ids: dict[str, list[str]] = {}  # road -> lane ids by CityFlow index
    roads: dict[str, dict[str, Any]] = {}
    for rd in doc["roads"]:
        rid = r.text(rd, "id", "road")
        where = f"road {rid!r}"
        if rid in roads:
            raise r.error(where, "duplicate road id")
        u, v = r.text(rd, "startIntersection", where), r.text(rd, "endIntersection", where)
        for end in (u, v):
            if end not in inters:
                raise r.error(where, f"intersection {end!r} is not in intersections")
        pts = [r.point(p, f"{where} point {i}") for i, p in enumerate(r.seq(rd, "points", where))]
        if len(pts) < 2:
            raise r.error(where, "points must hold at least 2 points")
        raw_lanes = r.seq(rd, "lanes", where)
        if not raw_lanes:
            raise r.error(where, "has no lanes")
        speeds = []
        for k, ln in enumerate(raw_lanes):
            sp = r.num(ln, "maxSpeed", f"{where} lane {k}")
            if sp <= 0:
                raise r.error(f"{where} lane {k}", f"maxSpeed must be > 0, got {sp}")
            speeds.append(sp)
        geom = cut_polyline(pts, width(u), width(v))
        length = round(polyline_length(geom), 2)
        if length <= 0:
            raise r.error(where, "has zero length")
        roads[rid] = {"u": u, "v": v, "geom": [[round(p[0], 2), round(p[1], 2)] for p in geom], "length": length}
        roads[rid]["speeds"] = speeds
        lane_ids[rid] = [f"{rid}_{k}" for k in range(len(raw_lanes))]

    # road links: turns per lane, approach links, phase greens
    turns: dict[str, set[str]] = defaultdict(set)
    links_of: dict[str, list[tuple[str, str, list[dict[str, Any]]]]] = {}  # intersection -> [(start, end, links)]
    for iid, it in inters.items():
        rows = []
        for j, rl in enumerate(it.get("roadLinks") or []):
            where = f"intersection {iid!r} roadLink {j}"
            start, end = r.text(rl, "startRoad", where), r.text(rl, "endRoad", where)
            for rid in (start, end):
                if rid not in roads:
                    raise r.error(where, f"road {rid!r} is not in roads")
            if roads[start]["v"] != iid or roads[end]["u"] != iid:
                raise r.error(where, f"road {start!r} must end and road {end!r} start at this intersection")
            letter = _TURN_OF.get(str(rl.get("type", "")), "")
            links = []
            for ll in rl.get("laneLinks") or []:
                lwhere = f"{where} laneLink"
                a, b = int(r.num(ll, "startLaneIndex", lwhere)), int(r.num(ll, "endLaneIndex", lwhere))
                if not (0 <= a < len(lane_ids[start]) and 0 <= b < len(lane_ids[end])):
                    raise r.error(lwhere, f"lane index {a}->{b} out of range")
                if letter:
                    turns[lane_ids[start][a]].add(letter)
                links.append(
                    {
                        "link_index": j,
                        "from_lane": lane_ids[start][a],
                        "to_edge": end,
                        "to_lane": lane_ids[end][b],
                        "dir": letter,
                    }
                )
            rows.append((start, end, links))
        links_of[iid] = rows

    for rid, rd in roads.items():
        n = len(rd["speeds"])
        G.add_edge(
            rd["u"],
            rd["v"],
            key=rid,
            segment_id=rid,
            length_m=rd["length"],
            lanes=n,
            speed_limit_kmh=round(max(rd["speeds"]) * 3.6, 1),
            lane_detail=[
                lane_record(
                    lane_ids[rid][n - 1 - i],
                    i,
                    rd["length"],
                    round(rd["speeds"][n - 1 - i] * 3.6, 1),
                    turns.get(lane_ids[rid][n - 1 - i], ()),
                )
                for i in range(n)
            ],
            geometry_xy_m=rd["geom"],
        )
    index_segments(G)

    lights: dict[str, dict[str, Any]] = {}
    for iid, it in inters.items():
        if it.get("virtual", False) or not isinstance(it.get("trafficLight"), Mapping):
            continue
        where = f"intersection {iid!r} trafficLight"
        rows = links_of[iid]
        phases = []
        for i, ph in enumerate(r.seq(it["trafficLight"], "lightphases", where)):
            pwhere = f"{where} phase {i}"
            dur = r.num(ph, "time", pwhere)
            if dur <= 0:
                raise r.error(pwhere, f"time must be > 0, got {dur}")
            greens: list[str] = []
            for j in r.seq(ph, "availableRoadLinks", pwhere):
                if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < len(rows):
                    raise r.error(pwhere, f"availableRoadLinks entry {j!r} is not a roadLinks index")
                if rows[j][0] not in greens:
                    greens.append(rows[j][0])
            phases.append(
                {"index": i, "duration_s": dur, "kind": "green" if greens else "yellow", "green_approaches": greens}
            )
        if not any(p["green_approaches"] for p in phases):
            continue
        approaches = sorted({start for start, _, _ in rows})
        extra: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for start, _, links in rows:
            extra[start].extend(links)
        lights[iid] = tls_record(
            G, iid, iid, phases, approaches, approach_extra={sid: {"links": lk} for sid, lk in extra.items()}
        )
        G.nodes[iid]["tls_id"] = iid
        G.nodes[iid]["kind"] = "traffic_light"
    G.graph["traffic_lights"] = lights
    G.graph["detectors"] = {}
    G.graph["source_meta"] = {
        "generator": f"citybrain roadnet.cityflow from {label}",
        "source_format": "cityflow",
        "crs": "local-m",
        "capacity_basis": CAPACITY_BASIS,
        "signal_plans": "source lightphases cycled in order (phases without availableRoadLinks taken as yellow)",
    }
    try:
        return finish_graph(G, detectors=detectors)
    except RoadnetError as exc:
        raise RoadnetError(f"{label}: {exc}") from None
