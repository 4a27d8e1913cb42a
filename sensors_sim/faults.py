"""Device faults applied to an event stream: what real loops and cameras do wrong.

Used by the simulator (scenario ``faults``), by ``citybrain replay --faults`` and by the benches, to check
that estimates and incident detection survive broken detectors. Each faulty device gets one kind:

- ``silent``: its readings are dropped (dead detector, cut cable);
- ``stuck``: every reading repeats the values of its first faulty one (frozen controller);
- ``zero``: counts and occupancy read 0 (speed null, camera queues 0) while traffic flows (a loop that
  stopped detecting);
- ``duplicate``: readings are sent twice in a row (a share ``rate`` of them);
- ``late``: readings arrive ``delay_s`` seconds after their ``ts`` (with the readings of that later time);
- ``out_of_order``: every other reading is held back and sent right after the device's next one;
- ``clock_skew``: ``ts`` is shifted by ``skew_s`` seconds (the device clock is wrong);
- ``malformed``: readings (a share ``rate``) are replaced by bytes that are not valid device schema v1 — in
  turn truncated JSON, a non-JSON controller error line, a missing ``occupancy``, ``occupancy`` as a
  string, ``occupancy`` out of range, a timestamp in the wrong format. Malformed readings are
  :class:`~sensors_sim.events.RawEvent` objects; publishers send their bytes as they are.

A fault can be limited to a window: it affects the readings whose ``ts`` satisfies
``from_s < ts - t0 <= to_s`` (``t0`` = simulation start). :class:`FaultInjector` works tick by tick (it
holds late and out-of-order readings until they are due); :func:`apply_faults` applies it to a plain,
time-ordered stream of dicts.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sensors_sim.events import Event, RawEvent, iso_utc, parse_iso

FAULT_KINDS = ("silent", "stuck", "zero", "duplicate", "late", "out_of_order", "clock_skew", "malformed")
VALUE_FIELDS = ("count", "occupancy", "speed_kmh", "counts", "count_total", "queue_len_veh", "queue_max_veh")
MALFORMED_VARIANTS = ("truncated", "not_json", "missing_field", "wrong_type", "out_of_range", "bad_ts")


@dataclass(frozen=True)
class Fault:
    """One device's fault.

    Attributes
    ----------
    kind : str
        One of ``FAULT_KINDS``.
    from_s, to_s : float or None
        Window, seconds after the simulation start (``None`` = unbounded).
    delay_s : float
        Delivery delay of ``late`` readings, seconds.
    skew_s : float
        Clock offset of ``clock_skew`` readings, seconds (whole seconds; negative = behind).
    rate : float
        Share of readings affected by ``duplicate`` and ``malformed``, in ``[0, 1]``.
    """

    kind: str
    from_s: float | None = None
    to_s: float | None = None
    delay_s: float = 120.0
    skew_s: float = 300.0
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {FAULT_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], got {self.rate}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")

    def params(self) -> dict[str, Any]:
        """The parameters that matter for this kind (for the fault list)."""
        out: dict[str, Any] = {}
        if self.kind == "late":
            out["delay_s"] = self.delay_s
        elif self.kind == "clock_skew":
            out["skew_s"] = self.skew_s
        elif self.kind in ("duplicate", "malformed"):
            out["rate"] = self.rate
        return out


@dataclass(frozen=True)
class FaultRule:
    """A ``faults`` entry of a scenario: given devices, or a random share of the devices.

    Attributes
    ----------
    fault : Fault
        Kind and parameters (for a random share: of the first kind; the kinds go round in turn).
    device_ids : tuple of str
        Devices named explicitly.
    fraction : float
        Share of the devices (of ``device_type``) picked at random, in ``[0, 1]``.
    kinds : tuple of str
        Kinds given in turn to the randomly picked devices.
    device_type : str or None
        ``loop``, ``camera`` or ``None`` (both) for the random pick.
    seed : int
        Seed of the random pick.
    """

    fault: Fault
    device_ids: tuple[str, ...] = ()
    fraction: float = 0.0
    kinds: tuple[str, ...] = field(default_factory=tuple)
    device_type: str | None = None
    seed: int = 0


_FAULT_KEYS = {"kind", "from_s", "to_s", "delay_s", "skew_s", "rate"}


def parse_fault_rules(items: Sequence[Mapping[str, Any]]) -> list[FaultRule]:
    """Parse a scenario's ``faults`` list.

    Each item is ``{"device_id": id | "device_ids": [ids], "kind": k, ...}`` or
    ``{"fraction": f, "kinds": [k, ...], "device_type": "loop"|"camera", "seed": n, ...}``, plus optional
    ``from_s``, ``to_s``, ``delay_s``, ``skew_s``, ``rate``.

    Parameters
    ----------
    items : sequence of mapping
        The decoded list.

    Returns
    -------
    list of FaultRule
        One rule per item.

    Raises
    ------
    ValueError
        On an ill-formed item.
    """
    if not isinstance(items, Sequence):
        raise ValueError("faults must be a list")
    rules = []
    for k, it in enumerate(items):
        if not isinstance(it, Mapping):
            raise ValueError(f"faults[{k}] must be an object")
        unknown = set(it) - _FAULT_KEYS - {"device_id", "device_ids", "fraction", "kinds", "device_type", "seed"}
        if unknown:
            raise ValueError(f"faults[{k}]: unknown keys {sorted(unknown)}")
        ids: list[str] = []
        if "device_id" in it:
            ids.append(str(it["device_id"]))
        ids.extend(str(x) for x in it.get("device_ids", []))
        kinds = tuple(str(x) for x in it.get("kinds", []))
        kind = str(it.get("kind", kinds[0] if kinds else ""))
        try:
            fault = Fault(
                kind=kind,
                from_s=None if it.get("from_s") is None else float(it["from_s"]),
                to_s=None if it.get("to_s") is None else float(it["to_s"]),
                delay_s=float(it.get("delay_s", 120.0)),
                skew_s=float(it.get("skew_s", 300.0)),
                rate=float(it.get("rate", 1.0)),
            )
            for kd in kinds:
                Fault(kd)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"faults[{k}]: {exc}") from exc
        fraction = float(it.get("fraction", 0.0))
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"faults[{k}]: fraction must be in [0, 1], got {fraction}")
        if not ids and "fraction" not in it:
            raise ValueError(f"faults[{k}]: needs device_id(s) or fraction")
        dtype = it.get("device_type")
        if dtype not in (None, "loop", "camera"):
            raise ValueError(f"faults[{k}]: device_type must be loop, camera or null, got {dtype!r}")
        rules.append(
            FaultRule(
                fault=fault,
                device_ids=tuple(ids),
                fraction=fraction,
                kinds=kinds or (kind,),
                device_type=dtype,
                seed=int(it.get("seed", 0)),
            )
        )
    return rules


def resolve_fault_rules(rules: Iterable[FaultRule], devices: Mapping[str, str]) -> dict[str, Fault]:
    """Turn scenario rules into one fault per device; later rules win for a device named twice.

    Parameters
    ----------
    rules : iterable of FaultRule
        The rules.
    devices : mapping of str to str
        Every device id → its type (``loop`` or ``camera``).

    Returns
    -------
    dict of str to Fault
        The faulty devices.

    Raises
    ------
    ValueError
        If a rule names an unknown device.
    """
    out: dict[str, Fault] = {}
    for rule in rules:
        for did in rule.device_ids:
            if did not in devices:
                raise ValueError(f"fault on unknown device {did!r}")
            out[did] = rule.fault
        if rule.fraction > 0:
            pool = [d for d, t in devices.items() if rule.device_type in (None, t)]
            for did, kind in choose_faults(pool, rule.fraction, rule.seed, kinds=rule.kinds).items():
                out[did] = Fault(
                    kind, rule.fault.from_s, rule.fault.to_s, rule.fault.delay_s, rule.fault.skew_s, rule.fault.rate
                )
    return out


def choose_faults(
    device_ids: Iterable[str], fraction: float, seed: int, kinds: Sequence[str] = ("silent", "stuck")
) -> dict[str, str]:
    """Pick ``round(fraction · n)`` devices (seeded) and give them ``kinds`` in turn.

    Parameters
    ----------
    device_ids : iterable of str
        Candidate devices.
    fraction : float
        Share to pick, in ``[0, 1]``.
    seed : int
        Seed of the pick.
    kinds : sequence of str
        Fault kinds, given in turn.

    Returns
    -------
    dict of str to str
        Device id → fault kind.

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


