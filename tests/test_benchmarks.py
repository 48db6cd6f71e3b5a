"""Benchmark scripts stay runnable as the library changes under them."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import jax
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def in_benchmarks(monkeypatch):
    """As ``python benchmarks/x.py`` runs them: the script's folder first on the path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.chdir(BENCHMARKS.parent)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_imports_and_parses_its_arguments(script, in_benchmarks, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{script}", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_result_files_name_the_machine_and_the_command(in_benchmarks, monkeypatch, tmp_path):
    import _common

    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "mask_ops.py"), "--out", "a b.json"])
    assert _common.command() == "python benchmarks/mask_ops.py --out 'a b.json'"
    assert f"({jax.devices()[0].platform})" in _common.machine() and "cores" in _common.machine()
    _common.write_json(tmp_path / "new" / "r.json", {"rows": [1]})
    assert json.loads((tmp_path / "new" / "r.json").read_text()) == {"rows": [1]}
