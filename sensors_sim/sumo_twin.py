"""SUMO twin: a microscopic SUMO scenario as the city, publishing like citybrain's devices, driven by its plans.

:class:`SumoTwin` runs a SUMO scenario (a ``.sumocfg``, or a ``.net.xml`` plus route files) with libsumo
(in-process; TraCI over a socket as the fallback) and:

- **devices**: reads the road graph :func:`roadnet.load_network` builds from the same ``.net.xml`` (so segment,
  lane and detector ids are citybrain's: ``loop_mid_<lane>``, ``loop_stop_<lane>``, ``cam_<segment>``) and adds
  one SUMO induction loop per graph loop (same lane and position) and one lane-area detector per lane of each
  graph camera (its zone: the last ``zone_length_m`` of the lane), in a generated additional file. Every SUMO
  step it aggregates them into device-schema v1 events (``sensors_sim.events``), ``ts`` = end of the interval:

  - loop ``count``: vehicles whose back left the loop during the interval (SUMO's E1 ``nVehContrib``; a vehicle
    leaving the loop sideways by a lane change, vanishing, or still over it when its front leaves the lane is
    not counted, like SUMO); ``occupancy``: share of the interval with a vehicle over the loop;
    ``speed_kmh``: mean of length / time over the loop of the counted vehicles (``null`` when none);
  - camera ``counts``: vehicles that first appeared in the zone during the interval (any lane, once), by class
    (vehicle type id ``car``/``truck``/``bus``, else from the vehicle class); ``queue_len_veh``: halting
    vehicles (SUMO jam: < 5 km/h, gaps ≤ 10 m) in the zone at ``ts``, summed over lanes; ``queue_max_veh``: its
    maximum over the interval's steps; ``occupancy``: mean share of the zone covered; ``speed_kmh``: mean
    speed of the vehicles in the zone over the interval's steps (``null`` when it stayed empty);

- **publishing**: any :class:`sensors_sim.publish.Publisher` (MQTT exactly like the simulator's devices, Kafka,
  JSONL), paced at ``speed`` simulated seconds per wall second;
- **closed loop**: plans drained from a :class:`sensors_sim.recommendations.PlanInbox` (citybrain's
  ``signal-recommendations``) are checked against the light's phases (:func:`sensors_sim.signals.plan_durations`:
  the harness's limits) and installed at the light's next start of phase 0 with
  ``trafficlight.setProgramLogic`` (yellow and red phases keep their duration), as the harness's closed loop
  does.

SUMO time ``t`` (s) is reported as ``start + t`` (default start 2025-01-06T07:00:00Z = the harness's t = 0).
The scenario folder may be read-only: SUMO runs on symbolic links to its input files in a work folder, where
every SUMO output (the scenario's own detector files included) is written.

Needs the optional extra ``citybrain[sumo]`` (eclipse-sumo, libsumo, traci, sumolib 1.28.0).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import networkx as nx

import roadnet
from sensors_sim.events import Event, iso_utc
from sensors_sim.publish import Publisher
from sensors_sim.recommendations import PlanInbox
from sensors_sim.signals import plan_durations

INSTALL_HINT = "pip install 'citybrain[sumo]'"

try:  # the TraCI constants are pure Python and shared by both backends
    import traci.constants as tc
except ImportError as exc:
    raise ImportError(
        f"sensors_sim.sumo_twin needs SUMO (eclipse-sumo, libsumo, traci, sumolib 1.28.0): {INSTALL_HINT}"
    ) from exc

DEFAULT_START = datetime(2025, 1, 6, 7, 0, tzinfo=UTC)
"""Wall-clock time of SUMO t = 0 (the harness's simulated start)."""
DET_PREFIX = "cb_"
"""Prefix of the SUMO detectors the twin adds (so they never clash with the scenario's own)."""
CLASSES = ("car", "truck", "bus")
_VCLASS = {"bus": "bus", "coach": "bus", "truck": "truck", "trailer": "truck", "delivery": "truck"}


def backend_module(name: str = "auto") -> ModuleType:
    """The SUMO control module: ``libsumo`` (in-process), ``traci`` (socket), or ``auto`` (libsumo, else traci).

    Parameters
    ----------
    name : str
        ``auto``, ``libsumo`` or ``traci``.

    Returns
    -------
    module
        The backend.

    Raises
    ------
    ImportError
        If the backend is not installed (with the install hint).
    ValueError
        If ``name`` is none of the above.
    """
    if name not in ("auto", "libsumo", "traci"):
        raise ValueError(f"backend must be auto, libsumo or traci, got {name!r}")
    if name in ("auto", "libsumo"):
        try:
            import libsumo

            return libsumo
        except ImportError:
            if name == "libsumo":
                raise ImportError(f"libsumo is not installed: {INSTALL_HINT}") from None
    try:
        import traci

        return traci
    except ImportError:  # pragma: no cover - traci.constants imported above
        raise ImportError(f"traci is not installed: {INSTALL_HINT}") from None


def sumo_binary(name: str = "sumo") -> str:
    """Path of a SUMO executable from the ``eclipse-sumo`` wheel (``SUMO_HOME/bin``), else ``name`` on PATH.

    Parameters
    ----------
    name : str
        Executable (``sumo``, ``netconvert``, ...).

    Returns
    -------
    str
        Path or bare name.
    """
    try:
        import sumo

        p = Path(sumo.SUMO_HOME) / "bin" / name
        if p.exists():
            return str(p)
    except ImportError:
        pass
    return shutil.which(name) or name


def sumocfg_inputs(sumocfg: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """The input files a ``.sumocfg`` names, absolute.

    Parameters
    ----------
    sumocfg : path
        SUMO configuration file.

    Returns
    -------
    dict
        ``{"net-file": [...], "route-files": [...], "additional-files": [...]}`` (each possibly empty).
    """
    cfg = Path(sumocfg).resolve()
    out: dict[str, list[Path]] = {"net-file": [], "route-files": [], "additional-files": []}
    inp = ET.parse(cfg).getroot().find("input")
    for el in inp if inp is not None else []:
        key = el.tag
        if key in out:
            out[key] = [(cfg.parent / v.strip()).resolve() for v in el.get("value", "").split(",") if v.strip()]
    return out


@dataclass
class _Loop:
    did: str
    sumo_id: str
    segment_id: str
    lane: str
    lane_index: int
    role: str
    interval_s: int
    pos_m: float
    tail_m: float  # loop to lane end, m
    on: dict[str, float] = field(default_factory=dict)  # vehicle -> entry time, while over the loop
    done: dict[tuple[str, float], float] = field(default_factory=dict)  # (vehicle, entry) accounted -> leave
    start_s: float = 0.0
    occ_s: float = 0.0
    count: int = 0
    speed_sum: float = 0.0


@dataclass
class _Camera:
    did: str
    segment_id: str
    sumo_ids: list[str]
    interval_s: int
    prev: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    qmax: int = 0
    occ_sum: float = 0.0
    v_sum: float = 0.0
    v_n: int = 0
    steps: int = 0


@dataclass
class TwinStats:
    """What a twin run did.

    Attributes
    ----------
    events : dict of str to int
        Events produced per type (``loop``, ``camera``).
    published : int
        Events handed to the publisher.
    plans_installed : int
        Plans switched in at a cycle boundary.
    steps : int
        SUMO steps run.
    sim_s : float
        SUMO time reached, s.
    wall_s : float
        Wall time of :meth:`SumoTwin.run`, s.
    """

    events: dict[str, int] = field(default_factory=lambda: {"loop": 0, "camera": 0})
    published: int = 0
    plans_installed: int = 0
    steps: int = 0
    sim_s: float = 0.0
    wall_s: float = 0.0


class SumoTwin:
    """A SUMO scenario observed by citybrain's detector layout and controlled by its signal plans.

    Parameters
    ----------
    sumocfg : path, optional
        SUMO configuration; its net, route and additional files are used.
    net : path, optional
        ``.net.xml`` (instead of, or overriding, the configuration's net file).
    routes : iterable of path
        Route files (added to the configuration's).
    network : path, optional
        The file citybrain reads as its road network (default: the ``.net.xml``); its detectors are the ones
        observed. Any format ``roadnet.load_network`` reads, as long as lane ids are SUMO's.
    graph : networkx.MultiDiGraph, optional
        The road graph itself (instead of ``network``).
    start : datetime
        Wall-clock time of SUMO t = 0, timezone-aware.
    backend : str
        ``auto`` (libsumo, else traci), ``libsumo`` or ``traci``.
    seed : int, optional
        SUMO ``--seed``.
    end_s : float, optional
        SUMO ``--end``, s.
    work_dir : path, optional
        Where SUMO runs and writes (default: a temporary folder removed by :meth:`close`).
    detector_output : path, optional
        Write SUMO's own E1/E2 output of the added detectors here (for checks); default nowhere.
    extra_args : iterable of str
        Further SUMO options.

    Attributes
    ----------
    G : networkx.MultiDiGraph
        citybrain's road graph.
    tr : module
        The SUMO backend (after :meth:`start`).
    t_s : float
        SUMO time, s.
    stats : TwinStats
        Counts.
    """

    def __init__(
        self,
        sumocfg: str | os.PathLike[str] | None = None,
        *,
        net: str | os.PathLike[str] | None = None,
        routes: Iterable[str | os.PathLike[str]] = (),
        network: str | os.PathLike[str] | None = None,
        graph: nx.MultiDiGraph | None = None,
        start: datetime = DEFAULT_START,
        backend: str = "auto",
        seed: int | None = None,
        end_s: float | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        detector_output: str | os.PathLike[str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if sumocfg is None and net is None:
            raise ValueError("give a .sumocfg or a .net.xml")
        self.sumocfg = Path(sumocfg).resolve() if sumocfg is not None else None
        inputs = sumocfg_inputs(self.sumocfg) if self.sumocfg else {"net-file": [], "additional-files": []}
        if net is None and not inputs["net-file"]:
            raise ValueError(f"{sumocfg}: names no net-file; give --net")
        self.net_file: Path = Path(net).resolve() if net is not None else inputs["net-file"][0]
        self.routes = [Path(r).resolve() for r in routes]
        self.additional = list(inputs["additional-files"])
        self.G: nx.MultiDiGraph = graph if graph is not None else roadnet.load_network(network or self.net_file)
        self.start_time = start
        self.t0_s = start.timestamp()
        self.backend_name = backend
        self.tr: Any = backend_module(backend)
        self.seed = seed
        self.end_s = end_s
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="citybrain-sumo-")).resolve()
        self.detector_output = Path(detector_output).resolve() if detector_output is not None else None
        self.extra_args = list(extra_args)
        self.t_s = 0.0
        self.stats = TwinStats()
        self.loops: list[_Loop] = []
        self.cameras: list[_Camera] = []
        self._lights: dict[str, dict[str, Any]] = {}
        self._durations: dict[str, list[float]] = {}
        self._pending: dict[str, list[float]] = {}
        self._prev_phase: dict[str, int] = {}
        self._vclass: dict[str, str] = {}
        self.plan_changes: list[tuple[float, str, list[float]]] = []
        self.warnings: list[str] = []
        self._present: set[str] | None = None
        self._running = False

    # ------------------------------------------------------------------------------------------- set-up

    def _lane_lengths(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for _, _, d in self.G.edges(data=True):
            for ln in d.get("lane_detail", []):
                out[str(ln["lane_id"])] = float(ln.get("length_m", d["length_m"]))
        return out

    def _write_detectors(self) -> Path:
        """The additional file with one SUMO detector per graph loop and per camera lane."""
        lengths = self._lane_lengths()
        out_file = str(self.detector_output) if self.detector_output else os.devnull
        root = ET.Element("additional")
        for did, d in sorted(self.G.graph.get("detectors", {}).items()):
            kind = d.get("kind")
            interval = round(float(d["interval_s"]))
            if kind == "loop":
                lane = str(d["lane"])
                if lane not in lengths:
                    continue
                length = lengths[lane]
                tail = float(d.get("dist_to_stop_line_m", length - float(d["pos_m"])))
                pos = length - tail if d.get("role") == "stop_line" else float(d["pos_m"])
                pos = min(max(pos, 0.1), length - 0.1)
                sid = DET_PREFIX + did
                ET.SubElement(
                    root,
                    "inductionLoop",
                    id=sid,
                    lane=lane,
                    pos=f"{pos:.2f}",
                    period=str(interval),
                    file=out_file,
                )
                self.loops.append(
                    _Loop(
                        did,
                        sid,
                        str(d["segment_id"]),
                        lane,
                        int(d["lane_index"]),
                        str(d["role"]),
                        interval,
                        pos,
                        length - pos,
                    )
                )
            elif kind == "camera":
                zone = float(d.get("zone_length_m", d.get("dist_to_stop_line_m", 100.0)))
                ids = []
                for i, lane in enumerate(d.get("lanes", [])):
                    if lane not in lengths:
                        continue
                    length = lengths[lane]
                    sid = f"{DET_PREFIX}{did}__{i}"
                    ET.SubElement(
                        root,
                        "laneAreaDetector",
                        id=sid,
                        lane=lane,
                        pos=f"{max(length - zone, 0.0):.2f}",
                        endPos=f"{length:.2f}",
                        period=str(interval),
                        file=out_file,
                    )
                    ids.append(sid)
                if ids:
                    self.cameras.append(_Camera(did, str(d["segment_id"]), ids, interval))
        path = self.work_dir / "citybrain_detectors.add.xml"
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
        return path

    def _link_inputs(self) -> list[str]:
        """Symbolic links (else copies) to the scenario's inputs in the work folder; returns the SUMO options."""
        args: list[str] = []
        if self.sumocfg is not None:
            src_dir = self.sumocfg.parent
            for f in [self.sumocfg, *itertools.chain(*sumocfg_inputs(self.sumocfg).values())]:
                try:
                    rel = f.relative_to(src_dir)
                except ValueError:
                    continue  # outside the scenario folder: SUMO reads it by its absolute path
                dst = self.work_dir / "input" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    try:
                        dst.symlink_to(f)
                    except OSError:
                        shutil.copyfile(f, dst)
            args += ["-c", str(self.work_dir / "input" / self.sumocfg.name)]
        return args

    def _linked(self, f: Path) -> Path:
        """Where SUMO sees a scenario file: its link in the work folder, or itself when outside the scenario."""
        if self.sumocfg is not None and f.is_relative_to(self.sumocfg.parent):
            return self.work_dir / "input" / f.relative_to(self.sumocfg.parent)
        return f

    def start(self) -> Self:
        """Start SUMO.

        Returns
        -------
        SumoTwin
            Itself.

        Raises
        ------
        RuntimeError
            If SUMO refuses the scenario.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        det = self._write_detectors()
        cmd = [sumo_binary("sumo"), *self._link_inputs()]
        cfg_inputs = sumocfg_inputs(self.sumocfg) if self.sumocfg else {"net-file": [], "route-files": []}
        if self.net_file not in cfg_inputs["net-file"]:
            cmd += ["--net-file", str(self.net_file)]
        if self.routes:
            cmd += ["--route-files", ",".join(str(p) for p in [*cfg_inputs["route-files"], *self.routes])]
        adds = [str(self._linked(a)) for a in self.additional]  # the scenario's own, then ours
        cmd += ["--additional-files", ",".join([*adds, str(det)])]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.end_s is not None:
            cmd += ["--end", str(self.end_s)]
        cmd += ["--no-step-log", "true", *self.extra_args]
        cwd = os.getcwd()
        os.chdir(self.work_dir)  # relative outputs of the scenario land here
        try:
            self.tr.start(cmd)
        except Exception as exc:
            raise RuntimeError(f"SUMO did not start ({' '.join(cmd)}): {exc}") from exc
        finally:
            os.chdir(cwd)
        self._running = True
        self.t_s = float(self.tr.simulation.getTime())
        for lp in self.loops:
            lp.start_s = self.t_s
            self.tr.inductionloop.subscribe(lp.sumo_id, [tc.LAST_STEP_VEHICLE_NUMBER])
        for cam in self.cameras:
            cam.counts = dict.fromkeys(CLASSES, 0)
            for e2 in cam.sumo_ids:
                self.tr.lanearea.subscribe(
                    e2,
                    [
                        tc.LAST_STEP_VEHICLE_ID_LIST,
                        tc.JAM_LENGTH_VEHICLE,
                        tc.LAST_STEP_OCCUPANCY,
                        tc.LAST_STEP_MEAN_SPEED,
                        tc.LAST_STEP_VEHICLE_NUMBER,
                    ],
                )
        sumo_tls = set(self.tr.trafficlight.getIDList())
        for tid, rec in self.G.graph.get("traffic_lights", {}).items():
            if tid in sumo_tls:
                phases = sorted(rec.get("phases", []), key=lambda p: int(p["index"]))
                self._lights[tid] = rec
                self._durations[tid] = [float(p["duration_s"]) for p in phases]
                self.tr.trafficlight.subscribe(tid, [tc.TL_CURRENT_PHASE])
                self._prev_phase[tid] = int(self.tr.trafficlight.getPhase(tid))
        return self

    def close(self) -> None:
        """Stop SUMO (writes its outputs) and remove the temporary work folder."""
        if self._running:
            self._running = False
            self.tr.close()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def tls_ids(self) -> list[str]:
        """The traffic lights the twin can plan (in the graph and in SUMO; after :meth:`start`)."""
        return list(self._lights)

    # ------------------------------------------------------------------------------------------- devices

    def device_ids(self) -> list[tuple[str, str]]:
        """``(type, id)`` of every observed device (for ``MqttPublisher.announce``)."""
        return [("loop", lp.did) for lp in self.loops] + [("camera", c.did) for c in self.cameras]

    def _vehicle_class(self, vid: str) -> str:
        c = self._vclass.get(vid)
        if c is None:
            tid = str(self.tr.vehicle.getTypeID(vid))
            c = tid if tid in CLASSES else _VCLASS.get(str(self.tr.vehicle.getVehicleClass(vid)), "car")
            self._vclass[vid] = c
        return c

    def _drove_off(self, vid: str, lp: _Loop) -> bool:
        """Whether a vehicle leaving exactly at a step boundary really drove off the loop (SUMO counts it)."""
        tr = self.tr
        if self._present is None:
            self._present = set(tr.vehicle.getIDList())
        if vid not in self._present:
            return False  # arrived or teleported
        lane = str(tr.vehicle.getLaneID(vid))
        if not lane:
            return False
        back = float(tr.vehicle.getLanePosition(vid)) - float(tr.vehicle.getLength(vid))
        if lane == lp.lane:
            return back >= lp.pos_m - 1e-6
        if lane.startswith(":"):  # on the junction: its back must have passed the loop
            return lp.tail_m + back >= -1e-6
        return lane.rsplit("_", 1)[0] != lp.segment_id  # another lane of the same edge: a lane change

    def _observe_loops(self, t: float) -> None:
        subs = self.tr.inductionloop.getAllSubscriptionResults()
        for lp in self.loops:
            r = subs.get(lp.sumo_id, {})
            if r.get(tc.LAST_STEP_VEHICLE_NUMBER, 0) > 0:
                seen = set()
                for vid, length, entry, leave, _typ in self.tr.inductionloop.getVehicleData(lp.sumo_id):
                    seen.add(vid)
                    if leave < 0:
                        lp.on[vid] = entry
                        continue
                    if (vid, entry) in lp.done:  # a vehicle's record is reported again the step after it left
                        continue
                    lp.done[(vid, entry)] = leave
                    lp.occ_s += leave - max(entry, lp.start_s)
                    lp.on.pop(vid, None)
                    if abs(leave - round(leave)) > 1e-9 or self._drove_off(vid, lp):
                        lp.count += 1
                        lp.speed_sum += length / max(leave - entry, 1e-6)
                gone = [v for v in lp.on if v not in seen]
            else:
                gone = list(lp.on)
            for vid in gone:  # vanished while over the loop (arrival, teleport)
                lp.occ_s += t - max(lp.on.pop(vid), lp.start_s)

    def _observe_cameras(self) -> None:
        subs = self.tr.lanearea.getAllSubscriptionResults()
        for cam in self.cameras:
            ids: set[str] = set()
            q = 0
            for e2 in cam.sumo_ids:
                r = subs[e2]
                ids.update(r[tc.LAST_STEP_VEHICLE_ID_LIST])
                q += int(r[tc.JAM_LENGTH_VEHICLE])
                cam.occ_sum += float(r[tc.LAST_STEP_OCCUPANCY])
                n = int(r[tc.LAST_STEP_VEHICLE_NUMBER])
                if n > 0:
                    cam.v_sum += float(r[tc.LAST_STEP_MEAN_SPEED]) * n
                    cam.v_n += n
            for vid in ids - cam.prev:
                cls = self._vehicle_class(vid)
                cam.counts[cls] = cam.counts.get(cls, 0) + 1
            cam.prev = ids
            cam.qmax = max(cam.qmax, q)
            cam.steps += 1

    def _emit(self, t: float) -> list[Event]:
        ti = round(t)
        events: list[Event] = []
        if abs(t - ti) > 1e-9:
            return events
        ts = iso_utc(self.t0_s + ti)
        for lp in self.loops:
            if ti % lp.interval_s:
                continue
            span = t - lp.start_s
            occ = lp.occ_s + sum(t - max(en, lp.start_s) for en in lp.on.values())
            n = lp.count
            events.append(
                {
                    "type": "loop",
                    "detector_id": lp.did,
                    "segment_id": lp.segment_id,
                    "lane": lp.lane,
                    "lane_index": lp.lane_index,
                    "role": lp.role,
                    "ts": ts,
                    "interval_s": lp.interval_s,
                    "count": n,
                    "occupancy": round(min(occ / span, 1.0), 4) if span > 0 else 0.0,
                    "speed_kmh": round(lp.speed_sum / n * 3.6, 1) if n else None,
                }
            )
            lp.start_s, lp.occ_s, lp.count, lp.speed_sum = t, 0.0, 0, 0.0
            lp.done = {k: v for k, v in lp.done.items() if v >= t - 5}
        loops_n = len(events)
        if self.cameras and any(ti % c.interval_s == 0 for c in self.cameras):
            subs = self.tr.lanearea.getAllSubscriptionResults()
        for cam in self.cameras:
            if ti % cam.interval_s:
                continue
            qnow = sum(int(subs[e2][tc.JAM_LENGTH_VEHICLE]) for e2 in cam.sumo_ids)
            counts = dict(cam.counts)
            steps = max(cam.steps, 1)
            events.append(
                {
                    "type": "camera",
                    "camera_id": cam.did,
                    "segment_id": cam.segment_id,
                    "lanes": len(cam.sumo_ids),
                    "ts": ts,
                    "interval_s": cam.interval_s,
                    "counts": counts,
                    "count_total": sum(counts.values()),
                    "queue_len_veh": qnow,
                    "queue_max_veh": max(cam.qmax, qnow),
                    "occupancy": round(min(cam.occ_sum / steps / len(cam.sumo_ids) / 100.0, 1.0), 4),
                    "speed_kmh": round(cam.v_sum / cam.v_n * 3.6, 1) if cam.v_n else None,
                }
            )
            cam.counts = dict.fromkeys(CLASSES, 0)
            cam.qmax, cam.occ_sum, cam.v_sum, cam.v_n, cam.steps = 0, 0.0, 0.0, 0, 0
        self.stats.events["loop"] += loops_n
        self.stats.events["camera"] += len(events) - loops_n
        return events

    # ----------------------------------------------------------------------------------------------- plans

    def plan_for(self, tls_id: str, plan: Mapping[str, Any]) -> list[float]:
        """Check a plan for a light and return the phase durations it would run (harness limits applied).

        Parameters
        ----------
        tls_id : str
            Traffic light (citybrain's id = SUMO's).
        plan : mapping
            ``{"green_s": [...]}`` or ``{"cycle_s": C, "splits": [...]}``, one value per green phase.

        Returns
        -------
        list of float
            Duration of every phase, s.

        Raises
        ------
        ValueError
            If the light is not a SUMO light of the graph, or the plan does not fit its phases.
        """
        rec = self._lights.get(tls_id)
        if rec is None:
            raise ValueError(f"unknown traffic light {tls_id!r} (not a SUMO light of this network)")
        kinds = [str(p["kind"]) for p in sorted(rec["phases"], key=lambda p: int(p["index"]))]
        try:
            return plan_durations(tls_id, kinds, self._durations[tls_id], plan, self.warnings)
        except TypeError as exc:
            raise ValueError(f"{tls_id}: malformed plan: {exc}") from None

    def set_plan(self, tls_id: str, plan: Mapping[str, Any]) -> list[float]:
        """Give a light a plan, installed at its next start of phase 0 (a later plan replaces a pending one).

        Parameters
        ----------
        tls_id : str
            Traffic light.
        plan : mapping
            ``{"green_s": [...]}`` or ``{"cycle_s": C, "splits": [...]}``.

        Returns
        -------
        list of float
            The phase durations that will run, s.

        Raises
        ------
        ValueError
            As :meth:`plan_for`, or when SUMO's program of the light has another number of phases.
        """
        durations = self.plan_for(tls_id, plan)
        logic = self._current_logic(tls_id)
        if len(logic.phases) != len(durations):
            raise ValueError(
                f"{tls_id}: SUMO's program {logic.programID!r} has {len(logic.phases)} phases, "
                f"the network {len(durations)}"
            )
        self._pending[tls_id] = durations
        return durations

    def apply_inbox(self, inbox: PlanInbox) -> None:
        """Schedule every plan waiting in ``inbox``; count applied and rejected plans there.

        Parameters
        ----------
        inbox : PlanInbox
            citybrain's recommendations.
        """
        for tls, plan in inbox.drain().items():
            try:
                self.set_plan(tls, plan)
            except ValueError as exc:
                inbox.rejected(tls, str(exc))
            else:
                inbox.applied(tls)

    def _current_logic(self, tls_id: str) -> Any:
        prog = self.tr.trafficlight.getProgram(tls_id)
        for logic in self.tr.trafficlight.getAllProgramLogics(tls_id):
            if logic.programID == prog:
                return logic
        raise ValueError(f"{tls_id}: SUMO program {prog!r} not found")

    def phase_durations(self, tls_id: str) -> list[float]:
        """The phase durations of the program a SUMO light runs now (read back from SUMO).

        Parameters
        ----------
        tls_id : str
            Traffic light.

        Returns
        -------
        list of float
            Seconds per phase.
        """
        return [float(p.duration) for p in self._current_logic(tls_id).phases]

    def _install_due(self, inbox: PlanInbox | None) -> None:
        if not self._lights:
            return
        subs = self.tr.trafficlight.getAllSubscriptionResults()
        for tid in self._lights:
            ph = int(subs.get(tid, {}).get(tc.TL_CURRENT_PHASE, self._prev_phase[tid]))
            if tid in self._pending and ph == 0 and self._prev_phase[tid] != 0:  # a new cycle starts now
                durations = self._pending.pop(tid)
                logic = self._current_logic(tid)
                Logic, Phase = self.tr.trafficlight.Logic, self.tr.trafficlight.Phase
                phases = [Phase(d, p.state, d, d) for d, p in zip(durations, logic.phases, strict=True)]
                # phase 0 began during the last step (SUMO reports the state after it): the new phase 0 runs
                # its full duration from that start, like every later cycle of the plan
                spent = float(self.tr.trafficlight.getSpentDuration(tid))
                self.tr.trafficlight.setProgramLogic(tid, Logic(logic.programID, logic.type, 0, phases))
                self.tr.trafficlight.setPhaseDuration(tid, max(durations[0] - spent, 1.0))
                self._durations[tid] = list(durations)
                self.plan_changes.append((self.t_s - spent, tid, list(durations)))
                self.stats.plans_installed += 1
                if inbox is not None:
                    inbox.installed(tid)
            self._prev_phase[tid] = ph

    # ------------------------------------------------------------------------------------------------ run

    def step(self, inbox: PlanInbox | None = None) -> list[Event]:
        """Run one SUMO step; install due plans; return the events whose interval ended now.

        Parameters
        ----------
        inbox : PlanInbox, optional
            Recommendations to schedule before the step.

        Returns
        -------
        list of dict
            Loop events then camera events.
        """
        if inbox is not None:
            self.apply_inbox(inbox)
        self.tr.simulationStep()
        t = float(self.tr.simulation.getTime())
        self.t_s = t
        self.stats.steps += 1
        self.stats.sim_s = t
        self._present = None
        self._observe_loops(t)
        self._observe_cameras()
        self._install_due(inbox)
        return self._emit(t)

    def finished(self) -> bool:
        """Whether SUMO has nothing left to simulate (no vehicle running or waiting to depart)."""
        return bool(self.tr.simulation.getMinExpectedNumber() <= 0)

    def run(
        self,
        publisher: Publisher,
        *,
        duration_s: float | None = None,
        speed: float = 0.0,
        inbox: PlanInbox | None = None,
        on_progress: Callable[[TwinStats, datetime], None] | None = None,
        stop: threading.Event | None = None,
    ) -> TwinStats:
        """Step SUMO and publish every event, paced against the wall clock; apply plans from ``inbox``.

        Parameters
        ----------
        publisher : Publisher
            Where the events go (an ``announce(devices)`` method, as MQTT's, is called first).
        duration_s : float, optional
            SUMO seconds to run; default until SUMO has no vehicles left (or its ``--end``).
        speed : float
            Simulated seconds per wall second; ``0`` or ``inf``: as fast as possible.
        inbox : PlanInbox, optional
            citybrain's recommendations (closed loop).
        on_progress : callable, optional
            Called after every step that produced events, with the counts and the simulated time (UTC).
        stop : threading.Event, optional
            Set it to stop after the current step.

        Returns
        -------
        TwinStats
            Counts (also :attr:`stats`).
        """
        announce = getattr(publisher, "announce", None)
        if callable(announce):
            announce(self.device_ids())
        stop = stop or threading.Event()
        paced = 0 < speed < math.inf
        t_begin = self.t_s
        wall0 = time.monotonic()
        end = t_begin + duration_s if duration_s is not None else math.inf
        while not stop.is_set() and self.t_s < end - 1e-9:
            if duration_s is None and self.t_s > t_begin and self.finished():
                break
            if self.end_s is not None and self.t_s >= self.end_s:
                break
            events = self.step(inbox)
            if paced:
                delay = wall0 + (self.t_s - t_begin) / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            for ev in events:
                publisher.publish(ev)
            self.stats.published += len(events)
            if events and on_progress is not None:
                on_progress(self.stats, datetime.fromtimestamp(self.t0_s + self.t_s, UTC))
        publisher.flush()
        self.stats.wall_s += time.monotonic() - wall0
        return self.stats
