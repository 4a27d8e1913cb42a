"""Two workers in one consumer group, one SIGKILLed mid-stream: the survivor takes over its partitions."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from ops.runtime import Stack
from tests.integration.conftest import Brokers, unique_settings

from .conftest import (
    SEGMENTS,
    WindowsLost,
    account,
    devices,
    expected_windows,
    group_lag,
    health_of,
    publish,
    read_topic,
    stream,
    wait_for,
    wait_published,
)

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        os.environ.get("CITYBRAIN_TEST_ENGINE") != "kafka", reason="consumer-group takeover on Apache Kafka"
    ),
]


FAUST_629 = (
    "intermittent (3 of 14 runs): after the takeover the survivor never reads one of the events partitions it "
    "took over (its committed offset stays below the end: the dead worker had not committed it yet, and nothing is "
    "read, processed, dead-lettered or committed afterwards), so every later window of that partition's segments "
    "is missing while its other partitions go on. Recovery restores the partition's table from the standby copy "
    "('Reading Starts At' −1, standby at the highwater) and logs 'Worker ready'. Matches faust-streaming "
    "https://github.com/faust-streaming/faust/issues/629 (partitions assigned on a rebalance never get fetch "
    "requests; open) and #166 ('Has not committed TP … at all since worker start')"
)


def alert_problems(alerts: list[dict[str, Any]]) -> list[str]:
    """Alerts a consumer would see twice: one ``event_id`` with two contents, or one subject raised anew
    (``*.new``) under two ids — what a survivor without the dead worker's table state would emit."""
    problems = []
    by_id: dict[str, set[bytes]] = {}
    new_ids: dict[tuple[str, str], set[str]] = {}
    for a in alerts:
        by_id.setdefault(a["event_id"], set()).add(repr(sorted((k, repr(v)) for k, v in a.items())).encode())
        if a["type"].endswith(".new"):
            new_ids.setdefault((a["type"], a["subject"]), set()).add(a["event_id"])
    problems += [f"{eid}: {len(v)} contents" for eid, v in by_id.items() if len(v) > 1]
    problems += [f"{t} {subj}: raised as {sorted(ids)}" for (t, subj), ids in new_ids.items() if len(ids) > 1]
    return problems


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_two_workers_one_killed(brokers: Brokers, tmp_path: Path, record: Callable[..., None], guarantee: str) -> None:
    """Workers A and B share the 4-partition topics; B is SIGKILLed while readings flow. A takes over B's
    partitions after the session timeout, restores B's tables (open windows, detector health, incidents) from
    the changelogs and goes on: every window is emitted with all its readings (exact accounting: readings in
    windows + dead-lettered redeliveries = events), no window with two contents, and no alert or incident twice.
    Under ``exactly_once`` (read committed) B's open transactions are aborted by A's fence, so A does not even
    see a redelivered reading and no window is emitted twice.

    Known failure (``FAUST_629``, intermittent): when lost windows all belong to a taken-over partition the
    survivor never read, the test xfails with the offsets as evidence; any other loss fails it."""
    eos = guarantee == "exactly_once"
    s = unique_settings(brokers, kafka={"partitions": 4}, processing_guarantee=guarantee)
    fault = "two workers, one SIGKILLed mid-stream: the other takes over (tables from changelogs)"
    if eos:
        fault += ", exactly_once (read committed)"
    events = stream(stuck=frozenset(SEGMENTS))  # device faults raised before the kill, on both workers
    half = len(events) // 2
    with Stack(s, tmp_path) as st:
        st.start_brokers()
        a = st.start_worker(name="worker-a")
        bridge = st.start_bridge()
        st.wait_healthy(bridge)
        st.wait_healthy(a, timeout_s=120)
        solo = health_of(a)["assigned_partitions"]  # alone, A holds every partition (no standbys)
        b = st.start_worker(name="worker-b")
        wait_for(
            lambda: all(health_of(w).get("status") == "ok" for w in (a, b))
            and health_of(a).get("assigned_partitions", 0) < solo,
            120, "both workers sharing the partitions",
        )  # fmt: skip
        b_parts = health_of(b)["assigned_partitions"]
        c = devices(s.mqtt.host, s.mqtt.port, f"two-workers-{s.app_id}", persistent=False)
        wait_published(publish(c, s, events[:half]), 30)
        wait_for(lambda: health_of(bridge).get("forwarded", 0) >= half, 60, "the first half forwarded")
        time.sleep(0.5)  # B is mid-way through its share
        b.signal(signal.SIGKILL)
        b.proc.wait(10)
        t_kill = time.monotonic()
        wait_published(publish(c, s, events[half:]), 30)
        wait_for(
            lambda: health_of(a).get("status") == "ok" and health_of(a).get("assigned_partitions", 0) >= solo,
            120, "worker A holding every partition",
        )  # fmt: skip
        recovery_s = time.monotonic() - t_kill
        c.disconnect()
        c.loop_stop()
        try:
            acc = account(s, len(events), expected_windows(), read_committed=eos)
        except WindowsLost as exc:
            lag = group_lag(s)
            parts = {seg: DefaultPartitioner()(seg.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for seg in SEGMENTS}
            lost_parts = {parts[w.split("@")[0]] for w in exc.missing}
            detail = (
                f"{exc}\nevents (committed, end) by partition: {lag}; segment → partition: {parts}; "
                f"B held {b_parts} partitions; A's health: {health_of(a)}"
            )
            never_read = all(lag.get(p, (0, 0))[0] < lag.get(p, (0, 0))[1] for p in lost_parts)
            record(
                fault=fault,
                events=len(events),
                lost=4 * len(exc.missing),  # 4 readings per window in this stream
                duplicate_outputs=0,
                recovery_s=round(recovery_s, 1),
                xfail="faust-streaming #629, intermittent" if never_read else None,
            )
            if never_read:  # the known symptom: a taken-over partition is never read again
                pytest.xfail(f"{FAUST_629}\n{detail}")
            raise AssertionError(detail) from None
        alerts = read_topic(s, "alerts", timeout_s=30, idle_s=1, read_committed=eos)
        alog = a.log_path.read_text(errors="replace")
        assert a.alive()
    assert set(acc.dead_reasons) <= {"duplicate"}, acc.dead_reasons
    assert acc.applied == len(events) and acc.lost == 0
    assert acc.duplicate_outputs == 0
    if eos:  # nothing the dead worker did after its last commit is visible, so nothing is redone visibly
        assert not acc.dead_reasons and acc.re_emitted == 0, (acc.dead_reasons[:5], acc.re_emitted)
    faults = {a["subject"] for a in alerts if a["type"] == "device_fault.new"}
    assert faults == {f"loop_mid_{seg}_1" for seg in SEGMENTS}, sorted(faults)  # each stuck loop reported
    assert not alert_problems(alerts), alert_problems(alerts)  # ... once, not again after the takeover
    assert "recover" in alog.lower()  # A restored B's tables from the changelogs
    record(
        fault=fault,
        events=len(events),
        lost=acc.lost,
        duplicate_outputs=acc.duplicate_outputs,
        redelivered_readings=acc.dead_reasons.count("duplicate"),
        re_emitted_windows=acc.re_emitted,
        alerts=len(alerts),
        partitions_taken_over=b_parts,
        recovery_s=round(recovery_s, 1),
    )
