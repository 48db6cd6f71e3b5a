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


def test_resumable_result_files_keep_every_invocation(in_benchmarks, monkeypatch, tmp_path):
    import _common

    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"seed": 0}]))  # a bare list, as written before the header
    monkeypatch.setattr(sys, "argv", ["benchmarks/constrained_params.py", "--seeds", "1"])
    _common.write_runs(path, _common.read_runs(path) + [{"seed": 1}])
    _common.write_runs(path, _common.read_runs(path))  # the same invocation again: one entry
    monkeypatch.setattr(sys, "argv", ["benchmarks/constrained_params.py", "--seeds", "2"])
    _common.write_runs(path, _common.read_runs(path) + [{"seed": 2}])
    data = json.loads(path.read_text())
    assert [r["seed"] for r in data["rows"]] == [0, 1, 2]
    assert [i["command"].split()[-1] for i in data["invocations"]] == ["1", "2"]
    assert _common.read_runs(tmp_path / "absent.json") == []


def test_allocation_shift_keeps_the_kept_count(in_benchmarks):
    from allocation_shift import shifted

    sizes = {"stage1/a": 100, "stage1/b": 100, "stage3/a": 1000}
    sparsity = {"stage1/a": 0.5, "stage1/b": 0.7, "stage3/a": 0.9}
    kept = lambda s: sum(sizes[n] * (1 - s[n]) for n in sizes)
    out = shifted(sparsity, sizes, "stage1", "stage3", 0.2)
    assert out["stage1/a"] == out["stage1/b"] == 0.2
    assert out["stage3/a"] == pytest.approx(0.98)  # stage 1 keeps 80 more, stage 3 80 of its 100 fewer
    assert kept(out) == pytest.approx(kept(sparsity))
    with pytest.raises(ValueError, match="disjoint"):
        shifted(sparsity, sizes, "stage1", "stage1/a", 0.2)
    with pytest.raises(ValueError, match="make up"):
        shifted(sparsity, sizes, "stage1", "stage3", 0.0)  # 120 more kept, stage 3 keeps only 100


def test_compare_pairs_purl_with_global_by_seed(in_benchmarks):
    from purl_figures import paired

    row = lambda algorithm, seed, accuracy, sparsity=0.95: dict(
        algorithm=algorithm, seed=seed, target_sparsity=sparsity, pruned_test_accuracy=accuracy)
    rows = [row("global", 0, 0.980), row("purl", 0, 0.982), row("global", 1, 0.985),
            row("purl", 1, 0.984), row("purl", 2, 0.990),  # seed 2 has no global run: left out
            row("purl", 0, 0.970, 0.98)]                   # 98% has no global run at all
    out = paired(rows)
    assert list(out) == ["purl-global@0.95"]
    got = out["purl-global@0.95"]
    assert got["mean"] == pytest.approx(0.0005) and got["se"] == pytest.approx(0.0015)
    assert (got["n"], got["better"], got["worse"]) == (2, 1, 1)
