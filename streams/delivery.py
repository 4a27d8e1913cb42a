"""The bridge's send path: every record produced to Kafka is *settled*, and no produce error ends the process.

A record is settled when one of these holds:

- Kafka acknowledged it;
- Kafka refused it for what it is (too large, corrupt: sending it again cannot help) and the records that replace
  it — the dead letters of the readings it carried — are settled (counted ``refused``);
- it is itself a dead letter and Kafka refused it: it is logged with its id, reason, size and hash and counted
  ``dead_letter_refused``, the only case where a payload does not reach Kafka (dead-letter records are capped,
  ``streams.records.DEAD_LETTER_EXCERPT_BYTES``, so this takes a broker configured below 100 kB).

Any other error (broker unavailable, timeout, leader moved, not authorised yet…) is the cluster's, not the
record's: the record is sent again with backoff (0.5 s doubling to 10 s) until Kafka takes it, counted
``unavailable``. The caller acknowledges its source (MQTT message, ``ingest`` offset) only once the record is
settled, so nothing is lost in between; a record sent again may land after later ones of its partition (the
windows' allowed lateness takes that).

Metric: ``citybrain_bridge_send_errors_total{reason}`` (``streams.metrics.BridgeMetrics``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from prometheus_client import Counter

log = logging.getLogger(__name__)

#: Errors that say the record itself can never be taken; anything that is not a ``KafkaError`` (a bug) too.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, CorruptRecordException)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class OutRecord:
    """One record to produce: ``partition`` None lets Kafka's partitioner pick by ``key``."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None


def is_record_error(exc: BaseException) -> bool:
    """True when sending the same record again cannot succeed."""
    return isinstance(exc, RECORD_ERRORS) or not isinstance(exc, KafkaError)


#: Builds the records (dead letters) that replace a refused record, from the error that refused it.
Fallback = Callable[[BaseException], list[OutRecord]]


class Delivery:
    """Sends records through ``producer`` and settles them (see the module docstring).

    Parameters
    ----------
    producer
        A started producer.
    send_errors
        ``citybrain_bridge_send_errors_total`` (label ``reason``).
    """

    def __init__(self, producer: AIOKafkaProducer, send_errors: Counter) -> None:
        self.producer = producer
        self.send_errors = send_errors

    async def send(self, rec: OutRecord, fallback: Fallback | None) -> asyncio.Future[None]:
        """Hand ``rec`` to the producer now (calls keep their order, as ``producer.send``) and return a future
        that completes, never with an error, once the record is settled.

        ``fallback`` gives the dead letters that replace ``rec`` if Kafka refuses it; ``None`` means ``rec`` is
        a dead letter itself."""
        first = await self._try_send(rec)
        return asyncio.ensure_future(self._settle(rec, first, fallback))

    async def _try_send(self, rec: OutRecord) -> asyncio.Future[Any]:
        try:
            return await self.producer.send(rec.topic, value=rec.value, key=rec.key, partition=rec.partition)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused before sending: larger than max_request_size, no metadata, …
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut

    async def _settle(self, rec: OutRecord, fut: asyncio.Future[Any], fallback: Fallback | None) -> None:
        attempt = 0
        while True:
            try:
                await fut
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_record_error(exc):
                    self.send_errors.labels("unavailable").inc()
                    wait_s = min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt)
                    attempt += 1
                    log.warning(
                        "Kafka did not take a %d-byte record for %s (%r); sending it again in %.1f s (attempt %d)",
                        len(rec.value), rec.topic, exc, wait_s, attempt + 1,
                    )  # fmt: skip
                    await asyncio.sleep(wait_s)
                    fut = await self._try_send(rec)
                    continue
                await self._refused(rec, exc, fallback)
                return

    async def _refused(self, rec: OutRecord, exc: BaseException, fallback: Fallback | None) -> None:
        if fallback is None:
            self.send_errors.labels("dead_letter_refused").inc()
            log.error(
                "Kafka refused a dead-letter record (%d bytes, key %s) for %s: %r; it is dropped (logged here)",
                len(rec.value), (rec.key or b"").decode(errors="replace"), rec.topic, exc,
            )  # fmt: skip
            return
        self.send_errors.labels("refused").inc()
        replacements = fallback(exc)
        log.error(
            "Kafka refused a %d-byte record for %s: %r; its %d payload(s) go to the dead-letter topic instead",
            len(rec.value), rec.topic, exc, len(replacements),
        )  # fmt: skip
        futs = [await self.send(r, None) for r in replacements]
        await asyncio.gather(*futs)
