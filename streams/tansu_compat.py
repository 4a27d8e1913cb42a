"""Workaround for the embedded Tansu broker numbering the first consumer-group generation 0.

aiokafka only sends LeaveGroup when ``generation > 0``, so a worker alone in its group never leaves on a
clean shutdown, and its restart waits for the ghost member to time out (measured: 110 s to Ready with
Faust defaults, docs/tansu.md). Sending LeaveGroup for generation 0 too is harmless on Apache Kafka, whose
generations start at 1, so the patch is applied whatever the broker.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)
_APPLIED = False


async def _maybe_leave_group(self: Any) -> None:
    if self.generation >= 0 and self._group_instance_id is None:
        request = LeaveGroupRequest(self.group_id, self.member_id)
        try:
            await self._send_req(request)
        except KafkaError as err:
            log.error("LeaveGroup request failed: %s", err)
        else:
            log.info("LeaveGroup request succeeded (generation %s)", self.generation)
    self.reset_generation()


def apply() -> None:
    """Patch aiokafka's GroupCoordinator once per process."""
    global _APPLIED
    if not _APPLIED:
        GroupCoordinator._maybe_leave_group = _maybe_leave_group  # type: ignore[method-assign]
        _APPLIED = True
