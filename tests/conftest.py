"""Shared fixtures. ``record`` lets fault and fuzz tests write what they measured for the fault table.

``make test-faults`` runs them (fault tests and the 10,000-payload fuzzing) and prints the table of faults
survived, payloads tried, events lost, duplicates and recovery times from
``$CITYBRAIN_ARTIFACTS/fault-results.jsonl`` (``bench/fault_table.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

ARTIFACTS = Path(os.environ.get("CITYBRAIN_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """Append one result row (fault, events, lost, duplicates, recovery_s, …) for the fault table."""
    rows: list[dict[str, Any]] = []

    def add(**row: Any) -> None:
        rows.append({"test": request.node.name, "engine": os.environ.get("CITYBRAIN_TEST_ENGINE", "embedded"), **row})

    yield add
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACTS / "fault-results.jsonl", "ab") as fh:
        for row in rows:
            row["passed"] = not (hasattr(request.node, "rep_call") and request.node.rep_call.failed)
            row["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fh.write(orjson.dumps(row) + b"\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[Any]:
    outcome: Any = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
