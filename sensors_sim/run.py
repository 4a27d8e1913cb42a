"""Drive the traffic state and the devices, and publish their events, paced against the wall clock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import networkx as nx

from sensors_sim.devices import DeviceBank, tick_s
from sensors_sim.publish import Publisher
from sensors_sim.traffic import TrafficState


def iter_ticks(
    G: nx.MultiDiGraph,
    start: datetime,
    *,
    seed: int = 0,
    state: TrafficState | None = None,
) -> Iterator[tuple[datetime, list[dict[str, Any]]]]:
    """Simulate from ``start`` and yield, at every tick, the events whose interval ends then.

    The state is advanced in steps of at most one second, aligned to whole seconds. Ticks are the
    multiples of the greatest common divisor of the detector intervals (the smallest interval when the others
    are multiples of it) after ``start``. Within a tick, loops come before cameras. Intervals that started
    before ``start`` are not reported.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph (``docs/roadnet-contract.md``).
    start : datetime
        Simulation start, timezone-aware.
    seed : int
        Random seed of the state and the devices.
    state : TrafficState, optional
        A state to drive instead of a new ``TrafficState(G, start, seed=seed)``; its time must be ``start``.

    Yields
    ------
    tuple of (datetime, list of dict)
        The tick time (UTC) and its events, possibly none.

    Raises
    ------
    ValueError
        If ``start`` is naive or ``state`` is at another time.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    t = start.timestamp()
    if state is None:
        state = TrafficState(G, t, seed=seed)
    elif state.t_s != t:
        raise ValueError(f"state is at {state.t_s}, not at start {t}")
    bank = DeviceBank(G, state, seed=seed)
    tick = tick_s(bank.intervals_s)
    next_tick = (math.floor(t / tick) + 1) * tick
    while True:
        while t < next_tick:
            t_next = min(math.floor(t) + 1.0, float(next_tick))
            state.step(t_next)
            bank.observe(state, t_next - t)
            t = t_next
        yield datetime.fromtimestamp(next_tick, UTC), bank.emit(next_tick)
        next_tick += tick


def simulate(
    G: nx.MultiDiGraph,
    publisher: Publisher,
    *,
    start: datetime,
    duration_s: float | None,
    speed: float = 60.0,
    seed: int = 0,
    on_progress: Callable[[int, datetime], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Simulate every detector of ``G`` and publish its events; return the number published.

    The events of a tick at simulated time ``ts`` are published ``(ts - start) / speed`` wall seconds after
    the call began (loops before cameras). The publisher is flushed at the end, not closed.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph (``docs/roadnet-contract.md``).
    publisher : Publisher
        Where the events go.
    start : datetime
        Simulated start time, timezone-aware (UTC).
    duration_s : float or None
        Simulated seconds to run; ticks up to and including ``start + duration_s`` are published. ``None``
        runs until ``stop`` is set.
    speed : float
        Simulated seconds per wall second; ``0`` or ``inf`` runs as fast as possible.
    seed : int
        Random seed; the same seed gives the same events.
    on_progress : callable, optional
        Called after each tick with the number of events published so far and the tick time.
    stop : threading.Event, optional
        Set it to stop before the next tick.

    Returns
    -------
    int
        Events published.

    Raises
    ------
    ValueError
        If ``speed`` or ``duration_s`` is negative, or ``start`` is naive.
    """
    if speed < 0 or math.isnan(speed):
        raise ValueError(f"speed must be >= 0, got {speed}")
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    stop = stop or threading.Event()
    paced = 0 < speed < math.inf
    t0 = start.timestamp()
    end_s = math.inf if duration_s is None else t0 + duration_s
    wall0 = time.monotonic()
    published = 0
    for ts, events in iter_ticks(G, start, seed=seed):
        sim_s = ts.timestamp()
        if sim_s > end_s + 1e-9 or stop.is_set():
            break
        if paced:
            delay = wall0 + (sim_s - t0) / speed - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        for event in events:
            publisher.publish(event)
        published += len(events)
        if on_progress is not None:
            on_progress(published, ts)
    publisher.flush()
    return published
