"""Without SUMO installed, importing the SUMO twin says how to install it."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_import_without_sumo_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in ("libsumo", "traci", "traci.constants"):
        monkeypatch.setitem(sys.modules, mod, None)  # None in sys.modules: "import x" raises ImportError
    monkeypatch.delitem(sys.modules, "sensors_sim.sumo_twin", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'citybrain\[sumo\]'"):
        importlib.import_module("sensors_sim.sumo_twin")


def test_sumo_twin_command_without_sumo_exits_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    for mod in ("libsumo", "traci", "traci.constants"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.delitem(sys.modules, "sensors_sim.sumo_twin", raising=False)
    res = CliRunner().invoke(app, ["sumo-twin", "--sumocfg", __file__])
    assert res.exit_code == 2 and "pip install 'citybrain[sumo]'" in res.output
