"""Drive the traffic model, the devices, their faults and the ground truth; publish paced against the clock.

:class:`Simulator` is the whole city: a :class:`~sensors_sim.traffic.TrafficModel`, its
:class:`~sensors_sim.devices.DeviceBank`, a :class:`~sensors_sim.faults.FaultInjector` and a
:class:`~sensors_sim.truth.GroundTruth`. :meth:`Simulator.advance` runs the model in 1 s steps up to the next
tick (the greatest common divisor of the detector intervals) and returns the messages of that tick.
Between ticks a caller may change signal plans (:meth:`Simulator.apply_plans`), e.g. from citybrain's
``signal-recommendations`` topic: :func:`simulate` does it through its ``plans`` callback.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import networkx as nx
import orjson

from sensors_sim.devices import DeviceBank, tick_s
from sensors_sim.events import Event
from sensors_sim.faults import Fault, FaultInjector, fault_records, resolve_fault_rules
from sensors_sim.publish import Publisher
from sensors_sim.scenario import Scenario
from sensors_sim.traffic import TrafficModel
from sensors_sim.truth import GroundTruth, incident_records

PlanSource = Callable[[float], Mapping[str, Mapping[str, Any]] | None]
"""Called between ticks with the simulated time (POSIX s); returns ``{tls_id: plan}`` to apply, or None."""


class Simulator:
    """A simulated city: traffic, devices, faults and ground truth, advanced tick by tick.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph (``docs/roadnet-contract.md``).
    start : datetime
        Simulated start, timezone-aware.
    seed : int, optional
        Random seed; default the scenario's, else 0. The same seed gives the same messages.
    scenario : Scenario, optional
        Demand, incidents, faults and signal-plan overrides.
    warm_start : bool
        Start from the free-flow state of the demand rather than an empty network.
    on_truth : callable, optional
        Called with each minute's ground-truth records (``ground_truth_edges.jsonl`` format).

    Attributes
    ----------
    model : TrafficModel
        The traffic state.
    devices : DeviceBank
        The loops and cameras.
    faults : dict of str to Fault
        The faulty devices.
    injector : FaultInjector
        Applies the faults.
    truth : GroundTruth
        Per-minute ground truth.
    tick_s : int
        Seconds between ticks.
    t_s : float
        Current simulated time, POSIX seconds.

    Raises
    ------
    ValueError
        If ``start`` is naive, or the scenario does not fit the graph.
    """

    def __init__(
        self,
        G: nx.MultiDiGraph,
        start: datetime,
        *,
        seed: int | None = None,
        scenario: Scenario | None = None,
        warm_start: bool = True,
        on_truth: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.G = G
        self.scenario = scenario or Scenario()
        self.seed = seed if seed is not None else (self.scenario.seed if self.scenario.seed is not None else 0)
        t = start.timestamp()
        self.t0_s = t
        self.t_s = t
        self.model = TrafficModel(
            G,
            t,
            seed=self.seed,
            demand=self.scenario.demand,
            incidents=self.scenario.incidents,
            warm_start=warm_start,
            turning_ratios=self.scenario.turning_ratios,
        )
        self.devices = DeviceBank(G, self.model, seed=self.seed)
        self.faults: dict[str, Fault] = resolve_fault_rules(self.scenario.faults, self.devices.types)
        self.injector = FaultInjector(self.faults, t0_s=t, seed=self.seed)
        self.truth = GroundTruth(self.model)
        self.on_truth = on_truth
        self.tick_s = tick_s(self.devices.intervals_s)
        self._next_tick = (math.floor(t / self.tick_s) + 1) * self.tick_s
        self._scheduled: list[tuple[float, str, dict[str, Any]]] = []
        for tls, plan in self.scenario.signals.items():
            spec = {k: v for k, v in plan.items() if k != "at_s"}
            at = float(plan.get("at_s", 0.0))
            if at <= 0:
                self.model.signals.set_plan(tls, spec, immediate=True, t_s=t)
            else:
                self.model.signals.check_plan(tls, spec)  # fail now rather than at at_s
                self._scheduled.append((t + at, tls, spec))
        self._scheduled.sort(key=lambda x: x[0])

    # ------------------------------------------------------------------------------------------------ plans

    def set_plan(
        self,
        tls_id: str,
        green_s: Sequence[float] | Mapping[str, Any] | None = None,
        *,
        cycle_s: float | None = None,
        splits: Sequence[float] | None = None,
        immediate: bool = False,
    ) -> list[float]:
        """Give one traffic light a new plan, installed at its next start of phase 0 (or now).

        Parameters
        ----------
        tls_id : str
            Traffic light.
        green_s : sequence of float or mapping, optional
            Green time of each green phase (phase order), seconds; or a whole plan
            ``{"green_s": [...]}`` / ``{"cycle_s": C, "splits": [...]}``.
        cycle_s : float, optional
            Cycle length with ``splits``, seconds.
        splits : sequence of float, optional
            Shares of the green time per green phase.
        immediate : bool
            Start the plan's phase 0 now instead of at the next cycle start.

        Returns
        -------
        list of float
            The phase durations that will run, seconds.

        Raises
        ------
        ValueError
            If the light is unknown or the plan malformed.
        """
        plan = green_s if isinstance(green_s, Mapping) else None
        greens = None if isinstance(green_s, Mapping) else green_s
        return self.model.signals.set_plan(
            tls_id, plan, green_s=greens, cycle_s=cycle_s, splits=splits, immediate=immediate, t_s=self.t_s
        )

    def apply_plans(self, plans: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Apply ``{tls_id: plan}`` (the closed-loop harness's plan format); bad entries are skipped.

        Parameters
        ----------
        plans : mapping
            Plan per traffic light.

        Returns
        -------
        list of str
            Why entries were skipped (unknown light, malformed plan); empty when all were applied.
        """
        problems = []
        for tls, plan in plans.items():
            try:
                self.set_plan(str(tls), plan)
            except (ValueError, TypeError) as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------------------------------------ ticks

    def advance(self) -> tuple[datetime, list[Event]]:
        """Run to the next tick.

        Returns
        -------
        tuple of (datetime, list)
            The tick time (UTC) and the messages to send then: readings whose interval ends at the tick
            (loops before cameras), as the faulty devices send them, then held readings now due.
        """
        model = self.model
        t = self.t_s
        nxt = float(self._next_tick)
        while t < nxt:
            t_next = min(math.floor(t) + 1.0, nxt)
            while self._scheduled and self._scheduled[0][0] <= t + 1e-9:
                _, tls, spec = self._scheduled.pop(0)
                model.signals.set_plan(tls, spec)
            model.step(t_next)
            self.devices.observe(model)
            self.truth.observe(model)
            t = t_next
            if round(t) % self.truth.interval_s == 0 and abs(t - round(t)) < 1e-9:
                recs = self.truth.emit(t)
                if recs and self.on_truth is not None:
                    self.on_truth(recs)
        self.t_s = t
        self._next_tick += self.tick_s
        events = self.devices.emit(int(nxt))
        return datetime.fromtimestamp(nxt, UTC), self.injector.process(nxt, events)

    def ticks(self) -> Iterator[tuple[datetime, list[Event]]]:
        """Yield :meth:`advance` forever."""
        while True:
            yield self.advance()

    def flush(self) -> list[Event]:
        """Readings still held back by late / out-of-order faults (call at the end of a run)."""
        return self.injector.flush()

    # --------------------------------------------------------------------------------------------- records

    def incident_records(self) -> list[dict[str, Any]]:
        """The incidents so far, in the harness's ``incidents.json`` format."""
        return incident_records(self.model)

    def fault_records(self) -> list[dict[str, Any]]:
        """The faulty devices, one record each (``device_faults.jsonl``)."""
        return fault_records(self.faults, self.G.graph.get("detectors", {}), self.t0_s)


