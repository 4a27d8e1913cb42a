"""Geo-referencing (local metres ↔ WGS84 lon/lat) and GeoJSON export of road graphs.

Importers of geo-referenced sources record how their local metres relate to WGS84 in
``G.graph["source_meta"]["geo_reference"]`` (which :func:`roadnet.dump_trafficnet` writes and
:func:`roadnet.load_trafficnet` reads back), so a graph can be mapped even after a traffic-net round trip:

* ``{"type": "equirectangular", "lon0", "lat0", "radius_m"}``: ``x = R·cos(lat0)·Δlon``, ``y = R·Δlat``
  (radians) around (lon0, lat0) — OSM and CBEngine imports, centred on the network's bounding box; error
  below 0.1 % over a city.
* ``{"type": "utm", "zone", "south", "x_offset_m", "y_offset_m"}``: SUMO's ``netOffset``: UTM easting =
  ``x - x_offset_m``, northing = ``y - y_offset_m`` on the WGS84 ellipsoid (Krüger series, sub-millimetre).

GeoJSON (RFC 7946) must be WGS84 lon/lat. A network in local metres only (``crs == "local-m"``, no
geo-reference) is refused unless the caller places it explicitly with ``origin_lonlat``: the lon/lat of the
local origin (x = 0, y = 0), using the equirectangular projection above. No other CRS is written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from roadnet.graph import RoadnetError

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG), metres — the sphere of the local equirectangular projection."""
COORD_DECIMALS = 7
"""Decimals of written lon/lat (1e-7° ≈ 1.1 cm)."""

# WGS84 ellipsoid and the UTM constants for the Krüger series (Karney 2011, to third order in n).
_WGS84_A = 6378137.0
_WGS84_F = 1 / 298.257223563
_UTM_K0 = 0.9996
_UTM_E0 = 500000.0
_UTM_N0_SOUTH = 10000000.0
_N = _WGS84_F / (2 - _WGS84_F)
_A = _WGS84_A / (1 + _N) * (1 + _N**2 / 4 + _N**4 / 64)
_ALPHA = (_N / 2 - 2 / 3 * _N**2 + 5 / 16 * _N**3, 13 / 48 * _N**2 - 3 / 5 * _N**3, 61 / 240 * _N**3)
_BETA = (_N / 2 - 2 / 3 * _N**2 + 37 / 96 * _N**3, 1 / 48 * _N**2 + 1 / 15 * _N**3, 17 / 480 * _N**3)
_DELTA = (2 * _N - 2 / 3 * _N**2 - 2 * _N**3, 7 / 3 * _N**2 - 8 / 5 * _N**3, 56 / 15 * _N**3)