def _device(ev: Mapping[str, Any]) -> str | None:
    did = ev.get("detector_id") if ev.get("type") == "loop" else ev.get("camera_id")
    if did is None:
        did = ev.get("detector_id") or ev.get("camera_id")
    return None if did is None else str(did)


def _zeroed(ev: dict[str, Any]) -> dict[str, Any]:
    z: dict[str, Any] = {"occupancy": 0.0, "speed_kmh": None}
    if ev.get("type") == "camera":
        z |= {
            "counts": dict.fromkeys(ev.get("counts", {}), 0),
            "count_total": 0,
            "queue_len_veh": 0,
            "queue_max_veh": 0,
        }
    else:
        z["count"] = 0
    return {**ev, **z}


def malformed_payload(ev: Mapping[str, Any], variant: int) -> bytes:
    """Bytes that are not a valid device-schema-v1 payload, derived from a good event.

    Parameters
    ----------
    ev : mapping
        The good event.
    variant : int
        Which corruption (modulo ``len(MALFORMED_VARIANTS)``): truncated JSON, a non-JSON error line, a
        missing ``occupancy``, ``occupancy`` as a string, ``occupancy`` = 1.7 (out of range), ``ts`` in
        the wrong format.

    Returns
    -------
    bytes
        The payload (no newline).
    """
    name = MALFORMED_VARIANTS[variant % len(MALFORMED_VARIANTS)]
    good = orjson.dumps(ev)
    if name == "truncated":
        return good[: max(1, len(good) // 2)]
    if name == "not_json":
        return b"ERR;" + str(_device(ev)).encode() + b";E42 checksum mismatch"
    bad = dict(ev)
    if name == "missing_field":
        bad.pop("occupancy", None)
    elif name == "wrong_type":
        bad["occupancy"] = str(ev.get("occupancy"))
    elif name == "out_of_range":
        bad["occupancy"] = 1.7
    else:  # bad_ts
        bad["ts"] = str(ev.get("ts", "")).replace("-", "/").replace("T", " ").rstrip("Z")
    return orjson.dumps(bad)


class FaultInjector:
    """Apply per-device faults to the stream, tick by tick.

    Parameters
    ----------
    faults : mapping of str to Fault or str
        Device id → fault (a bare kind uses the default parameters).
    t0_s : float, optional
        Simulation start, POSIX seconds (fault windows count from it). Default: the start of the first
        reading's interval.
    seed : int
        Seed of the ``rate`` draws.

    Attributes
    ----------
    affected : collections.Counter
        Readings affected so far, per fault kind.
    """

    def __init__(self, faults: Mapping[str, Fault | str], *, t0_s: float | None = None, seed: int = 0) -> None:
        self.faults: dict[str, Fault] = {d: f if isinstance(f, Fault) else Fault(f) for d, f in faults.items()}
        self.t0_s = t0_s
        self._rng = random.Random(seed)
        self._first: dict[str, dict[str, Any]] = {}
        self._n: Counter[str] = Counter()
        self._held: dict[str, bool] = {}
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = 0
        self.affected: Counter[str] = Counter()

    def _active(self, f: Fault, ts_s: float) -> bool:
        assert self.t0_s is not None
        rel = ts_s - self.t0_s
        return (f.from_s is None or rel > f.from_s) and (f.to_s is None or rel <= f.to_s)

    def _hold(self, release_s: float, item: Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (release_s, self._seq, item))

    def _hit(self, rate: float) -> bool:
        return rate >= 1.0 or self._rng.random() < rate

    def process(self, now_s: float, events: Iterable[dict[str, Any]]) -> list[Event]:
        """The messages to send at ``now_s``, given the readings produced then.

        Parameters
        ----------
        now_s : float
            Current (tick) time, POSIX seconds.
        events : iterable of dict
            Readings produced at this tick (schema v1).

        Returns
        -------
        list of dict or RawEvent
            This tick's readings as the faulty devices send them, then held readings now due (oldest first).
        """
        if not self.faults:
            return list(events)
        out: list[Event] = []
        for ev in events:
            did = _device(ev)
            f = self.faults.get(did) if did is not None else None
            if f is None or did is None:
                out.append(ev)
                continue
            try:
                ts_s = parse_iso(str(ev["ts"]))
            except (KeyError, ValueError):  # no usable ts: only the time-free kinds apply, without a window
                if f.kind in ("late", "out_of_order", "clock_skew") or f.from_s is not None or f.to_s is not None:
                    out.append(ev)
                    continue
                ts_s = now_s
            if self.t0_s is None:
                self.t0_s = ts_s - float(ev.get("interval_s", 0))
            if not self._active(f, ts_s):
                out.append(ev)
                continue
            self.affected[f.kind] += 1
            if f.kind == "silent":
                continue
            if f.kind == "stuck":
                first = self._first.setdefault(did, ev)
                out.append({**ev, **{k: first[k] for k in VALUE_FIELDS if k in first}})
            elif f.kind == "zero":
                out.append(_zeroed(ev))
            elif f.kind == "duplicate":
                out.append(ev)
                if self._hit(f.rate):
                    out.append(dict(ev))
                else:
                    self.affected[f.kind] -= 1
            elif f.kind == "late":
                self._hold(ts_s + f.delay_s, ev)
            elif f.kind == "out_of_order":
                if self._held.get(did):
                    out.append(ev)
                    self._held[did] = False
                else:
                    self._hold(ts_s + float(ev.get("interval_s", 1)) - 1e-6, ev)
                    self._held[did] = True
            elif f.kind == "clock_skew":
                out.append({**ev, "ts": iso_utc(ts_s + f.skew_s)})
            elif self._hit(f.rate):  # malformed
                variant = self._n[did]
                self._n[did] += 1
                out.append(
                    RawEvent(
                        str(ev["type"]), did, str(ev.get("segment_id", "")), malformed_payload(ev, variant), ev["ts"]
                    )
                )
            else:
                self.affected[f.kind] -= 1
                out.append(ev)
        while self._heap and self._heap[0][0] <= now_s + 1e-9:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def flush(self) -> list[Event]:
        """Every reading still held back (late / out of order), in due order; the injector is then empty.

        Returns
        -------
        list of dict or RawEvent
            The held readings.
        """
        out = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return out


def apply_faults(
    events: Iterable[dict[str, Any]], faults: Mapping[str, Fault | str], *, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """Yield the stream as the faulty devices would report it (device schema v1 events in, out).

    The stream must be time ordered; late and out-of-order readings are released with the first reading
    whose ``ts`` is at or after their due time (the rest at the end).

    Parameters
    ----------
    events : iterable of dict
        Time-ordered readings.
    faults : mapping of str to Fault or str
        Device id → fault; ``malformed`` is not possible here (it yields bytes: use :class:`FaultInjector`).
    seed : int
        Seed of the ``rate`` draws.

    Yields
    ------
    dict
        Readings.

    Raises
    ------
    ValueError
        If a fault is ``malformed`` or unknown.
    """
    inj = FaultInjector(faults, seed=seed)
    if any(f.kind == "malformed" for f in inj.faults.values()):
        raise ValueError("apply_faults yields dicts; malformed payloads need FaultInjector")
    group: list[dict[str, Any]] = []
    group_ts: str | None = None

    def release(items: list[Event]) -> Iterator[dict[str, Any]]:
        for it in items:
            assert isinstance(it, dict)
            yield it

    now = -math.inf

    def when(ts: Any) -> float:
        try:
            return max(now, parse_iso(str(ts)))
        except ValueError:
            return now

    for ev in events:
        if group and ev.get("ts") != group_ts:
            now = when(group_ts)
            yield from release(inj.process(now, group))
            group = []
        group_ts = ev.get("ts")
        group.append(ev)
    if group:
        yield from release(inj.process(when(group_ts), group))
    yield from release(inj.flush())


def fault_records(
    faults: Mapping[str, Fault], devices: Mapping[str, Mapping[str, Any]], t0_s: float
) -> list[dict[str, Any]]:
    """The device-fault list (one record per faulty device, sorted by device id), for ``device_faults.jsonl``.

    Parameters
    ----------
    faults : mapping of str to Fault
        The faulty devices.
    devices : mapping of str to mapping
        Detector records of the graph (``G.graph["detectors"]``).
    t0_s : float
        Simulation start, POSIX seconds.

    Returns
    -------
    list of dict
        ``{"device_id", "type", "segment_id", "kind", "from_s", "to_s", "from_ts", "to_ts", ...params}``;
        times are seconds after the start and ISO UTC (``null`` = unbounded).
    """
    out = []
    for did in sorted(faults):
        f = faults[did]
        rec = devices.get(did, {})
        out.append(
            {
                "device_id": did,
                "type": rec.get("kind"),
                "segment_id": rec.get("segment_id"),
                "kind": f.kind,
                "from_s": f.from_s,
                "to_s": f.to_s,
                "from_ts": None if f.from_s is None else iso_utc(t0_s + f.from_s),
                "to_ts": None if f.to_s is None else iso_utc(t0_s + f.to_s),
                **f.params(),
            }
        )
    return out
