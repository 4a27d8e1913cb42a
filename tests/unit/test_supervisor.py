"""The demo's supervisor (issue #15): a bridge that exits is restarted with backoff; a clean stop or a settings
error is not. Real child processes (a Python one-liner that exits with a chosen status) stand in for the bridge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ops.runtime import ChildProcess, Supervisor


def exits_with(codes: list[int | None], tmp_path: Path) -> Callable[[], ChildProcess]:
    """Each call starts a child exiting with the next of ``codes`` (None: stays up) after a short run."""
    it = iter(codes)

    def start() -> ChildProcess:
        code = next(it)
        script = (
            "import time; time.sleep(60)" if code is None else f"import sys, time; time.sleep(0.1); sys.exit({code})"
        )
        return ChildProcess("bridge", [], {}, tmp_path / "bridge.log", argv=[sys.executable, "-c", script])

    return start


def run_until(sup: Supervisor, cond: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        sup.poll()
        time.sleep(0.02)
    assert cond(), f"restarts={sup.restarts} backoffs={sup.backoffs_s} gave_up={sup.gave_up}"


def test_a_crashing_bridge_is_restarted_with_doubling_backoff(tmp_path: Path) -> None:
    start = exits_with([1, -9, 1, None], tmp_path)
    lines: list[str] = []
    sup = Supervisor(start(), start, first_backoff_s=0.05, max_backoff_s=0.15, report=lines.append)
    run_until(sup, lambda: sup.restarts == 3 and sup.child.alive())
    assert sup.backoffs_s == [0.05, 0.1, 0.15]
    assert sup.gave_up is None
    assert any("exited with status 1; restarting" in line for line in lines), lines
    sup.child.stop(grace_s=2)


def test_a_killed_bridge_is_restarted(tmp_path: Path) -> None:
    import signal

    start = exits_with([None, None], tmp_path)
    sup = Supervisor(start(), start, first_backoff_s=0.05)
    first = sup.child
    first.signal(signal.SIGKILL)
    run_until(sup, lambda: sup.restarts == 1 and sup.child.alive())
    assert sup.child is not first and first.proc.returncode == -signal.SIGKILL
    sup.child.stop(grace_s=2)


def test_a_clean_stop_or_a_settings_error_is_not_restarted(tmp_path: Path) -> None:
    for code in (0, 2):
        start = exits_with([code], tmp_path)
        sup = Supervisor(start(), start, first_backoff_s=0.01)
        run_until(sup, lambda: sup.gave_up is not None)  # noqa: B023
        assert sup.gave_up == code and sup.restarts == 0


def test_the_bridge_exits_with_status_2_on_invalid_settings(tmp_path: Path) -> None:
    """The status the supervisor (and systemd's RestartPreventExitStatus=2) reads as "do not restart"."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")} | {"PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-m", "ops", "bridge"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "kafka.brokers" in out.stderr
