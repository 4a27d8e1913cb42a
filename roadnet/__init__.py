"""The road graph: a ``networkx.MultiDiGraph`` of directed segments (see ``docs/roadnet-contract.md``)."""

from roadnet.demo import grid_city
from roadnet.geojson import to_geojson
from roadnet.graph import RoadnetError, detectors_of, segment, segments, validate_graph
from roadnet.io import load_network
from roadnet.routing import fastest_path
from roadnet.trafficnet import dump_trafficnet, load_trafficnet

__all__ = [
    "RoadnetError",
    "detectors_of",
    "dump_trafficnet",
    "fastest_path",
    "grid_city",
    "load_network",
    "load_trafficnet",
    "segment",
    "segments",
    "to_geojson",
    "validate_graph",
]
