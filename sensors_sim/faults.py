"""Device faults applied to an event stream: what real loops and cameras do wrong.

Used by ``citybrain replay --faults`` and the benches to check that estimates and incident detection survive
broken detectors. Each faulty device gets one kind:

- ``silent``: its readings are dropped (dead detector, cut cable);
- ``stuck``: every reading repeats the values of its first one (frozen controller);
- ``zero``: counts and occupancy read 0 while traffic flows (a loop that stopped detecting).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FAULT_KINDS = ("silent", "stuck", "zero")


def choose_faults(
    device_ids: Iterable[str], fraction: float, seed: int, kinds: Sequence[str] = ("silent", "stuck")
) -> dict[str, str]:
    """Pick ``round(fraction · n)`` devices (seeded) and give them ``kinds`` in turn.

    Raises
    ------
    ValueError
        If ``fraction`` is outside [0, 1] or a kind is unknown.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fault fraction must be in [0, 1], got {fraction}")
    bad = set(kinds) - set(FAULT_KINDS)
    if bad:
        raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {FAULT_KINDS}")
    ids = sorted(set(device_ids))
    chosen = random.Random(seed).sample(ids, round(fraction * len(ids)))
    return {d: kinds[i % len(kinds)] for i, d in enumerate(chosen)}


def apply_faults(events: Iterable[dict[str, Any]], faults: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Yield the stream as the faulty devices would report it (device schema v1 events in, out)."""
    first: dict[str, dict[str, Any]] = {}
    for ev in events:
        did = ev.get("detector_id") or ev.get("camera_id")
        kind = faults.get(str(did)) if did is not None else None
        if kind is None:
            yield ev
        elif kind == "silent":
            continue
        elif kind == "stuck":
            f = first.setdefault(str(did), ev)
            keep = ("count", "occupancy", "speed_kmh", "counts", "count_total", "queue_len_veh", "queue_max_veh")
            yield {**ev, **{k: f[k] for k in keep if k in f}}
        else:  # zero
            z: dict[str, Any] = {"occupancy": 0.0, "speed_kmh": None}
            if ev.get("type") == "camera":
                z |= {
                    "counts": {k: 0 for k in ev.get("counts", {})},
                    "count_total": 0,
                    "queue_len_veh": 0,
                    "queue_max_veh": 0,
                }
            else:
                z["count"] = 0
            yield {**ev, **z}
