"""A mesoscopic traffic model: the cell-transmission model (CTM) on a road graph, vectorised with numpy.

The network is compiled by :func:`sensors_sim.network.compile_network` (segments = lane groups cut into
cells, movements at the junctions). Every step of ``dt`` (1 s) does, for all cells and movements at once:

1. **Fundamental diagram.** Each cell has a triangular fundamental diagram with free speed ``v_f`` (the speed
   limit), jam density ``k_j`` = 150 veh/km/lane, backward wave speed ``w`` = 18 km/h and capacity ``Q`` =
   lanes × the saturation flow (``capacity_veh_h / lanes``, divided by the fixed green ratio on signalised
   approaches, so 1800 veh/h/lane for the importers' defaults). Where ``Q`` exceeds the triangle's peak
   ``k_j w v_f / (v_f + w)`` the triangle's peak applies. A cell with ``n`` vehicles *sends*
   ``S = min(n · min(1, v_f dt / l), Q dt)`` and *receives* ``R = min(Q dt, min(1, w dt / l) (N - n))``, with
   ``l`` its length and ``N = k_j · lanes · l``. Between the cells of a segment the flow is ``min(S_up, R_down)``.
2. **Junctions.** The last cell of a segment holds one queue per movement (its turning ratio ``beta`` of
   what enters the cell). A movement sends ``min(q_m · min(1, v_f dt / l), lam_m Q dt)`` while its approach
   has green (always, without a signal); the approach's total is capped at ``Q dt``. Where several movements
   enter one segment and together send more than its first cell receives, each gets the same share of its
   demand. The sink (vehicles leaving the network) always receives. A queue that cannot leave fills the last
   cell, then the cells upstream (spill-back), and blocks upstream junctions in turn.
3. **Demand.** Each segment has a peak entry rate (fringe entries and, optionally, local traffic on interior
   segments), times the time-of-day profile, times a log-normal Ornstein–Uhlenbeck noise (mean 1). What
   cannot enter (the first cell has no room left after the junction flows) waits outside the network, as in
   SUMO's insertion queue.
4. **Signals** (:class:`sensors_sim.signals.SignalBank`): the state at the start of the step applies for the
   whole step; yellow stops traffic like red.
5. **Incidents.** ``blocked_lane``: the cell at ``pos_m`` loses the blocked lanes' share of its capacity, and
   the remaining lanes a further ``1 - BLOCK_MERGE_FACTOR`` (merging), or all of it when every lane is
   blocked; over the ``BLOCK_SLOW_ZONE_M`` before it traffic slows to ``BLOCK_PASS_SPEED_KMH`` to merge.
   ``slowdown``: the segment's free speed becomes the mean over its lanes of the (lowered) lane speeds, which
   also lowers the triangle's peak flow.
6. **Route choice, minimal.** Vehicles entering a last cell split by the turning ratios weighted by
   ``(1 - fill)^AVOID_FULL_EXP`` of each target segment: drivers avoid roads that are filling up (without
   this, random turning on real networks with tiny junction-internal links gridlocks small rings).

Vehicles are conserved exactly: :attr:`TrafficModel.inflow_veh` − :attr:`TrafficModel.outflow_veh` is the
change of :meth:`TrafficModel.vehicles` (to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np

from sensors_sim.network import (
    DT_S,
    K_JAM_VEH_KM_LANE,
    WAVE_SPEED_KMH,
    BoolArray,
    FloatArray,
    IntArray,
    bsum,
    compile_network,
)
from sensors_sim.scenario import MAX_ENTRY_X, DemandSpec, IncidentSpec
from sensors_sim.signals import SignalBank

BLOCK_MERGE_FACTOR = 0.8
"""Capacity kept by the open lanes next to a blocked lane (merging friction), dimensionless."""
BLOCK_SLOW_ZONE_M = 50.0
"""Length of road before a stalled vehicle over which traffic slows down to merge past it, metres."""
BLOCK_PASS_SPEED_KMH = 20.0
"""Free speed there, km/h."""
BLOCK_POS_SHARE = 0.7
"""Default position of a stalled vehicle, as a share of the segment length."""
AVOID_FULL_EXP = 2.0
"""Drivers avoid filling segments: turning ratios are weighted by ``(1 - fill)^AVOID_FULL_EXP``."""
AVOID_FLOOR = 0.02
"""Lowest value of ``1 - fill`` in that weight (a full segment still gets a trickle)."""
HALT_FULL_KMH = 5.0
"""Below this cell speed all its vehicles count as halting, km/h."""
HALT_NONE_KMH = 10.0
"""Above this cell speed none do (linear in between), km/h."""


def halting_share(speed_ms: FloatArray) -> FloatArray:
    """Share of a cell's vehicles that are halting, from the cell's space-mean speed.

    Parameters
    ----------
    speed_ms : numpy.ndarray
        Cell speeds, m/s.

    Returns
    -------
    numpy.ndarray
        1 below ``HALT_FULL_KMH``, 0 above ``HALT_NONE_KMH``, linear in between; dimensionless.
    """
    out: FloatArray = np.clip((HALT_NONE_KMH - speed_ms * 3.6) / (HALT_NONE_KMH - HALT_FULL_KMH), 0.0, 1.0)
    return out


class TrafficModel:
    """The CTM state of a road graph, advanced by :meth:`step` (see the module docstring).

    Parameters
    ----------
    G : networkx.MultiDiGraph
        Road graph following ``docs/roadnet-contract.md``.
    t_s : float
        POSIX time of the initial (empty) state, seconds.
    seed : int
        Seed of the demand noise.
    demand : DemandSpec, optional
        Demand; default :class:`~sensors_sim.scenario.DemandSpec` (a morning peak).
    incidents : sequence of IncidentSpec
        Scripted incidents (times relative to ``t_s``).
    warm_start : bool
        Start from the free-flow state of the current demand instead of an empty network: every cell holds
        the vehicles its segment's expected entry flow would put there at free speed (flows propagated
        through the turning ratios), so that the first minutes are not an empty city filling up.
    avoid_full_exp : float
        Exponent ``a`` of the route-choice weight ``(1 - fill)^a`` (0 = fixed turning ratios).
    turning_ratios : mapping, optional
        Turning-ratio overrides (see :func:`~sensors_sim.network.compile_network`).

    Attributes
    ----------
    net : Network
        The compiled graph.
    signals : SignalBank
        Signal plans.
    t_s : float
        Current time, POSIX seconds.
    n : numpy.ndarray
        Vehicles per cell (the last cell of a segment holds the sum of its movement queues ``q``).
    q : numpy.ndarray
        Vehicles per movement queue (in the last cell of the approach).
    waiting : numpy.ndarray
        Vehicles per segment waiting outside the network to enter it.
    inflow_veh, outflow_veh : float
        Vehicles that entered / left the network since the start.
    n_prev : numpy.ndarray
        Vehicles per cell at the start of the last step.
    cell_in, cell_out : numpy.ndarray
        Vehicles that entered / left each cell during the last step.
    cell_speed_ms : numpy.ndarray
        Space-mean speed per cell during the last step, m/s (free speed where empty).
    cell_halting : numpy.ndarray
        :func:`halting_share` of each cell during the last step.
    mov_flow : numpy.ndarray
        Vehicles per movement over the stop line during the last step.
    seg_in, seg_out : numpy.ndarray
        Vehicles that entered / left each segment during the last step.
    green : numpy.ndarray of bool
        Signal state per segment during the last step.
    dt_s : float
        Length of the last step, seconds.
    incident_version : int
        Incremented whenever the set of active incidents changes.
    """

    def __init__(
        self,
        G: nx.MultiDiGraph,
        t_s: float,
        *,
        seed: int = 0,
        demand: DemandSpec | None = None,
        incidents: Sequence[IncidentSpec] = (),
        warm_start: bool = True,
        avoid_full_exp: float = AVOID_FULL_EXP,
        turning_ratios: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.demand = demand or DemandSpec()
        self.net = net = compile_network(G, exit_share=self.demand.exit_share, turning_ratios=turning_ratios)
        self.signals = SignalBank(G, net)
        self.t0_s = float(t_s)
        self.t_s = float(t_s)
        self.rng = np.random.default_rng((seed, 1))
        ns = net.n_segments
        nc = len(net.cell_seg)
        nm = len(net.mov_seg)

        # Cells.
        lanes_c = net.lanes[net.cell_seg].astype(np.float64)
        w = WAVE_SPEED_KMH / 3.6
        kj = K_JAM_VEH_KM_LANE / 1000.0
        self.cell_len = net.cell_len_m
        self.base_vf: FloatArray = net.vf_ms[net.cell_seg].copy()
        self.base_q: FloatArray = net.sat_veh_s_lane[net.cell_seg] * lanes_c
        self.jam: FloatArray = kj * lanes_c * self.cell_len
        self.w_frac: FloatArray = np.minimum(1.0, w * DT_S / self.cell_len)
        self.cap_factor = np.ones(nc)
        self.vf = self.base_vf.copy()
        self.q_cap = self.base_q.copy()
        self._refresh_cells()

        # Index helpers.
        self._is_multi: BoolArray = net.n_cells > 1
        self._mov_last: IntArray = net.last_cell[net.mov_seg]
        self._mv: IntArray = np.flatnonzero(net.mov_to >= 0).astype(np.int64)
        self._mt: IntArray = net.mov_to[self._mv]
        self._sink: IntArray = np.flatnonzero(net.mov_to < 0).astype(np.int64)
        self._seg_jam: FloatArray = bsum(net.cell_seg, self.jam, ns)
        self.avoid_exp = avoid_full_exp

        # Demand: peak rate per segment, veh/s.
        d = self.demand
        interior = d.interior_veh_h_per_lane_km * net.length_m / 1000.0
        rate_h = np.where(net.is_entry, d.entry_veh_h_per_lane, interior) * net.lanes
        rate_h = rate_h * np.exp(self.rng.normal(-0.5 * d.spread**2, d.spread, size=ns))
        rate_h = np.minimum(rate_h, MAX_ENTRY_X * net.capacity_veh_h)
        for sid, r in d.segment_veh_h.items():
            if sid not in net.index:
                raise ValueError(f"demand.segment_veh_h: unknown segment {sid!r}")
            rate_h[net.index[sid]] = r
        self.peak_rate: FloatArray = rate_h / 3600.0
        self._src: IntArray = np.flatnonzero(self.peak_rate > 0).astype(np.int64)
        self.noise = self.rng.normal(0.0, d.noise_sigma, size=len(self._src))

        # Incidents.
        for inc in incidents:
            if inc.segment_id not in net.index:
                raise ValueError(f"incident {inc.incident_id}: unknown segment {inc.segment_id!r}")
            i = net.index[inc.segment_id]
            if inc.lane_index is not None and inc.lane_index >= net.lanes[i]:
                raise ValueError(f"incident {inc.incident_id}: segment {inc.segment_id} has {net.lanes[i]} lanes")
        self.incidents: list[IncidentSpec] = list(incidents)
        self.incident_log: dict[str, dict[str, float | None]] = {
            inc.incident_id: {"start_s": None, "end_s": None} for inc in self.incidents
        }
        self._active: frozenset[str] = frozenset()
        self.incident_version = 0
        self.lane_block_pos: FloatArray = np.full(len(net.lane_ids), np.nan)
        self.lane_speed_factor: FloatArray = np.ones(len(net.lane_ids))

        # State.
        self.n: FloatArray = np.zeros(nc)
        self.q: FloatArray = np.zeros(nm)
        self.waiting: FloatArray = np.zeros(ns)
        self.inflow_veh = 0.0
        self.outflow_veh = 0.0
        self.n_prev = np.zeros(nc)
        self.cell_in = np.zeros(nc)
        self.cell_out = np.zeros(nc)
        self.cell_speed_ms = self.vf.copy()
        self.cell_halting = np.zeros(nc)
        self.mov_flow = np.zeros(nm)
        self.seg_in = np.zeros(ns)
        self.seg_out = np.zeros(ns)
        self.green: BoolArray = self.signals.green(self.t_s)
        self.dt_s = 0.0
        if warm_start:
            self._warm_start()

    # --------------------------------------------------------------------------------------------- set-up

    def _refresh_cells(self) -> None:
        w = WAVE_SPEED_KMH / 3.6
        kj = K_JAM_VEH_KM_LANE / 1000.0
        lanes_c = self.jam / (kj * self.cell_len)
        tri_peak = kj * w * self.vf / (self.vf + w) * lanes_c
        self.q_cap = np.minimum(self.base_q, tri_peak) * self.cap_factor
        self.v_frac: FloatArray = np.minimum(1.0, self.vf * DT_S / self.cell_len)

    def _warm_start(self) -> None:
        """Fill the cells with the free-flow state of the expected flows (see the class docstring)."""
        net = self.net
        ns = net.n_segments
        rate = self.peak_rate * self.demand.factor(self.t_s)
        # Fixed point of flow = rate + sum(beta * upstream flow); a few sweeps converge (exit shares < 1).
        flow = rate.copy()
        mv, mt = self._mv, self._mt
        for _ in range(60):
            new = rate + bsum(mt, net.mov_beta[mv] * flow[net.mov_seg[mv]], ns)
            new = np.minimum(new, self.q_cap[net.first_cell] * 0.9)
            if np.allclose(new, flow, rtol=1e-4, atol=1e-9):
                flow = new
                break
            flow = new
        # Free-flow density k = flow / v_f; signalised approaches also hold on average half a red's queue.
        per_cell = flow[net.cell_seg] * self.cell_len / self.vf
        self.n = np.minimum(per_cell, self.jam * 0.5)
        self.q = self.n[self._mov_last] * net.mov_beta
        self.n[net.last_cell] = bsum(net.mov_seg, self.q, ns)
        self.n_prev = self.n.copy()

    # -------------------------------------------------------------------------------------------- incidents

    def _update_incidents(self, t_s: float) -> None:
        rel = t_s - self.t0_s
        active = frozenset(
            inc.incident_id for inc in self.incidents if inc.start_s <= rel + 1e-9 < inc.start_s + inc.duration_s
        )
        if active == self._active:
            return
        for iid in active - self._active:
            self.incident_log[iid]["start_s"] = rel
        for iid in self._active - active:
            self.incident_log[iid]["end_s"] = rel
        self._active = active
        self.incident_version += 1
        net = self.net
        self.cap_factor = np.ones(len(net.cell_seg))
        self.vf = self.base_vf.copy()
        self.lane_block_pos = np.full(len(net.lane_ids), np.nan)
        self.lane_speed_factor = np.ones(len(net.lane_ids))
        for inc in self.incidents:
            if inc.incident_id not in active:
                continue
            i = net.index[inc.segment_id]
            nl = int(net.lanes[i])
            seg_lanes = np.flatnonzero(net.lane_seg == i)
            hit = seg_lanes if inc.lane_index is None else seg_lanes[net.lane_pos[seg_lanes] == inc.lane_index]
            cells = np.arange(net.first_cell[i], net.last_cell[i] + 1)
            if inc.kind == "blocked_lane":
                pos = inc.pos_m if inc.pos_m is not None else BLOCK_POS_SHARE * net.length_m[i]
                pos = float(min(max(pos, 0.0), net.length_m[i]))
                c = net.cell_at(i, pos)
                n_open = nl - len(hit)
                self.cap_factor[c] *= n_open / nl * BLOCK_MERGE_FACTOR if n_open > 0 else 0.0
                self.lane_block_pos[hit] = np.fmin(self.lane_block_pos[hit], pos)
                if n_open > 0:  # drivers slow down to merge past the stalled vehicle
                    start = net.cell_start_m[cells]
                    near = cells[(start + net.cell_len_m[cells] > pos - BLOCK_SLOW_ZONE_M) & (start <= pos)]
                    self.vf[near] = np.minimum(self.vf[near], BLOCK_PASS_SPEED_KMH / 3.6)
            else:
                v_slow = float(inc.speed_kmh or 0.0) / 3.6
                lane_v = np.full(nl, net.vf_ms[i])
                lane_v[net.lane_pos[hit]] = np.minimum(lane_v[net.lane_pos[hit]], v_slow)
                self.vf[cells] = np.minimum(self.vf[cells], lane_v.mean())
                self.lane_speed_factor[seg_lanes] = lane_v[net.lane_pos[seg_lanes]] / lane_v.mean()
        self._refresh_cells()

    def active_incidents(self) -> frozenset[str]:
        """Ids of the incidents in effect during the last step."""
        return self._active

    # ------------------------------------------------------------------------------------------------ step

    def vehicles(self) -> float:
        """Vehicles on the network now (all cells), not counting those waiting to enter."""
        return float(self.n.sum())

    def set_plan(self, tls_id: str, green_s: Sequence[float] | None = None, **kw: Any) -> list[float]:
        """Give a traffic light a new plan (see :meth:`sensors_sim.signals.SignalBank.set_plan`).

        Parameters
        ----------
        tls_id : str
            Traffic light.
        green_s : sequence of float, optional
            Green time per green phase, seconds.
        **kw : Any
            ``plan``, ``cycle_s``, ``splits``, ``immediate`` of ``SignalBank.set_plan``.

        Returns
        -------
        list of float
            Phase durations that will run, seconds.
        """
        return self.signals.set_plan(tls_id, green_s=green_s, t_s=self.t_s, **kw)

    def _split(self) -> FloatArray:
        """Turning ratios of the vehicles entering the last cells now: ``beta`` weighted by ``(1 - fill)^a``.

        ``fill`` is the share of the target segment's jam storage in use and ``a`` = ``AVOID_FULL_EXP``;
        ratios are renormalised per approach (so they sum to exactly 1), the sink is never avoided.
        """
        net = self.net
        if self.avoid_exp <= 0:
            return net.mov_beta
        seg_n = bsum(net.cell_seg, self.n, net.n_segments)
        fill = np.clip(seg_n / self._seg_jam, 0.0, 1.0)
        w = net.mov_beta.copy()
        w[self._mv] *= np.maximum(1.0 - fill[self._mt], AVOID_FLOOR) ** self.avoid_exp
        tot = bsum(net.mov_seg, w, net.n_segments)
        out: FloatArray = w / tot[net.mov_seg]
        return out

    def step(self, t_s: float) -> None:
        """Advance the state to ``t_s`` in one step.

        Parameters
        ----------
        t_s : float
            New POSIX time, seconds; ``0 < t_s - self.t_s <= 1`` (the CFL condition of the cells).

        Raises
        ------
        ValueError
            If the step is not in ``(0, 1]`` seconds.
        """
        dt = t_s - self.t_s
        if not 0.0 < dt <= DT_S + 1e-9:
            raise ValueError(f"step: dt must be in (0, {DT_S}] s, got {dt}")
        net = self.net
        ns = net.n_segments
        self.signals.step(self.t_s, dt)
        self._update_incidents(self.t_s)
        green = self.signals.green(self.t_s)

        n = self.n
        first, last = net.first_cell, net.last_cell
        if dt == DT_S:
            q_dt, v_dt, w_dt = self.q_cap, self.v_frac, self.w_frac
        else:
            q_dt, v_dt, w_dt = self.q_cap * dt, self.v_frac * (dt / DT_S), self.w_frac * (dt / DT_S)
        send = np.minimum(n * v_dt, q_dt)
        recv = self.jam - n
        recv *= w_dt
        np.minimum(recv, q_dt, out=recv)
        np.maximum(recv, 0.0, out=recv)
        # Flow from each cell to the next one of its segment (none out of a segment's last cell).
        y_cell = np.empty_like(n)
        np.minimum(send[:-1], recv[1:], out=y_cell[:-1])
        y_cell[last] = 0.0

        # Junctions.
        ml = self._mov_last
        s_m = np.minimum(self.q * v_dt[ml], net.mov_lam * q_dt[ml]) * green[net.mov_seg]
        tot = bsum(net.mov_seg, s_m, ns)
        cap = q_dt[last]
        scale = np.divide(cap, tot, out=np.ones(ns), where=tot > cap)
        s_m *= scale[net.mov_seg]
        mv, mt = self._mv, self._mt
        dem = bsum(mt, s_m[mv], ns)
        r_first = recv[first]
        ratio = np.divide(r_first, dem, out=np.ones(ns), where=dem > r_first)
        y = s_m
        y[mv] *= ratio[mt]
        moved_in = bsum(mt, y[mv], ns)

        # Demand.
        src = self._src
        if len(src):
            d = self.demand
            a = math.exp(-dt / d.noise_tau_s)
            self.noise = self.noise * a + d.noise_sigma * math.sqrt(1.0 - a * a) * self.rng.standard_normal(len(src))
            mult = np.exp(self.noise - 0.5 * d.noise_sigma**2)
            self.waiting[src] += self.peak_rate[src] * d.factor(self.t_s) * mult * dt
        src_in = np.minimum(self.waiting, np.clip(r_first - moved_in, 0.0, None))
        self.waiting -= src_in
        inflow_first = moved_in + src_in

        # Update.
        cell_in = np.empty_like(n)
        cell_in[0] = 0.0
        cell_in[1:] = y_cell[:-1]
        cell_in[first] += inflow_first
        new = n - y_cell
        new += cell_in
        inflow_last = np.where(self._is_multi, y_cell[last - 1], inflow_first)
        self.q += self._split() * inflow_last[net.mov_seg] - y  # y <= q: never negative (to rounding)
        dep = bsum(net.mov_seg, y, ns)
        new[last] = bsum(net.mov_seg, self.q, ns)
        cell_out = y_cell
        cell_out[last] = dep

        # Step outputs.
        self.n_prev = n
        self.n = new
        self.cell_out = cell_out
        self.cell_in = cell_in
        speed = np.divide(cell_out * self.cell_len, n * dt, out=self.vf.copy(), where=n > 1e-9)
        self.cell_speed_ms = np.minimum(speed, self.vf, out=speed)
        self.cell_halting = halting_share(self.cell_speed_ms)
        self.mov_flow = y
        self.seg_in = inflow_first
        self.seg_out = dep
        self.green = green
        self.dt_s = dt
        self.inflow_veh += float(src_in.sum())
        self.outflow_veh += float(y[self._sink].sum())
        self.t_s = float(t_s)
