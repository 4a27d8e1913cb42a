"""Closed loop: citybrain's signal recommendations (Kafka ``signal-recommendations``) back into a simulated city.

citybrain's worker publishes one recommendation per signal per control period (``streams/agents/signals.py``;
the record is ``models.signals.Recommendation.to_dict()``: ``tls_id``, ``green_s`` — green seconds per green
phase in phase order —, ``cycle_s``, ``recommendation_id``, ...). Here:

- :class:`RecommendationSubscriber` reads that topic with its own aiokafka consumer (no consumer group, so it
  never takes partitions from anyone and commits nothing; it starts at the latest offset) on a background
  thread and hands every record to a :class:`PlanInbox`;
- :class:`PlanInbox` parses the records (malformed ones are rejected with a logged reason), keeps the latest plan
  per signal until the simulator drains it, and counts what was received, applied and rejected;
- :func:`simulator_plans` is the ``plans`` callback of :func:`sensors_sim.run.simulate`: after every tick it
  gives each drained plan to :meth:`Simulator.set_plan <sensors_sim.run.Simulator.set_plan>`, which installs it
  at the light's next start of phase 0 (the next cycle boundary). Plans for unknown lights, or whose greens do
  not match the light's green phases, are rejected with a logged reason.

The SUMO twin (:mod:`sensors_sim.sumo_twin`) drains the same inbox and applies the plans to SUMO's lights.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

if TYPE_CHECKING:
    from sensors_sim.run import Simulator

log = logging.getLogger(__name__)

MAX_REASONS = 100
"""Rejection reasons kept by :class:`PlanStats` (the oldest are dropped)."""


@dataclass
class PlanStats:
    """What the closed loop did with the recommendations it received.

    Attributes
    ----------
    received : int
        Records read from the topic.
    applied : int
        Plans accepted and scheduled for their light's next cycle start.
    rejected : int
        Records or plans refused (malformed record, unknown light, invalid phases).
    superseded : int
        Plans replaced by a newer one for the same light before they were applied.
    installed : int
        Plans actually switched in at a cycle boundary (counted by appliers that see the switch: the SUMO twin).
    reasons : collections.deque of str
        The last ``MAX_REASONS`` rejection reasons.
    """

    received: int = 0
    applied: int = 0
    rejected: int = 0
    superseded: int = 0
    installed: int = 0
    reasons: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_REASONS))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (counts and the last reasons)."""
        return {
            "received": self.received,
            "applied": self.applied,
            "rejected": self.rejected,
            "superseded": self.superseded,
            "installed": self.installed,
            "reasons": list(self.reasons),
        }


def parse_recommendation(value: bytes | str | Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """The signal and plan of one ``signal-recommendations`` record.

    Parameters
    ----------
    value : bytes, str or mapping
        The record value: JSON of ``models.signals.Recommendation.to_dict()`` (or the decoded dict).

    Returns
    -------
    tuple of (str, dict, str or None)
        ``tls_id``, the plan ``{"green_s": [...]}`` (seconds per green phase, phase order) and the
        ``recommendation_id`` (None when absent).

    Raises
    ------
    ValueError
        If the record is not JSON, not an object, has no ``tls_id`` string, or no ``green_s`` list of finite,
        non-negative numbers.
    """
    if isinstance(value, bytes | str):
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"recommendation is not JSON: {exc}") from None
    else:
        doc = value
    if not isinstance(doc, Mapping):
        raise ValueError(f"recommendation must be a JSON object, got {type(doc).__name__}")
    tls = doc.get("tls_id")
    if not isinstance(tls, str) or not tls:
        raise ValueError(f"recommendation has no tls_id string (got {tls!r:.40})")
    greens = doc.get("green_s")
    if not isinstance(greens, list) or not greens:
        raise ValueError(f"{tls}: green_s must be a non-empty list of seconds, got {greens!r:.60}")
    if any(isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g < 0 for g in greens):
        raise ValueError(f"{tls}: green_s must hold finite seconds >= 0, got {greens!r:.60}")
    rid = doc.get("recommendation_id")
    return tls, {"green_s": [float(g) for g in greens]}, str(rid) if rid is not None else None


