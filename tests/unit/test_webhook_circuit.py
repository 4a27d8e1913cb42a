"""The per-endpoint circuit of webhook delivery: capped backoff, one report per change of state (issue #15/6)."""

from __future__ import annotations

import random

from streams.webhook_circuit import EndpointCircuit, EndpointState


def test_backoff_doubles_and_never_exceeds_the_cap_even_with_jitter() -> None:
    c = EndpointCircuit("ops")
    rng = random.Random(7)
    waits = []
    for n in range(1, 40):
        c.failed(float(n), "ConnectionRefused")
        waits.append(c.backoff_s(initial_s=1.0, cap_s=30.0, jitter=0.2, rng=rng))
    assert max(waits) <= 30.0  # a recovered receiver is probed within the cap
    assert min(waits[10:]) >= 30.0 * 0.8  # at the cap: jitter only shortens
    no_jitter = EndpointCircuit("ops")
    plain = []
    for n in range(7):
        no_jitter.failed(float(n), "x")
        plain.append(no_jitter.backoff_s(1.0, 30.0, 0.0))
    assert plain == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_one_change_per_outage_and_the_probe_resumes_within_the_cap() -> None:
    """Receiver down from t=0 to t=228 s (the issue's 3.8 min); the head is retried as the probe."""
    down_until, cap = 228.0, 30.0
    c = EndpointCircuit("ops")
    changes = []
    now = 0.0
    while True:  # the loop deliver() runs for the head of the queue, on a driven clock
        c.probe()
        if now >= down_until:
            changes.append(c.succeeded(now, queued_at_s=0.0))
            break
        assert c.state in (EndpointState.HEALTHY, EndpointState.PROBING)
        changes.append(c.failed(now, "ClientConnectorError: refused"))
        now += c.backoff_s(1.0, cap, 0.2, random.Random(int(now)))
    assert now <= down_until + cap  # found within the cap of coming back (the old schedule: up to 600 s)
    reported = [ch for ch in changes if ch is not None]
    assert [ch.to for ch in reported] == [EndpointState.FAILING, EndpointState.HEALTHY]
    went, back = reported
    assert "failing: ClientConnectorError: refused" in went.message()
    assert back.outage_s == now and back.failed_attempts == len(changes) - 1
    assert f"recovered after {now:.1f} s down" in back.message()
    # the backlog (queued before the recovery) drains without further changes, then is reported once
    assert [c.succeeded(now + i, queued_at_s=10.0 + i) for i in range(1, 6)] == [None] * 5
    drained = c.succeeded(now + 7, queued_at_s=now + 6)  # the first delivery queued after the recovery
    assert drained is not None and drained.backlog_delivered == 6  # the probe and the five behind it
    assert "backlog of 6 deliveries" in drained.message()
    assert c.succeeded(now + 8, queued_at_s=now + 8) is None and c.backlog_done(now + 9) is None
    assert c.up and c.failed_attempts == 0


def test_give_ups_are_logged_once_per_outage() -> None:
    c = EndpointCircuit("ops")
    c.failed(0.0, "HTTP 503")
    assert [c.note_given_up() for _ in range(4)] == [True, False, False, False]
    back = c.succeeded(100.0, queued_at_s=90.0)
    assert back is not None and back.given_up == 4 and "4 deliveries older than max_age_s" in back.message()
    c.failed(200.0, "HTTP 503")  # a new outage: its first give-up is logged again
    assert c.note_given_up() is True
