"""Exactly-once outputs: each output joins the Kafka transaction of the source partition that caused it.

With ``processing_guarantee="exactly_once"`` Faust keeps one transactional producer per assigned source
partition (``{app id}-{topic group}-{partition}``) and, at each commit, sends that partition's consumed offsets
into its transaction and commits it. Two things in Faust break the promise for citybrain's data path, which
is why this module exists:

* Faust picks a record's transaction from the partition it is *written to* (``TransactionManager.send``), and
  for topics its consumer does not read (``segment-state``, ``alerts``, ``incidents``, ``dead-letter``) from
  none at all: those records went out non-transactionally, so a worker killed between producing a window and
  committing its source offsets re-emitted it after the restart (faust-streaming #517 describes the symptom).
  :meth:`Transactions.tid` names the *source* partition's transaction instead; ``Pipeline.send_raw`` uses it.
* Faust's periodic commit may run while an agent is between producing a batch's outputs and acknowledging the
  batch's events: the transaction would commit the outputs with offsets that do not yet cover their source.
  :meth:`Transactions.batch` marks a batch in flight; commits (Faust's own, wrapped by :meth:`install`) wait
  until no batch is in flight, and batches wait while a commit runs. Agents acknowledge their events inside the
  batch (:meth:`ack`), so a commit sees either none or all of a batch.

Table changelog records go through Faust's producer buffer into the transaction of their partition (the
segment's source partition, see ``SegmentTable``); a commit flushes that buffer first, so they commit with the
offsets of the readings they record. Outputs a timer makes (idle flush, filling) have no source offsets:
:meth:`commit_timer_outputs` commits their transactions at once.

At least once (the default) none of this applies: agents await every output's delivery before acknowledging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

import faust

log = logging.getLogger(__name__)


class Transactions:
    """Exactly-once plumbing shared by the agents of one app (see the module docstring)."""

    def __init__(self, app: faust.App, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._commit_lock = asyncio.Lock()
        self._force_commit: Callable[..., Awaitable[bool]] | None = None
        self.stats = {
            "commits_waited": 0,
            "timer_commits": 0,
            "lost_transactions": 0,
            "revoked_outputs": 0,
            "stale_producers_stopped": 0,
        }
        if enabled:
            app.on_partitions_assigned.connect(cast(Any, self._on_partitions_assigned))

    def active_tids(self, assigned: Iterable[Any]) -> set[str]:
        """The transactions of the active (not standby) partitions in ``assigned``."""
        assignor = self.app.assignor
        return {self.tid(tp.topic, tp.partition) for tp in assigned if not assignor.is_standby(tp)}

    async def _on_partitions_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Stop the transactional producers of partitions this worker no longer processes.

        Faust stops the producers of revoked partitions only when they were not turned into standbys
        (``TransactionManager._tps_to_active_tpgs`` asks the *new* assignment), so a worker kept a producer
        for a partition another worker now owns; that worker's producer fenced it, and when the partition came
        back (its owner killed) Faust reused the fenced producer ("Invalid state transition IN_TRANSACTION ->
        IN_TRANSACTION", then ``ProducerFenced`` on the next send: the worker crashed). Without it, Faust
        starts a fresh one when the partition is assigned again.
        """
        assigned = args[0] if args else kwargs.get("assigned", set())
        producer = cast(Any, self.app.producer)
        try:
            keep = self.active_tids(assigned)
        except KeyError:  # a topic without a group yet: leave everything as Faust set it up
            return
        for tid in sorted(set(producer._transaction_producers) - keep):
            try:
                await producer.stop_transaction(tid)
            except Exception as exc:  # a fenced producer may fail to stop cleanly; it is dropped either way
                log.info("stopping stale transactional producer %s: %r", tid, exc)
                producer._transaction_producers.pop(tid, None)
            self.stats["stale_producers_stopped"] += 1
            log.info("stopped the transactional producer of %s: its partition is no longer active here", tid)

    def tid(self, topic: str, partition: int) -> str:
        """The transactional id Faust commits ``topic``'s ``partition`` offsets with."""
        return f"{self.app.conf.id}-{self.app.assignor.group_for_topic(topic)}-{partition}"

    def owns(self, source: tuple[str, int]) -> bool:
        """Whether this worker holds ``source``'s transaction (always true at least once)."""
        if not self.enabled:
            return True
        try:
            return self.tid(*source) in cast(Any, self.app.producer)._transaction_producers
        except KeyError:  # topic not assigned to any group (yet)
            return False

    def install(self) -> None:
        """Make the consumer's commits wait for batches in flight (once; the consumer exists by then)."""
        if not self.enabled or self._force_commit is not None:
            return
        consumer = cast(Any, self.app.consumer)
        original = consumer.force_commit

        async def gated_force_commit(*args: Any, **kwargs: Any) -> bool:
            async with self._commit_lock:
                if not self._idle.is_set():
                    self.stats["commits_waited"] += 1
                await self._idle.wait()
                await self.app.producer.flush()  # table changelog records still in Faust's buffer
                return bool(await original(*args, **kwargs))

        self._force_commit = original
        consumer.force_commit = gated_force_commit

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """A batch in flight: from its first output to the acknowledgement of its events."""
        if not self.enabled:
            yield
            return
        self.install()
        async with self._commit_lock:  # a commit in progress finishes first
            pass
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def ack(self, events: Iterable[Any]) -> None:
        """Acknowledge ``events`` now, inside the batch (``take_events`` would do it only at the next batch,
        when a commit could already have taken their outputs without their offsets)."""
        if not self.enabled:
            return
        consumer = self.app.consumer
        for event in events:
            event.message.ack(consumer)

    async def commit_timer_outputs(self, tids: Iterable[str]) -> None:
        """Commit the transactions a timer produced into (call outside :meth:`batch`).

        Acknowledged offsets are committed first (their transactions with them), then each remaining
        transaction in ``tids`` — it holds only outputs whose sources are already committed, and the timer's.
        """
        wanted = set(tids)
        if not self.enabled or not wanted:
            return
        self.install()
        assert self._force_commit is not None
        producer = cast(Any, self.app.producer)
        async with self._commit_lock:
            await self._idle.wait()
            await producer.flush()
            await self._force_commit()
            for tid in sorted(wanted):
                lock = producer._trn_locks.get(tid)
                if lock is None:
                    continue
                async with lock:
                    txn = producer._transaction_producers.get(tid)
                    if txn is None:  # partition revoked meanwhile: its transaction was aborted by the fence
                        self.stats["lost_transactions"] += 1
                        continue
                    try:
                        await txn.commit_transaction()
                        await txn.begin_transaction()
                    except Exception as exc:  # fenced by a new owner: the fence aborted it
                        self.stats["lost_transactions"] += 1
                        log.warning("could not commit the timer outputs of transaction %s: %r", tid, exc)
                        continue
                    self.stats["timer_commits"] += 1

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None, source: tuple[str, int]
    ) -> Awaitable[Any]:
        """Produce into the transaction of ``source`` (topic, partition).

        When this worker no longer holds that transaction (its partition was revoked by a rebalance while the
        batch ran), the record is not produced: the partition's uncommitted events are redelivered to its new
        owner, which produces it in its own transaction. Returns a delivery future either way.
        """
        tid = self.tid(*source)
        if tid not in cast(Any, self.app.producer)._transaction_producers:
            self.stats["revoked_outputs"] += 1
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return await self.app.producer.send(topic, key, value, partition, None, None, transactional_id=tid)
