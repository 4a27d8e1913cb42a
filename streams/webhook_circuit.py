"""The delivery health of one webhook endpoint: healthy, failing, probing — and how long to wait between attempts.

- **healthy**: deliveries go out one after the other at full speed.
- **failing**: the last attempt failed (connection error, timeout, non-2xx). The endpoint's queue stays where it
  is: its head delivery is retried after a capped exponential backoff (``retry_initial_s`` doubling per failed
  attempt up to ``retry_max_s``, ± jitter that never exceeds the cap), so a receiver that comes back is found
  within ``retry_max_s``. A receiver's ``Retry-After`` is honoured up to ``max_retry_after_s``.
- **probing**: an attempt to a failing endpoint is in flight (the head of its queue is the probe; nothing is
  skipped). Success → healthy, and the backlog drains at full speed; failure → failing.

Each change of state is reported once (:class:`StateChange`), for one log line and the ``endpoint_up`` gauge —
never once per attempt. Pure: the caller passes the time (Unix s) in, so tests drive the clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class EndpointState(StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    PROBING = "probing"


@dataclass(frozen=True)
class StateChange:
    """An endpoint went down (``to`` failing) or came back (``to`` healthy), or its backlog was delivered."""

    endpoint: str
    to: EndpointState
    at_s: float  # Unix s
    error: str | None = None  # the failure that took it down
    outage_s: float = 0.0  # on recovery: from the first failed attempt to the successful probe
    failed_attempts: int = 0  # on recovery: attempts that failed during the outage
    backlog_delivered: int | None = None  # set on the "backlog delivered" report after a recovery
    backlog_s: float = 0.0  # on the backlog report: from the recovery to the last backlog delivery
    given_up: int = 0  # on recovery: deliveries dead-lettered during the outage (max_age_s)

    def message(self) -> str:
        """The one log line for this change."""
        if self.backlog_delivered is not None:
            return (
                f"webhook endpoint {self.endpoint}: backlog of {self.backlog_delivered} deliveries queued during "
                f"the outage delivered {self.backlog_s:.1f} s after it recovered"
            )
        if self.to == EndpointState.FAILING:
            return (
                f"webhook endpoint {self.endpoint} failing: {self.error}; retrying the head of its queue "
                "(capped backoff) until it answers, later deliveries wait in order"
            )
        lost = f", {self.given_up} deliveries older than max_age_s dead-lettered" if self.given_up else ""
        return (
            f"webhook endpoint {self.endpoint} recovered after {self.outage_s:.1f} s down "
            f"({self.failed_attempts} failed attempts{lost}); delivering its backlog"
        )


@dataclass
class EndpointCircuit:
    """Health and backoff of one endpoint (one per endpoint, shared by its deliveries)."""

    endpoint: str
    state: EndpointState = EndpointState.HEALTHY
    failing_since_s: float | None = None  # Unix s of the first failed attempt of the current outage
    failed_attempts: int = 0  # consecutive failed attempts
    last_error: str | None = None
    recovered_at_s: float | None = None  # set from a recovery until its backlog has been delivered
    backlog_delivered: int = 0
    given_up: int = 0  # deliveries dead-lettered since the last change of state

    @property
    def up(self) -> bool:
        return self.state == EndpointState.HEALTHY

    def probe(self) -> None:
        """An attempt is about to be made: to a failing endpoint, it is the probe."""
        if self.state == EndpointState.FAILING:
            self.state = EndpointState.PROBING

    def failed(self, now_s: float, error: str) -> StateChange | None:
        """An attempt failed; returns the change when the endpoint was healthy until now."""
        self.failed_attempts += 1
        self.last_error = error
        was_up = self.up
        self.state = EndpointState.FAILING
        if not was_up:
            return None
        self.failing_since_s, self.recovered_at_s, self.given_up = now_s, None, 0
        return StateChange(self.endpoint, EndpointState.FAILING, now_s, error=error)

    def succeeded(self, now_s: float, queued_at_s: float) -> StateChange | None:
        """A delivery (queued at ``queued_at_s``) went through; returns the recovery or backlog report, if any."""
        if not self.up:
            outage_s = now_s - (self.failing_since_s if self.failing_since_s is not None else now_s)
            change = StateChange(
                self.endpoint,
                EndpointState.HEALTHY,
                now_s,
                outage_s=outage_s,
                failed_attempts=self.failed_attempts,
                given_up=self.given_up,
            )
            self.state, self.failing_since_s, self.failed_attempts, self.given_up = EndpointState.HEALTHY, None, 0, 0
            self.recovered_at_s, self.backlog_delivered = now_s, 1
            return change
        self.failed_attempts = 0
        if self.recovered_at_s is None:
            return None
        if queued_at_s < self.recovered_at_s:
            self.backlog_delivered += 1
            return None
        return self.backlog_done(now_s)

    def note_given_up(self) -> bool:
        """A delivery was dead-lettered; True for the first one since the last change of state (to log it)."""
        self.given_up += 1
        return self.given_up == 1

    def backlog_done(self, now_s: float) -> StateChange | None:
        """The queue caught up with the recovery (a delivery queued after it, or nothing left): report the
        backlog once."""
        if self.recovered_at_s is None or not self.up:
            return None
        change = StateChange(
            self.endpoint,
            EndpointState.HEALTHY,
            now_s,
            backlog_delivered=self.backlog_delivered,
            backlog_s=now_s - self.recovered_at_s,
        )
        self.recovered_at_s = None
        return change

    def backoff_s(self, initial_s: float, cap_s: float, jitter: float, rng: random.Random | None = None) -> float:
        """The wait before the next attempt: ``initial_s`` doubled per failed attempt, ± ``jitter``, at most
        ``cap_s``."""
        exponent = min(max(self.failed_attempts - 1, 0), 60)
        base = min(cap_s, initial_s * 2.0**exponent)
        spread = (rng or random).uniform(-jitter, jitter)
        return min(cap_s, max(0.0, base * (1 + spread)))