def iter_ticks(
    G: nx.MultiDiGraph,
    start: datetime,
    *,
    seed: int | None = None,
    scenario: Scenario | None = None,
    simulator: Simulator | None = None,
) -> Iterator[tuple[datetime, list[Event]]]:
    """Simulate from ``start`` and yield, at every tick, the messages sent then.

    The model advances in steps of at most one second, aligned to whole seconds. Ticks are the multiples of
    the greatest common divisor of the detector intervals after ``start``. Intervals that started before
    ``start`` are not reported.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph (``docs/roadnet-contract.md``).
    start : datetime
        Simulation start, timezone-aware.
    seed : int, optional
        Random seed (default: the scenario's, else 0).
    scenario : Scenario, optional
        Scenario.
    simulator : Simulator, optional
        A simulator to drive instead of a new one; it must be at ``start``.

    Yields
    ------
    tuple of (datetime, list)
        The tick time (UTC) and its messages (dicts, or :class:`~sensors_sim.events.RawEvent`).

    Raises
    ------
    ValueError
        If ``start`` is naive or ``simulator`` is at another time.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    if simulator is None:
        simulator = Simulator(G, start, seed=seed, scenario=scenario)
    elif simulator.t_s != start.timestamp():
        raise ValueError(f"simulator is at {simulator.t_s}, not at start {start.timestamp()}")
    yield from simulator.ticks()


def _write_json(path: Path, doc: Any) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def simulate(
    G: nx.MultiDiGraph,
    publisher: Publisher,
    *,
    start: datetime,
    duration_s: float | None,
    speed: float = 60.0,
    seed: int | None = None,
    on_progress: Callable[[int, datetime], None] | None = None,
    stop: threading.Event | None = None,
    scenario: Scenario | None = None,
    plans: PlanSource | None = None,
    truth_dir: str | Path | None = None,
    simulator: Simulator | None = None,
) -> int:
    """Simulate every detector of ``G`` and publish its messages; return the number published.

    The messages of a tick at simulated time ``ts`` are published ``(ts - start) / speed`` wall seconds after
    the call began. If the publisher has an ``announce(devices)`` method (MQTT), it is called first with every
    device. Readings still held back by late / out-of-order faults are published at the end. The publisher
    is flushed at the end, not closed.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph (``docs/roadnet-contract.md``).
    publisher : Publisher
        Where the messages go.
    start : datetime
        Simulated start time, timezone-aware (UTC).
    duration_s : float or None
        Simulated seconds to run; ticks up to and including ``start + duration_s`` are published. ``None``
        runs until ``stop`` is set.
    speed : float
        Simulated seconds per wall second; ``0`` or ``inf`` runs as fast as possible.
    seed : int, optional
        Random seed (default: the scenario's, else 0); the same seed gives the same messages.
    on_progress : callable, optional
        Called after each tick with the number of messages published so far and the tick time.
    stop : threading.Event, optional
        Set it to stop before the next tick.
    scenario : Scenario, optional
        Demand, incidents, faults, signal plans.
    plans : callable, optional
        Closed loop: called after every tick with the simulated time (POSIX s); the ``{tls_id: plan}`` it
        returns is applied (:meth:`Simulator.apply_plans`; each plan starts at its light's next phase 0).
    truth_dir : str or pathlib.Path, optional
        Folder (created) for ``ground_truth_edges.jsonl`` (written as the run goes), ``incidents.json`` and
        ``device_faults.jsonl`` (written at the end).
    simulator : Simulator, optional
        A simulator at ``start`` to drive (then ``seed`` and ``scenario`` are ignored).

    Returns
    -------
    int
        Messages published.

    Raises
    ------
    ValueError
        If ``speed`` or ``duration_s`` is negative, or ``start`` is naive.
    """
    if speed < 0 or math.isnan(speed):
        raise ValueError(f"speed must be >= 0, got {speed}")
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    stop = stop or threading.Event()
    paced = 0 < speed < math.inf
    t0 = start.timestamp()
    end_s = math.inf if duration_s is None else t0 + duration_s
    truth_file: IO[bytes] | None = None
    out_dir = Path(truth_dir) if truth_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        truth_file = (out_dir / "ground_truth_edges.jsonl").open("wb")

    def write_truth(recs: list[dict[str, Any]]) -> None:
        if truth_file is not None:
            truth_file.write(b"".join(orjson.dumps(r) + b"\n" for r in recs))

    try:
        if simulator is None:
            simulator = Simulator(G, start, seed=seed, scenario=scenario, on_truth=write_truth)
        else:
            if simulator.t_s != t0:
                raise ValueError(f"simulator is at {simulator.t_s}, not at start {t0}")
            if truth_file is not None:
                simulator.on_truth = write_truth
        announce = getattr(publisher, "announce", None)
        if callable(announce):
            announce(simulator.devices.device_ids())
        wall0 = time.monotonic()
        published = 0
        while not stop.is_set():
            if simulator._next_tick > end_s + 1e-9:
                break
            ts, events = simulator.advance()
            sim_s = ts.timestamp()
            if paced:
                delay = wall0 + (sim_s - t0) / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            for event in events:
                publisher.publish(event)
            published += len(events)
            if on_progress is not None:
                on_progress(published, ts)
            if plans is not None:
                new = plans(sim_s)
                if new:
                    simulator.apply_plans(new)
        for event in simulator.flush():
            publisher.publish(event)
            published += 1
        publisher.flush()
        if out_dir is not None:
            _write_json(out_dir / "incidents.json", simulator.incident_records())
            (out_dir / "device_faults.jsonl").write_bytes(
                b"".join(orjson.dumps(r) + b"\n" for r in simulator.fault_records())
            )
        return published
    finally:
        if truth_file is not None:
            truth_file.close()
