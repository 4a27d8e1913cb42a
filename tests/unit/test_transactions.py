"""``streams.transactions``: outputs join their source partition's transaction; commits never split a batch.

The Faust app is replaced by a stand-in exposing the few attributes the module uses (the consumer's
``force_commit``, the producer's transactional producers); the real thing runs in
``tests/faults/test_exactly_once.py`` against Apache Kafka.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.transactions import Transactions


class FakeTxn:
    def __init__(self, log: list[str], tid: str) -> None:
        self.log, self.tid = log, tid

    async def commit_transaction(self) -> None:
        self.log.append(f"commit {self.tid}")

    async def begin_transaction(self) -> None:
        self.log.append(f"begin {self.tid}")


def fake_app(log: list[str], tids: tuple[str, ...] = ("cb-0-3",), commit_gate: asyncio.Event | None = None) -> Any:
    async def force_commit(*_: Any, **__: Any) -> bool:
        log.append("force_commit")
        if commit_gate is not None:
            await commit_gate.wait()
        log.append("force_commit done")
        return True

    async def flush() -> None:
        log.append("flush")

    async def send(*args: Any, transactional_id: str | None = None) -> str:
        log.append(f"send {args[0]} via {transactional_id}")
        return "future"

    async def stop_transaction(tid: str) -> None:
        log.append(f"stop {tid}")
        producer._transaction_producers.pop(tid)

    producer = SimpleNamespace(
        stop_transaction=stop_transaction,
        flush=flush,
        send=send,
        _transaction_producers={t: FakeTxn(log, t) for t in tids},
        _trn_locks={t: asyncio.Lock() for t in tids},
    )
    handlers: list[Any] = []
    return SimpleNamespace(
        conf=SimpleNamespace(id="cb"),
        assignor=SimpleNamespace(
            group_for_topic=lambda topic: {"events": 0, "ingest": 0}[topic],
            is_standby=lambda tp: tp.partition == 2,
        ),
        on_partitions_assigned=SimpleNamespace(connect=handlers.append, handlers=handlers),
        consumer=SimpleNamespace(force_commit=force_commit),
        producer=producer,
    )


def test_output_goes_to_the_source_partitions_transaction_not_the_targets() -> None:
    log: list[str] = []
    txn = Transactions(fake_app(log), enabled=True)
    assert txn.tid("events", 3) == "cb-0-3"
    asyncio.run(txn.send("segment-state", b"S1", b"{}", None, ("events", 3)))
    assert log == ["send segment-state via cb-0-3"]
    assert txn.owns(("events", 3)) and not txn.owns(("events", 4))
    # partition 4 was revoked while the batch ran: nothing produced (its new owner redoes it), nothing raised
    fut: Any = asyncio.run(txn.send("segment-state", b"S2", b"{}", None, ("events", 4)))
    assert fut.done() and log == ["send segment-state via cb-0-3"] and txn.stats["revoked_outputs"] == 1


def test_a_commit_waits_for_the_batch_in_flight_to_be_acknowledged() -> None:
    log: list[str] = []
    app = fake_app(log)

    async def main() -> None:
        txn = Transactions(app, enabled=True)
        async with txn.batch():
            log.append("outputs produced")
            commit = asyncio.ensure_future(app.consumer.force_commit())  # Faust's periodic commit fires now
            await asyncio.sleep(0.01)
            assert "force_commit" not in log  # held: the batch's events are not acknowledged yet
            log.append("events acked")
        await commit

    asyncio.run(main())
    assert log == ["outputs produced", "events acked", "flush", "force_commit", "force_commit done"]


def test_a_batch_waits_while_a_commit_runs() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    app = fake_app(log, commit_gate=gate)

    async def main() -> None:
        txn = Transactions(app, enabled=True)
        txn.install()
        commit = asyncio.ensure_future(app.consumer.force_commit())
        await asyncio.sleep(0.01)

        async def batch() -> None:
            async with txn.batch():
                log.append("batch")

        b = asyncio.ensure_future(batch())
        await asyncio.sleep(0.01)
        assert "batch" not in log
        gate.set()
        await asyncio.gather(commit, b)

    asyncio.run(main())
    assert log == ["flush", "force_commit", "force_commit done", "batch"]


def test_timer_outputs_are_committed_after_the_acknowledged_offsets() -> None:
    log: list[str] = []
    app = fake_app(log, tids=("cb-0-1", "cb-0-2"))
    txn = Transactions(app, enabled=True)
    asyncio.run(txn.commit_timer_outputs({"cb-0-2", "cb-0-9"}))  # 9: not ours (revoked), skipped
    assert log == ["flush", "force_commit", "force_commit done", "commit cb-0-2", "begin cb-0-2"]
    assert txn.stats["timer_commits"] == 1


def test_at_least_once_changes_nothing() -> None:
    log: list[str] = []
    app = fake_app(log)
    original = app.consumer.force_commit
    txn = Transactions(app, enabled=False)

    async def main() -> None:
        async with txn.batch():
            pass
        await txn.commit_timer_outputs({"cb-0-3"})

    asyncio.run(main())
    txn.ack([object()])  # would fail on a real event's message if it acknowledged anything
    assert app.consumer.force_commit is original and log == [] and txn.owns(("events", 99))


def test_producers_of_partitions_no_longer_active_here_are_stopped_after_a_rebalance() -> None:
    """Faust keeps the producer of a partition that became a standby here; the new owner fences it, and when
    the partition comes back Faust would reuse the fenced producer. After each rebalance only the active
    partitions' producers remain."""
    log: list[str] = []
    app = fake_app(log, tids=("cb-0-1", "cb-0-2", "cb-0-3"))
    txn = Transactions(app, enabled=True)
    (handler,) = app.on_partitions_assigned.handlers
    assigned = [SimpleNamespace(topic="events", partition=p) for p in (1, 2)]  # 2: now a standby here
    asyncio.run(handler(app, assigned))
    assert sorted(app.producer._transaction_producers) == ["cb-0-1"]
    assert log == ["stop cb-0-2", "stop cb-0-3"] and txn.stats["stale_producers_stopped"] == 2
