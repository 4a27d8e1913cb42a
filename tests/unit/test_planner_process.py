"""The signal planner's process (``streams.agents.signals``) dies with the worker that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

SCRIPT = r"""
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from streams.agents.signals import _init_planner

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_planner,
                               initargs=(None,))
    print(pool.submit(os.getpid).result(timeout=60), flush=True)
    os._exit(0)  # like a SIGKILLed worker: no pool shutdown, no atexit
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_planner_process_exits_when_its_worker_is_killed() -> None:
    # the orphan would hold a captured stdout open: read the pid line, then wait for the worker's exit only
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline().strip())
    assert proc.wait(60) == 0
    assert child != os.getpid()
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), f"planner process {child} outlived its worker"
