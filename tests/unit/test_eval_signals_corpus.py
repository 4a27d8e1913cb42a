"""bench/eval_signals_corpus.py: seed lists, the interval over seeds, the per-seed ratios and pooling, and the
report written between the markers of an existing document (the closed-loop runs themselves need SUMO)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.eval_signals_corpus import (
    BEGIN,
    END,
    SeedResult,
    markdown_report,
    parse_seeds,
    pooled,
    t_interval,
    write_report,
)


def test_seed_lists_and_ranges() -> None:
    assert parse_seeds("1 6 100-103") == [1, 6, 100, 101, 102, 103]
    assert parse_seeds("3,3, 1") == [3, 1]
    for bad in ("x", "5-2", "1-"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_t_interval_over_seeds() -> None:
    m, lo, hi = t_interval([0.8, 0.9, 1.0])
    # mean 0.9, sd 0.1, t(2) = 4.303: half width 4.303 * 0.1 / sqrt(3) = 0.248
    assert m == pytest.approx(0.9) and hi - m == pytest.approx(0.2484, abs=1e-3) and m - lo == pytest.approx(hi - m)
    assert t_interval([0.7]) == (0.7, 0.7, 0.7)


def _run(tt: float, delay: float, tele: int = 0, unfinished: int = 0) -> dict[str, float]:
    return {"mean_travel_time_s": tt, "total_delay_veh_h": delay, "teleports": tele, "unfinished": unfinished}


def test_ratios_pooling_and_report(tmp_path: Path) -> None:
    a = SeedResult(
        100, "grid", 9, "heavy", {"fixed": _run(400, 100), "webster": _run(300, 60), "citybrain": _run(280, 50, 1)}
    )
    b = SeedResult(
        101, "spider", 12, "light", {"fixed": _run(200, 20), "webster": _run(180, 15), "citybrain": _run(190, 16)}
    )
    assert a.held_out and a.ratio("citybrain") == pytest.approx(0.7)
    p = pooled([a, b], "citybrain")
    assert p["tt_ratio"] == pytest.approx((0.7 + 0.95) / 2, abs=1e-3)
    assert p["seeds_le_fixed"] == 2 and p["seeds_le_webster"] == 1 and p["teleports"] == 1
    md = markdown_report([a, b], ["fixed", "webster", "citybrain"], "cmd")
    assert "held-out seeds" in md and "| 100 | held out | grid |" in md
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nprose before\n\n{BEGIN}\nold\n{END}\n\nprose after\n")
    write_report(doc, md)
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "old" not in text and md in text
