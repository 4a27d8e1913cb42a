"""One entry point for every network format: :func:`load_network` picks the importer from name and content.

* ``traffic-net``: ``.json`` with ``"schema": "traffic-net/1.0"`` → :func:`roadnet.trafficnet.load_trafficnet`
* ``cityflow``: ``.json`` with ``intersections`` and ``roads`` lists → :func:`roadnet.cityflow.load_cityflow`
* ``sumo-net``: ``.net.xml``, or XML whose root is ``<net>`` → :func:`roadnet.sumo_net.load_sumo_net`
* ``cbengine``: ``.txt``, or text starting with a count line → :func:`roadnet.cbengine.load_cbengine`
* ``osm-xml``: ``.osm``, ``.osm.xml``, ``.osm.bz2``, ``.osm.gz``, or XML whose root is ``<osm>`` →
  :func:`roadnet.osm.load_osm`
* ``osm-pbf``: ``.pbf``, or a file whose first blob is ``OSMHeader`` → :func:`roadnet.osm.load_osm` (a small
  pure-Python decoder; no extra dependency)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import networkx as nx

from roadnet.cbengine import load_cbengine
from roadnet.cityflow import is_cityflow, load_cityflow
from roadnet.graph import RoadnetError
from roadnet.osm import load_osm
from roadnet.sumo_net import load_sumo_net
from roadnet.trafficnet import TRAFFICNET_SCHEMA, load_trafficnet

FORMATS = ("traffic-net", "cityflow", "sumo-net", "cbengine", "osm-xml", "osm-pbf")
FORMAT_NAMES = {
    "traffic-net": "traffic-net/1.0 JSON",
    "cityflow": "CityFlow roadnet JSON",
    "sumo-net": "SUMO .net.xml",
    "cbengine": "CBEngine roadnet text",
    "osm-xml": "OpenStreetMap XML",
    "osm-pbf": "OpenStreetMap PBF",
}
_SNIFF_BYTES = 4096


def _json_format(path: Path) -> tuple[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read network file: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoadnetError(f"{path.name}: invalid JSON: {exc}") from exc
    if isinstance(doc, dict) and doc.get("schema") == TRAFFICNET_SCHEMA:
        return "traffic-net", doc
    if is_cityflow(doc):
        return "cityflow", doc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    raise RoadnetError(
        f"{path.name}: JSON is neither traffic-net/1.0 (schema={schema!r}) "
        "nor a CityFlow roadnet (intersections + roads)"
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the format of a network file (one of :data:`FORMATS`), from its name, else its first bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        ``"traffic-net"``, ``"cityflow"``, ``"sumo-net"``, ``"cbengine"``, ``"osm-xml"`` or ``"osm-pbf"``.

    Raises
    ------
    RoadnetError
        If the file is missing or unreadable, or its format is not one of these.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise RoadnetError(f"{path}: no such network file")
    if name.endswith(".json"):
        return _json_format(path)[0]
    if name.endswith(".pbf"):
        return "osm-pbf"
    if name.endswith((".osm", ".osm.xml", ".osm.bz2", ".osm.gz")):
        return "osm-xml"
    if name.endswith(".net.xml"):
        return "sumo-net"
    if name.endswith(".txt"):
        return "cbengine"
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise RoadnetError(f"{path}: cannot read network file: {exc.strerror or exc}") from exc
    if b"OSMHeader" in head[:64]:
        return "osm-pbf"
    text = head.decode("utf-8", "replace")
    body = re.sub(r"<\?.*?\?>|<!--.*?-->", "", text, flags=re.S).lstrip()
    if body.startswith("<net"):
        return "sumo-net"
    if body.startswith("<osm"):
        return "osm-xml"
    if text.lstrip().startswith(("{", "[")):
        return _json_format(path)[0]
    if re.match(r"\s*\d+\s*(//[^\n]*)?\n\s*-?\d+(\.\d+)?\s+-?\d+(\.\d+)?\s+\S+\s+[01]\b", text):
        return "cbengine"
    raise RoadnetError(
        f"{path.name}: unknown network format; supported: "
        + ", ".join(FORMAT_NAMES[f] for f in FORMATS)
        + " (recognised by extension .json/.net.xml/.txt/.osm[.bz2|.gz]/.osm.pbf, or by content)"
    )


def load_network(path: str | os.PathLike[str], *, name: str | None = None, detectors: bool = True) -> nx.MultiDiGraph:
    """Load a road network of any supported format into a validated contract graph.

    Parameters
    ----------
    path : str or os.PathLike
        The network file; the format comes from :func:`detect_format`.
    name : str, optional
        Network name for imported formats (default from the file name); a traffic-net file keeps its own.
    detectors : bool
        Imported formats: add the default detector layout. A traffic-net file keeps its own detectors.

    Returns
    -------
    networkx.MultiDiGraph
        The road graph (``docs/roadnet-contract.md``; metres, km/h, veh/h, seconds). Imported graphs carry
        ``G.graph["source_meta"]`` (``source_format``, ``capacity_basis``, ``signal_plans``, ``geo_reference``).

    Raises
    ------
    RoadnetError
        If the file is missing, of unknown format, or malformed (the message names the file and element).
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "traffic-net":
        return load_trafficnet(path)
    if fmt == "cityflow":
        return load_cityflow(path, name=name, detectors=detectors)
    if fmt == "sumo-net":
        return load_sumo_net(path, name=name, detectors=detectors)
    if fmt == "cbengine":
        return load_cbengine(path, name=name, detectors=detectors)
    return load_osm(path, name=name, detectors=detectors)
