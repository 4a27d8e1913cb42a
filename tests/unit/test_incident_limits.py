"""The model-free rules and the alarm-coverage measure behind the README's incident trade-off figures."""

from __future__ import annotations

import pytest

from bench.eval_incidents import open_share
from bench.incident_limits import slow_alarms, zero_alarms


def _rows(lane0: list[int], lane1: list[int]) -> dict[tuple[str, int], dict[int, tuple[int, float | None]]]:
    return {
        ("AB", 30 * (k + 1)): {0: (a, 45.0 if a else None), 1: (b, 45.0 if b else None)}
        for k, (a, b) in enumerate(zip(lane0, lane1, strict=True))
    }


def test_zero_rule_fires_once_per_run_of_informative_zeros() -> None:
    # lane 1 empties at step 3 while lane 0 flows; an empty row (step 5) neither breaks nor extends the run
    rows = _rows([3, 3, 3, 2, 0, 4, 3, 3], [2, 1, 0, 0, 0, 0, 2, 0])
    assert zero_alarms(rows, 1, 1) == [(90, "AB", 1), (240, "AB", 1)]
    assert zero_alarms(rows, 2, 5) == [(120, "AB", 1)]  # zeros at 90 and 120 s, with 3 + 2 others
    assert zero_alarms(rows, 3, 9) == [(180, "AB", 1)]  # 90, 120, 180 s (150 s was an empty row): 3 + 2 + 4
    assert zero_alarms(rows, 4, 1) == []


def test_slow_rule_needs_a_counted_slow_vehicle() -> None:
    rows: dict[tuple[str, int], dict[int, tuple[int, float | None]]] = {
        ("AB", 30): {0: (1, 8.0), 1: (0, None)},
        ("AB", 60): {0: (2, 30.0), 1: (1, 9.9)},
    }
    assert sorted(slow_alarms(rows, {"AB": 50.0}, 0.2)) == [(30, "AB", 0), (60, "AB", 1)]
    assert slow_alarms(rows, {"AB": 50.0}, 0.1) == []


def test_open_share_is_the_covered_part_of_the_incident() -> None:
    assert open_share([(100.0, 200.0)], 0.0, 400.0) == pytest.approx(0.25)
    assert open_share([(100.0, 300.0), (250.0, 500.0)], 0.0, 400.0) == pytest.approx(0.75)  # overlap counted once
    assert open_share([(-50.0, 50.0), (450.0, 600.0)], 0.0, 400.0) == pytest.approx(0.125)
    assert open_share([], 0.0, 400.0) == 0.0