class PlanInbox:
    """Thread-safe mailbox between a recommendation consumer and a simulator.

    :meth:`put` (any thread) parses a record and keeps its plan, the latest per light; :meth:`drain` (the
    simulator's thread) takes them all. The appliers report back with :meth:`applied` / :meth:`rejected`.

    Attributes
    ----------
    stats : PlanStats
        Counts and the last rejection reasons.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, dict[str, Any]] = {}
        self._ids: dict[str, str | None] = {}
        self.stats = PlanStats()

    def put(self, value: bytes | str | Mapping[str, Any]) -> bool:
        """Take one record from the topic.

        Parameters
        ----------
        value : bytes, str or mapping
            The record value.

        Returns
        -------
        bool
            Whether it held a plan (False: rejected as malformed, reason logged and counted).
        """
        with self._lock:
            self.stats.received += 1
        try:
            tls, plan, rid = parse_recommendation(value)
        except ValueError as exc:
            self.rejected(None, str(exc))
            return False
        with self._lock:
            if tls in self._plans:
                self.stats.superseded += 1
            self._plans[tls] = plan
            self._ids[tls] = rid
        return True

    def drain(self) -> dict[str, dict[str, Any]]:
        """Take every waiting plan.

        Returns
        -------
        dict
            ``{tls_id: {"green_s": [...]}}``, the latest plan per light since the last call.
        """
        with self._lock:
            out, self._plans, self._ids = self._plans, {}, {}
        return out

    def applied(self, tls_id: str, n: int = 1) -> None:
        """Count plans accepted for a light (scheduled for its next cycle start).

        Parameters
        ----------
        tls_id : str
            Traffic light.
        n : int
            How many.
        """
        with self._lock:
            self.stats.applied += n

    def installed(self, tls_id: str) -> None:
        """Count a plan switched in at a cycle boundary.

        Parameters
        ----------
        tls_id : str
            Traffic light.
        """
        with self._lock:
            self.stats.installed += 1

    def rejected(self, tls_id: str | None, reason: str) -> None:
        """Count and log a refused record or plan.

        Parameters
        ----------
        tls_id : str or None
            Traffic light, when known.
        reason : str
            Why.
        """
        log.warning("signal recommendation rejected: %s", reason)
        with self._lock:
            self.stats.rejected += 1
            self.stats.reasons.append(reason)


def simulator_plans(simulator: Simulator, inbox: PlanInbox) -> Callable[[float], None]:
    """The ``plans`` callback of :func:`sensors_sim.run.simulate` that applies an inbox's plans to a simulator.

    Each drained plan goes to :meth:`Simulator.set_plan` (installed at the light's next start of phase 0);
    an unknown light or a plan whose greens do not fit the light's green phases is rejected with its reason.

    Parameters
    ----------
    simulator : Simulator
        The simulated city.
    inbox : PlanInbox
        Where the recommendations arrive.

    Returns
    -------
    callable
        ``f(t_s) -> None`` (applies the plans itself, so ``simulate`` has nothing left to apply).
    """

    def apply(t_s: float) -> None:
        for tls, plan in inbox.drain().items():
            try:
                durations = simulator.set_plan(tls, plan)
            except (ValueError, TypeError) as exc:
                inbox.rejected(tls, str(exc))
                continue
            inbox.applied(tls)
            log.info("signal plan for %s scheduled for its next cycle: phases %s s", tls, durations)

    return apply


class RecommendationSubscriber:
    """Consume ``signal-recommendations`` on a background thread into a :class:`PlanInbox`.

    An aiokafka consumer without a consumer group (``group_id=None``: all partitions of the topic, no commits,
    nobody else's partitions taken) starting at the latest offset, so only recommendations published after it
    started are applied. A topic created later is picked up at the next metadata refresh
    (``metadata_max_age_ms``).

    Parameters
    ----------
    bootstrap : str
        Bootstrap servers, ``host:port[,host:port...]``.
    topic : str
        The recommendations topic (with citybrain's topic prefix, e.g. ``citybrain.signal-recommendations``).
    inbox : PlanInbox, optional
        Where records go; default a new one (:attr:`inbox`).
    group_id : str, optional
        A consumer group of its own instead of none (then committed offsets are used on restart).
    timeout_s : float
        Seconds :meth:`start` waits for the consumer to connect.
    **consumer_options : Any
        Further ``aiokafka.AIOKafkaConsumer`` arguments (security settings, ...).

    Attributes
    ----------
    inbox : PlanInbox
        The mailbox.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        inbox: PlanInbox | None = None,
        group_id: str | None = None,
        timeout_s: float = 30.0,
        **consumer_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.inbox = inbox if inbox is not None else PlanInbox()
        self.group_id = group_id
        self.timeout_s = timeout_s
        self.options = {"metadata_max_age_ms": 5000, **consumer_options}
        self._stop = threading.Event()
        self._started = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the consumer thread and wait until the consumer is connected.

        Returns
        -------
        RecommendationSubscriber
            Itself.

        Raises
        ------
        ConnectionError
            If the consumer cannot start within ``timeout_s`` (broker unreachable).
        """
        self._thread = threading.Thread(target=self._main, name="sensors-sim-recommendations", daemon=True)
        self._thread.start()
        if not self._started.wait(self.timeout_s) or self._error is not None:
            self._stop.set()
            raise ConnectionError(f"Kafka {self.bootstrap}: recommendation consumer did not start: {self._error}")
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the topic's partitions are assigned and positioned at their latest offsets.

        Records published after this returns True are seen.

        Parameters
        ----------
        timeout_s : float
            Longest wait, seconds.

        Returns
        -------
        bool
            Whether it is ready.
        """
        return self._ready.wait(timeout_s)

    def _main(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported by start(); a failure later is logged
            self._error = exc
            if self._started.is_set():
                log.exception("signal recommendation consumer stopped")
            self._started.set()

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            auto_offset_reset="latest",
            enable_auto_commit=self.group_id is not None,
            **self.options,
        )
        try:
            await asyncio.wait_for(consumer.start(), self.timeout_s)
        except BaseException:
            await consumer.stop()
            raise
        self._started.set()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                for msgs in batch.values():
                    for m in msgs:
                        self.inbox.put(m.value or b"")
                if not self._ready.is_set() and consumer.assignment():
                    for tp in consumer.assignment():
                        await consumer.position(tp)  # resolves "latest" now: later records are seen
                    self._ready.set()
        finally:
            await consumer.stop()

    def close(self) -> None:
        """Stop the consumer and its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