class Projection(Protocol):
    """Local planar metres (x east, y north) ↔ WGS84 degrees."""

    def to_xy(self, lon: float, lat: float) -> tuple[float, float]: ...

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]: ...

    def meta(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LocalProjection:
    """Equirectangular projection around (lon0, lat0): metres east/north of that point.

    Parameters
    ----------
    lon0, lat0 : float
        Origin, WGS84 degrees.
    radius_m : float
        Sphere radius, metres.
    """

    lon0: float
    lat0: float
    radius_m: float = EARTH_RADIUS_M

    def to_xy(self, lon: float, lat: float) -> tuple[float, float]:
        """Metres east and north of the origin for a lon/lat in degrees."""
        k = math.radians(1) * self.radius_m
        return (lon - self.lon0) * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Lon/lat in degrees of a point ``x`` m east and ``y`` m north of the origin."""
        k = math.radians(1) * self.radius_m
        return self.lon0 + x / (k * math.cos(math.radians(self.lat0))), self.lat0 + y / k

    def meta(self) -> dict[str, Any]:
        """The ``geo_reference`` record."""
        return {"type": "equirectangular", "lon0": self.lon0, "lat0": self.lat0, "radius_m": self.radius_m}

    @classmethod
    def around(cls, lonlats: Sequence[tuple[float, float]]) -> LocalProjection:
        """The projection centred on the bounding box of some (lon, lat) points, degrees."""
        lons = [p[0] for p in lonlats]
        lats = [p[1] for p in lonlats]
        if not lons:
            return cls(0.0, 0.0)
        return cls((min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2)


@dataclass(frozen=True)
class UTMProjection:
    """UTM on WGS84 with a planar offset (SUMO ``netOffset``): ``x = easting + x_offset_m`` etc.

    Parameters
    ----------
    zone : int
        UTM zone 1..60.
    south : bool
        Southern hemisphere (false northing 10 000 km).
    x_offset_m, y_offset_m : float
        Added to easting / northing to get local x / y, metres.
    """

    zone: int
    south: bool = False
    x_offset_m: float = 0.0
    y_offset_m: float = 0.0

    @property
    def _lon0(self) -> float:
        return self.zone * 6.0 - 183.0

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Lon/lat (degrees) of local metres."""
        east = x - self.x_offset_m
        north = y - self.y_offset_m - (_UTM_N0_SOUTH if self.south else 0.0)
        xi = north / (_UTM_K0 * _A)
        eta = (east - _UTM_E0) / (_UTM_K0 * _A)
        xi_p = xi - sum(b * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, b in enumerate(_BETA, 1))
        eta_p = eta - sum(b * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, b in enumerate(_BETA, 1))
        chi = math.asin(math.sin(xi_p) / math.cosh(eta_p))
        lat = chi + sum(d * math.sin(2 * j * chi) for j, d in enumerate(_DELTA, 1))
        lon = math.radians(self._lon0) + math.atan2(math.sinh(eta_p), math.cos(xi_p))
        return math.degrees(lon), math.degrees(lat)

    def to_xy(self, lon: float, lat: float) -> tuple[float, float]:
        """Local metres of a lon/lat in degrees."""
        phi = math.radians(lat)
        dlam = math.radians(lon - self._lon0)
        c = 2 * math.sqrt(_N) / (1 + _N)
        t = math.sinh(math.atanh(math.sin(phi)) - c * math.atanh(c * math.sin(phi)))
        xi_p = math.atan2(t, math.cos(dlam))
        eta_p = math.atanh(math.sin(dlam) / math.sqrt(1 + t * t))
        east = _UTM_E0 + _UTM_K0 * _A * (
            eta_p + sum(a * math.cos(2 * j * xi_p) * math.sinh(2 * j * eta_p) for j, a in enumerate(_ALPHA, 1))
        )
        north = (
            _UTM_K0
            * _A
            * (xi_p + sum(a * math.sin(2 * j * xi_p) * math.cosh(2 * j * eta_p) for j, a in enumerate(_ALPHA, 1)))
        )
        if self.south:
            north += _UTM_N0_SOUTH
        return east + self.x_offset_m, north + self.y_offset_m

    def meta(self) -> dict[str, Any]:
        """The ``geo_reference`` record."""
        return {
            "type": "utm",
            "zone": self.zone,
            "south": self.south,
            "x_offset_m": self.x_offset_m,
            "y_offset_m": self.y_offset_m,
        }


def projection_from_meta(meta: Mapping[str, Any] | None) -> Projection | None:
    """Rebuild a projection from a ``geo_reference`` record (None when absent or not understood)."""
    if not isinstance(meta, Mapping):
        return None
    try:
        if meta.get("type") == "equirectangular":
            return LocalProjection(
                float(meta["lon0"]), float(meta["lat0"]), float(meta.get("radius_m", EARTH_RADIUS_M))
            )
        if meta.get("type") == "utm":
            return UTMProjection(
                int(meta["zone"]),
                bool(meta.get("south", False)),
                float(meta.get("x_offset_m", 0.0)),
                float(meta.get("y_offset_m", 0.0)),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def graph_projection(G: nx.MultiDiGraph) -> Projection | None:
    """The projection recorded in ``G.graph["source_meta"]["geo_reference"]``, if any."""
    return projection_from_meta((G.graph.get("source_meta") or {}).get("geo_reference"))


def _rounded(lon: float, lat: float) -> list[float]:
    return [round(lon, COORD_DECIMALS), round(lat, COORD_DECIMALS)]


def to_geojson(G: nx.MultiDiGraph, *, origin_lonlat: tuple[float, float] | None = None) -> dict[str, Any]:
    """Export a road graph as an RFC 7946 GeoJSON FeatureCollection (WGS84 lon/lat, 7 decimals).

    One ``LineString`` per segment (properties ``segment_id``, ``from``, ``to``, ``lanes``,
    ``speed_limit_kmh``, ``length_m``, ``capacity_veh_h``, ``signalised_end``) and one ``Point`` per
    signalised node (``node_id``, ``tls_id``, ``kind``, ``cycle_s``, ``phases``). Segment coordinates come
    from ``geometry_lonlat`` when present, else ``geometry_xy_m`` through the graph's geo-reference (see the
    module docstring), else through ``origin_lonlat``. The collection carries a ``bbox`` [west, south, east,
    north].

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A contract road graph.
    origin_lonlat : (float, float), optional
        For a network in local metres only: the WGS84 (lon, lat) in degrees of its origin (x = 0, y = 0).
        Ignored when the graph is geo-referenced.

    Returns
    -------
    dict
        The FeatureCollection (JSON-serialisable).

    Raises
    ------
    RoadnetError
        If the graph has no geo-reference and no ``origin_lonlat`` was given (GeoJSON requires WGS84), or if
        ``origin_lonlat`` is out of range.
    """
    proj = graph_projection(G)
    if proj is None and origin_lonlat is not None:
        lon0, lat0 = origin_lonlat
        if not (-180 <= lon0 <= 180 and -90 < lat0 < 90):
            raise RoadnetError(f"to_geojson: origin_lonlat must be (lon, lat) in degrees, got {origin_lonlat!r}")
        proj = LocalProjection(float(lon0), float(lat0))
    has_lonlat = all("geometry_lonlat" in d for _, _, d in G.edges(data=True)) and all(
        "lon" in d and "lat" in d for _, d in G.nodes(data=True)
    )
    if proj is None and not has_lonlat:
        raise RoadnetError(
            f"to_geojson: network {G.graph.get('name')!r} is in local metres ({G.graph.get('crs')!r}) with no "
            "geo-reference, and GeoJSON (RFC 7946) requires WGS84 lon/lat; pass origin_lonlat=(lon, lat) to "
            "place its origin (x=0, y=0)"
        )

    def node_lonlat(n: str) -> list[float]:
        d = G.nodes[n]
        if "lon" in d and "lat" in d:
            return _rounded(d["lon"], d["lat"])
        assert proj is not None
        return _rounded(*proj.to_lonlat(d["x_m"], d["y_m"]))

    features: list[dict[str, Any]] = []
    for u, v, sid, d in G.edges(keys=True, data=True):
        if "geometry_lonlat" in d:
            coords = [_rounded(p[0], p[1]) for p in d["geometry_lonlat"]]
        elif proj is not None:
            coords = [_rounded(*proj.to_lonlat(p[0], p[1])) for p in d["geometry_xy_m"]]
        else:  # pragma: no cover - has_lonlat implies geometry_lonlat on every edge
            coords = [node_lonlat(u), node_lonlat(v)]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": coords},
                "properties": {
                    "segment_id": sid,
                    "from": u,
                    "to": v,
                    "lanes": d["lanes"],
                    "speed_limit_kmh": d["speed_limit_kmh"],
                    "length_m": d["length_m"],
                    "capacity_veh_h": d["capacity_veh_h"],
                    "signalised_end": d["signalised_end"],
                },
            }
        )
    for tid, rec in G.graph.get("traffic_lights", {}).items():
        node = rec["node"]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": node_lonlat(node)},
                "properties": {
                    "node_id": node,
                    "tls_id": tid,
                    "kind": G.nodes[node]["kind"],
                    "cycle_s": rec["cycle_s"],
                    "phases": len(rec["phases"]),
                },
            }
        )
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    pts: list[list[float]] = []
    for f in features:
        geom = f["geometry"]
        pts.extend(geom["coordinates"] if geom["type"] == "LineString" else [geom["coordinates"]])
    if pts:
        doc["bbox"] = [
            min(p[0] for p in pts),
            min(p[1] for p in pts),
            max(p[0] for p in pts),
            max(p[1] for p in pts),
        ]
    return doc


def write_geojson(
    G: nx.MultiDiGraph, path: str | os.PathLike[str], *, origin_lonlat: tuple[float, float] | None = None
) -> int:
    """Write :func:`to_geojson` to a file (UTF-8, compact JSON).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A contract road graph.
    path : str or os.PathLike
        Output file (conventionally ``.geojson``).
    origin_lonlat : (float, float), optional
        See :func:`to_geojson`.

    Returns
    -------
    int
        Number of features written.

    Raises
    ------
    RoadnetError
        As :func:`to_geojson`, or if the file cannot be written.
    """
    doc = to_geojson(G, origin_lonlat=origin_lonlat)
    try:
        Path(path).write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot write GeoJSON: {exc.strerror or exc}") from exc
    return len(doc["features"])
