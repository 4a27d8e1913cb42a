"""Shortest paths over the road graph."""

from __future__ import annotations

import itertools
from typing import Any

import networkx as nx


def fastest_path(
    G: nx.MultiDiGraph, origin_node: str, dest_node: str, weight: str = "free_flow_travel_time_s"
) -> tuple[list[str], float]:
    """Find the cheapest route between two nodes with Dijkstra, taking the best of parallel segments.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A road graph.
    origin_node, dest_node : str
        Node ids.
    weight : str
        Edge attribute to minimise; the default is the free-flow travel time in seconds. Any non-negative
        numeric segment attribute works (e.g. ``length_m`` for the shortest route in metres).

    Returns
    -------
    tuple[list[str], float]
        The segment ids along the route, and its total cost (seconds for the default weight);
        ``([], 0.0)`` when origin and destination coincide.

    Raises
    ------
    networkx.NodeNotFound
        If either node is not in the graph.
    networkx.NetworkXNoPath
        If the destination cannot be reached.
    """

    def best(parallel: dict[str, dict[str, Any]]) -> tuple[float, str]:
        return min((float(attrs[weight]), key) for key, attrs in parallel.items())

    for node in (origin_node, dest_node):
        if node not in G:
            raise nx.NodeNotFound(f"node {node!r} is not in the road graph")
    nodes: list[str] = nx.dijkstra_path(G, origin_node, dest_node, weight=lambda _u, _v, parallel: best(parallel)[0])
    total = 0.0
    route: list[str] = []
    for u, v in itertools.pairwise(nodes):
        cost, key = best(G[u][v])
        total += cost
        route.append(key)
    return route, total
