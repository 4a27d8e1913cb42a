"""Fixed-time signal plans of every traffic light, evaluated per approach segment; plans can be replaced.

A plan is the light's phase sequence (``G.graph["traffic_lights"][tls]["phases"]``, by ``index``), each with a
duration. An approach segment has green during the phases of kind ``green`` that list it (its
``green_phases`` or the phase's ``green_approaches``); yellow and red phases stop it. The cycle of light
``k`` starts at ``t0_k`` (initially its ``offset_s``) and repeats every ``cycle_k`` seconds; the state is
looked up per whole second of the cycle.

New plans (:meth:`SignalBank.set_plan`) take the closed-loop harness's form
(``../shared/eval/sumo/README.md``): ``{"green_s": [g0, g1, ...]}`` or
``{"cycle_s": C, "splits": [f0, f1, ...]}``, one value per ``green`` phase in phase order; yellow and red
phases keep their durations. Greens shorter than ``MIN_GREEN_S`` and cycles longer than ``MAX_CYCLE_S`` are
clipped (and counted in :attr:`SignalBank.warnings`), durations are rounded to whole seconds. A new plan is
installed at the next start of phase 0 of that light (the harness's rule), or at once with
``immediate=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np

from sensors_sim.network import BoolArray, FloatArray, IntArray, Network

MIN_GREEN_S = 5.0
"""Shortest green a plan may give, seconds."""
MAX_CYCLE_S = 180.0
"""Longest cycle a plan may have, seconds."""


def plan_durations(
    tls_id: str,
    kinds: Sequence[str],
    durations_s: Sequence[float],
    plan: Mapping[str, Any],
    warnings: list[str] | None = None,
) -> list[float]:
    """The phase durations a plan gives a light, under the harness's limits (shared with the SUMO twin).

    Parameters
    ----------
    tls_id : str
        Traffic light (for messages).
    kinds : sequence of str
        Kind of each phase (``green``, ``yellow``, ``red``), phase order.
    durations_s : sequence of float
        Current duration of each phase, seconds; yellow and red phases keep theirs.
    plan : mapping
        ``{"green_s": [g0, ...]}`` or ``{"cycle_s": C, "splits": [f0, ...]}``, one value per green phase.
    warnings : list of str, optional
        Receives a line per clipping (green below ``MIN_GREEN_S``, cycle above ``MAX_CYCLE_S``).

    Returns
    -------
    list of float
        New duration of every phase, whole seconds.

    Raises
    ------
    ValueError
        If the plan is malformed: no greens, wrong number of values, non-finite or negative values, a cycle
        not longer than the fixed (non-green) time.
    """
    tid = tls_id
    old = list(durations_s)
    if warnings is None:
        warnings = []
    gi = [i for i, kind in enumerate(kinds) if kind == "green"]
    fixed = sum(d for i, d in enumerate(old) if kinds[i] != "green")
    if "green_s" in plan:
        raw = plan["green_s"]
        if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
            raise ValueError(f"{tid}: green_s must be a list of seconds, got {raw!r:.60}")
        greens = [float(x) for x in raw]
    elif "splits" in plan:
        splits = [float(x) for x in plan["splits"]]
        cycle = float(plan.get("cycle_s", sum(old)))
        if not math.isfinite(cycle) or cycle <= fixed:
            raise ValueError(f"{tid}: cycle_s {cycle} must exceed the fixed (non-green) time {fixed:g} s")
        if any(not math.isfinite(f) or f < 0 for f in splits) or sum(splits) <= 0:
            raise ValueError(f"{tid}: splits must be non-negative with a positive sum, got {splits}")
        greens = [f / sum(splits) * (cycle - fixed) for f in splits]
    else:
        raise ValueError(f"{tid}: a plan needs 'green_s' or 'cycle_s' + 'splits', got {sorted(plan)}")
    if len(greens) != len(gi):
        raise ValueError(f"{tid}: {len(gi)} green phases, got {len(greens)} values")
    if any(not math.isfinite(g) or g < 0 for g in greens):
        raise ValueError(f"{tid}: green times must be finite and >= 0, got {greens}")
    if min(greens, default=MIN_GREEN_S) < MIN_GREEN_S:
        warnings.append(f"{tid}: green below {MIN_GREEN_S:g} s clipped")
        greens = [max(g, MIN_GREEN_S) for g in greens]
    if fixed + sum(greens) > MAX_CYCLE_S:
        warnings.append(f"{tid}: cycle above {MAX_CYCLE_S:g} s clipped")
        room = MAX_CYCLE_S - fixed - MIN_GREEN_S * len(greens)
        extra = [g - MIN_GREEN_S for g in greens]
        greens = [MIN_GREEN_S + e / max(sum(extra), 1e-9) * max(room, 0.0) for e in extra]
    new = list(old)
    for i, g in zip(gi, greens, strict=True):
        new[i] = float(max(round(g), 1))
    return new


class SignalBank:
    """Signal state of every approach segment.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph with ``G.graph["traffic_lights"]``.
    net : Network
        The compiled graph (segment order).

    Attributes
    ----------
    tls_ids : list of str
        Traffic lights, in record order.
    warnings : list of str
        What plan clipping happened (green below ``MIN_GREEN_S``, cycle above ``MAX_CYCLE_S``).
    """

    def __init__(self, G: nx.MultiDiGraph, net: Network) -> None:
        self.net = net
        self.tls_ids: list[str] = []
        self._durations: list[list[float]] = []
        self._kinds: list[list[str]] = []
        self._greens: list[list[set[int]]] = []  # per light, per phase: the segments with green
        self._approaches: list[list[int]] = []
        seg_tls = np.full(net.n_segments, -1, dtype=np.int64)
        for tid, rec in G.graph.get("traffic_lights", {}).items():
            phases = sorted(rec.get("phases", []), key=lambda p: int(p["index"]))
            if not phases:
                continue
            k = len(self.tls_ids)
            apps: list[int] = []
            greens: list[set[int]] = [set() for _ in phases]
            for app in rec.get("approaches", []):
                i = net.index.get(str(app["segment_id"]))
                if i is None:
                    continue
                gp = {int(x) for x in app.get("green_phases", [])}
                for pi, p in enumerate(phases):
                    if p["kind"] == "green" and (
                        int(p["index"]) in gp or app["segment_id"] in p.get("green_approaches", [])
                    ):
                        greens[pi].add(i)
                if any(i in g for g in greens):  # an approach that never gets green is left uncontrolled
                    apps.append(i)
                    seg_tls[i] = k
            self.tls_ids.append(str(tid))
            self._durations.append([float(p["duration_s"]) for p in phases])
            self._kinds.append([str(p["kind"]) for p in phases])
            self._greens.append(greens)
            self._approaches.append(apps)
        self.tls_index = {t: k for k, t in enumerate(self.tls_ids)}
        nt = len(self.tls_ids)
        self.cycle_s: FloatArray = np.array([max(sum(d), 1.0) for d in self._durations]) if nt else np.ones(0)
        self.t0_s: FloatArray = np.array(
            [float(G.graph["traffic_lights"][t].get("offset_s", 0.0) or 0.0) for t in self.tls_ids]
        )
        self.seg_tls: IntArray = seg_tls
        self.sig_segs: IntArray = np.flatnonzero(seg_tls >= 0).astype(np.int64)
        self._sig_tls = seg_tls[self.sig_segs]
        self._row = np.full(net.n_segments, -1, dtype=np.int64)
        self._row[self.sig_segs] = np.arange(len(self.sig_segs))
        self._mask: BoolArray = np.ones((len(self.sig_segs), 1), dtype=bool)
        self._pending: dict[int, list[float]] = {}
        self.warnings: list[str] = []
        self.plan_changes: list[tuple[float, str, list[float]]] = []
        for k in range(nt):
            self._build_rows(k)

    # ----------------------------------------------------------------------------------------------- masks

    def _build_rows(self, k: int) -> None:
        durations = self._durations[k]
        width = math.ceil(self.cycle_s[k])
        if width > self._mask.shape[1]:
            self._mask = np.pad(self._mask, ((0, 0), (0, width - self._mask.shape[1])), constant_values=True)
        ends = np.cumsum(durations)
        mid = np.arange(width) + 0.5
        which = np.minimum(np.searchsorted(ends, mid, side="right"), len(durations) - 1)
        for i in self._approaches[k]:
            green = np.array([i in g for g in self._greens[k]])
            row = self._mask[self._row[i]]
            row[:width] = green[which]
            row[width:] = True

    def green(self, t_s: float) -> BoolArray:
        """Whether each segment has green at ``t_s`` (always True where no light controls it).

        Parameters
        ----------
        t_s : float
            POSIX time, seconds.

        Returns
        -------
        numpy.ndarray of bool
            One value per segment.
        """
        out = np.ones(self.net.n_segments, dtype=bool)
        if len(self.sig_segs):
            pos = np.floor(np.mod(t_s - self.t0_s, self.cycle_s)).astype(np.int64)
            out[self.sig_segs] = self._mask[np.arange(len(self.sig_segs)), pos[self._sig_tls]]
        return out

    def phase_at(self, tls_id: str, t_s: float) -> int:
        """Position (in index order) of the phase light ``tls_id`` shows at ``t_s``.

        Parameters
        ----------
        tls_id : str
            Traffic light.
        t_s : float
            POSIX time, seconds.

        Returns
        -------
        int
            Phase position.
        """
        k = self.tls_index[tls_id]
        pos = (t_s - self.t0_s[k]) % self.cycle_s[k]
        ends = np.cumsum(self._durations[k])
        return int(min(np.searchsorted(ends, pos, side="right"), len(ends) - 1))

    # ----------------------------------------------------------------------------------------------- plans

    def plan(self, tls_id: str) -> dict[str, Any]:
        """The plan light ``tls_id`` runs now.

        Parameters
        ----------
        tls_id : str
            Traffic light.

        Returns
        -------
        dict
            ``{"cycle_s", "green_s", "durations_s", "t0_s"}``, seconds (``green_s`` per green phase).
        """
        k = self.tls_index[tls_id]
        d = self._durations[k]
        return {
            "cycle_s": float(self.cycle_s[k]),
            "green_s": [x for x, kind in zip(d, self._kinds[k], strict=True) if kind == "green"],
            "durations_s": list(d),
            "t0_s": float(self.t0_s[k]),
        }

    def _durations_for(self, k: int, plan: Mapping[str, Any]) -> list[float]:
        return plan_durations(self.tls_ids[k], self._kinds[k], self._durations[k], plan, self.warnings)

    def check_plan(self, tls_id: str, plan: Mapping[str, Any]) -> list[float]:
        """The phase durations ``plan`` would run on light ``tls_id``, without installing it.

        Parameters
        ----------
        tls_id : str
            Traffic light.
        plan : mapping
            ``{"green_s": [...]}`` or ``{"cycle_s": C, "splits": [...]}``.

        Returns
        -------
        list of float
            Phase durations, seconds.

        Raises
        ------
        ValueError
            If the light is unknown or the plan is malformed.
        """
        if tls_id not in self.tls_index:
            raise ValueError(f"unknown traffic light {tls_id!r}")
        return self._durations_for(self.tls_index[tls_id], plan)

    def set_plan(
        self,
        tls_id: str,
        plan: Mapping[str, Any] | None = None,
        *,
        green_s: Sequence[float] | None = None,
        cycle_s: float | None = None,
        splits: Sequence[float] | None = None,
        immediate: bool = False,
        t_s: float | None = None,
    ) -> list[float]:
        """Give light ``tls_id`` a new plan.

        Parameters
        ----------
        tls_id : str
            Traffic light.
        plan : mapping, optional
            ``{"green_s": [...]}`` or ``{"cycle_s": C, "splits": [...]}``; or use the keyword arguments.
        green_s : sequence of float, optional
            Green time of each green phase, seconds.
        cycle_s : float, optional
            Cycle length with ``splits``, seconds.
        splits : sequence of float, optional
            Shares of the green time (cycle minus yellow and red phases) per green phase.
        immediate : bool
            Start the new plan's phase 0 at ``t_s`` instead of at the next start of phase 0.
        t_s : float, optional
            Current POSIX time, seconds; needed with ``immediate``.

        Returns
        -------
        list of float
            The phase durations that will run, seconds.

        Raises
        ------
        ValueError
            If the light is unknown or the plan is malformed.
        """
        if tls_id not in self.tls_index:
            raise ValueError(f"unknown traffic light {tls_id!r}")
        spec: dict[str, Any] = dict(plan or {})
        if green_s is not None:
            spec["green_s"] = list(green_s)
        if splits is not None:
            spec["splits"] = list(splits)
        if cycle_s is not None:
            spec["cycle_s"] = cycle_s
        k = self.tls_index[tls_id]
        durations = self._durations_for(k, spec)
        if immediate:
            if t_s is None:
                raise ValueError("set_plan(immediate=True) needs t_s")
            self._install(k, durations, t_s)
        else:
            self._pending[k] = durations
        return durations

    def _install(self, k: int, durations: list[float], t_s: float) -> None:
        self._durations[k] = durations
        self.cycle_s[k] = max(sum(durations), 1.0)
        self.t0_s[k] = t_s
        self._pending.pop(k, None)
        self._build_rows(k)
        self.plan_changes.append((t_s, self.tls_ids[k], list(durations)))

    def step(self, t_s: float, dt_s: float) -> None:
        """Install the pending plans whose light starts phase 0 within ``[t_s, t_s + dt_s)``.

        Parameters
        ----------
        t_s : float
            Start of the model step, POSIX seconds.
        dt_s : float
            Step length, seconds.
        """
        if not self._pending:
            return
        for k in list(self._pending):
            pos = (t_s - self.t0_s[k]) % self.cycle_s[k]
            if pos < dt_s - 1e-9 or self.cycle_s[k] - pos < 1e-9:
                self._install(k, self._pending[k], t_s)
