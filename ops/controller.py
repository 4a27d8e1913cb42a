"""Closed-loop signal controller speaking the JSON-lines protocol of the SUMO harness (``closed_loop.py --cmd``).

Protocol: every line on stdin is one device-schema-v1 event (loop or camera), except
``{"type": "plan_request", "ts": ..., "t_s": ...}``, which is answered with exactly one JSON line on stdout:
``{tls_id: {"green_s": [g0, g1, ...]}, ...}`` (greens in seconds, the network's green phases in order; ``{}``
keeps the running plans, and a signal whose recommendation keeps its running plan is left out). Nothing else
is written to stdout.

The models are those of :mod:`models.signals`: :class:`~models.signals.DemandEstimator` (fed every event),
:func:`~models.signals.recommend` (coordinated adaptive policy under :class:`~models.signals.SignalConstraints`)
and one :class:`~models.signals.SignalClock` per signal that mirrors "a new plan starts at the next phase-0
start". A failure while planning answers ``{}`` (keep the running plans) and is reported on stderr; the
controller never stops the harness.

Diagnostics (one JSON line per decision: mode, common cycle, expected network delay before/after) go to
stderr, or to the file named by ``CITYBRAIN_CONTROLLER_LOG``; full recommendations are added there when
``CITYBRAIN_CONTROLLER_LOG_RECS=1``.

Configuration without code: ``CITYBRAIN_SIGNAL_CONSTRAINTS`` and ``CITYBRAIN_SIGNAL_POLICY`` may hold a JSON
object of :class:`~models.signals.SignalConstraints` / :class:`~models.signals.PolicyConfig` fields, e.g.
``CITYBRAIN_SIGNAL_CONSTRAINTS='{"pedestrians": "always", "min_green_s": 7}'``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

import orjson

from models.signals import (
    DemandEstimator,
    PolicyConfig,
    SignalClock,
    SignalConstraints,
    SignalNetwork,
    recommend,
)
from roadnet import load_trafficnet


class ControllerError(RuntimeError):
    """The controller cannot start (no network found, invalid network)."""


def resolve_network(network: Path | None) -> Path:
    """The network file to use.

    The first source that is set decides: ``network``; ``$CITYBRAIN_NETWORK``; ``$SUMO_SCENARIO/network.json``
    (the harness sets ``SUMO_SCENARIO`` for the processes it starts); ``./scenario/network.json`` (the
    harness's default when started from its folder). A source that is set but names no file is an error,
    not a reason to fall back to another network.

    Raises
    ------
    ControllerError
        If the chosen file does not exist, or no source is set and ``./scenario/network.json`` is missing.
    """
    sources: list[tuple[str, Path]] = []
    if network is not None:
        sources.append(("--network", Path(network)))
    if os.environ.get("CITYBRAIN_NETWORK"):
        sources.append(("CITYBRAIN_NETWORK", Path(os.environ["CITYBRAIN_NETWORK"])))
    if os.environ.get("SUMO_SCENARIO"):
        sources.append(("SUMO_SCENARIO", Path(os.environ["SUMO_SCENARIO"]) / "network.json"))
    if sources:
        name, path = sources[0]
        if not path.is_file():
            raise ControllerError(f"citybrain controller: {name} names {path}, which is not a file")
        return path
    default = Path("scenario") / "network.json"
    if default.is_file():
        return default
    raise ControllerError(
        "citybrain controller: no network; pass --network PATH, or set CITYBRAIN_NETWORK or SUMO_SCENARIO, "
        f"or run where {default} exists"
    )


class StdioController:
    """State of one controller session: estimator, clocks, constraints and policy.

    Parameters
    ----------
    network_path : Path
        traffic-net/1.0 JSON file.
    constraints, config : optional
        Signal constraints and policy tuning (defaults: :class:`SignalConstraints`, :class:`PolicyConfig`).
    """

    def __init__(
        self,
        network_path: Path,
        constraints: SignalConstraints | None = None,
        config: PolicyConfig | None = None,
    ) -> None:
        self.constraints = constraints or SignalConstraints()
        self.config = config or PolicyConfig()
        graph = load_trafficnet(network_path)
        self.net = SignalNetwork.from_graph(graph, self.constraints)
        self.estimator = DemandEstimator(self.net)
        self.clocks = {t: SignalClock.for_intersection(ix) for t, ix in self.net.intersections.items()}
        self.last_diag: dict[str, Any] = {}
        self.last_recs: dict[str, Any] = {}

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Process one input message; returns the plan for a plan request, else None."""
        if msg.get("type") != "plan_request":
            self.estimator.update(msg)
            return None
        t_s = float(msg["t_s"])
        snap = self.estimator.snapshot(t_s)
        recs, diag = recommend(self.net, snap, self.clocks, t_s, self.constraints, self.config)
        plan: dict[str, Any] = {}
        for tid, rec in recs.items():
            if rec.kept:  # the running plan stays: nothing to install
                continue
            plan[tid] = rec.plan_spec()
            self.clocks[tid].send(t_s, self.net.intersections[tid].durations(rec.green_s))
        self.last_diag = {"t_s": t_s, **{k: v for k, v in diag.items() if k != "candidates"}}
        self.last_recs = {t: r.to_dict() for t, r in recs.items()}
        return plan

    def state(self) -> dict[str, Any]:
        """JSON-able session state (estimator and clocks)."""
        return {
            "estimator": self.estimator.to_state(),
            "clocks": {t: c.to_dict() for t, c in self.clocks.items()},
        }


def _from_env(var: str, cls: type[Any]) -> Any:
    raw = os.environ.get(var)
    if not raw:
        return None
    try:
        return cls(**orjson.loads(raw))
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ControllerError(f"{var}: {exc}") from None


def run_stdio(
    network: Path | None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    constraints: SignalConstraints | None = None,
    config: PolicyConfig | None = None,
) -> None:
    """Serve the closed-loop JSON-lines protocol until stdin closes.

    Parameters
    ----------
    network : Path or None
        The traffic-net network; None resolves it with :func:`resolve_network`.
    stdin, stdout : text streams, optional
        Default ``sys.stdin`` / ``sys.stdout``.
    constraints, config : optional
        Signal constraints and policy tuning (defaults: :class:`SignalConstraints`, :class:`PolicyConfig`).

    Raises
    ------
    SystemExit
        With status 2 and a message on stderr when no network can be found or loaded.
    """
    inp = stdin or sys.stdin
    out = stdout or sys.stdout
    try:
        path = resolve_network(network)
        constraints = constraints or _from_env("CITYBRAIN_SIGNAL_CONSTRAINTS", SignalConstraints)
        config = config or _from_env("CITYBRAIN_SIGNAL_POLICY", PolicyConfig)
        ctl = StdioController(path, constraints, config)
    except Exception as exc:  # no network, or an invalid one: say so and stop
        print(f"citybrain controller: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log_path = os.environ.get("CITYBRAIN_CONTROLLER_LOG")
    log_recs = os.environ.get("CITYBRAIN_CONTROLLER_LOG_RECS") == "1"
    log: IO[str] = open(log_path, "a") if log_path else sys.stderr
    try:
        for line in inp:
            if not line.strip():
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                print(f"citybrain controller: skipped a line that is not JSON: {line[:80]!r}", file=sys.stderr)
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") != "plan_request":
                ctl.handle(msg)
                continue
            try:
                plan = ctl.handle(msg) or {}
                entry: dict[str, Any] = dict(ctl.last_diag)
                if log_recs:
                    entry["recommendations"] = ctl.last_recs
                log.write(orjson.dumps(entry).decode() + "\n")
                log.flush()
            except Exception:
                print("citybrain controller: planning failed, keeping the running plans", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                plan = {}
            out.write(orjson.dumps(plan).decode() + "\n")
            out.flush()
    finally:
        if log is not sys.stderr:
            log.close()
