"""The SUMO twin's tests need the ``citybrain[sumo]`` extra (``make test-sumo``); each module skips without it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def cross_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cross.sumocfg`` in a temporary folder, its ``cross.net.xml`` built by netconvert from the plain files.

    A signalised junction ``C``: approach ``WC`` (2 lanes, 250 m) eastbound to ``CE``, approach ``NC`` (1 lane)
    southbound to ``CS``; netconvert's static program: NC green 42 s, yellow 3 s, WC green 42 s, yellow 3 s.
    """
    from sensors_sim.sumo_twin import sumo_binary

    d = tmp_path_factory.mktemp("cross")
    for f in DATA.iterdir():
        shutil.copyfile(f, d / f.name)
    subprocess.run(
        [
            sumo_binary("netconvert"),
            "--node-files",
            "cross.nod.xml",
            "--edge-files",
            "cross.edg.xml",
            "--no-turnarounds",
            "true",
            "-o",
            "cross.net.xml",
        ],
        cwd=d,
        check=True,
        capture_output=True,
    )
    return d / "cross.sumocfg"
