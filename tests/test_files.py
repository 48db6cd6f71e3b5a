"""Work-directory files: epath paths and the one-writer rule of multi-process runs.

The real two-process run is in test_distributed.py; here the writer rule is switched off
in one process (``files.is_writer`` patched), which is what every process but 0 sees.
"""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import pytest
from etils import epath

from purl_jax import files
from purl_jax import train as train_lib
from test_train import tiny_cfg, tiny_mlp, tiny_splits


def test_path_makes_local_paths_absolute_and_keeps_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = files.path("run")
    assert isinstance(local, epath.Path) and os.fspath(local) == str(tmp_path / "run")
    assert os.fspath(files.path("gs://bucket/run") / "result.json") == "gs://bucket/run/result.json"


@pytest.mark.parametrize("writer", [True, False])
def test_only_the_writer_writes(tmp_path, monkeypatch, writer):
    monkeypatch.setattr(files, "is_writer", lambda: writer)
    d = files.path(tmp_path)
    files.write_text(d / "a.json", "{}\n")
    files.append_line(d / "log.jsonl", "1")
    files.append_line(d / "log.jsonl", "2")
    files.write_bytes_atomic(d / "state.bin", b"x")
    files.save_figure(plt.figure(), d / "plot.png")
    written = sorted(p.name for p in d.iterdir())
    if not writer:
        assert written == []
        return
    assert written == ["a.json", "log.jsonl", "plot.png", "state.bin"]  # no .tmp left behind
    assert (d / "log.jsonl").read_text() == "1\n2\n"
    assert (d / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_fit_in_a_non_writer_process_saves_checkpoints_only(tmp_path, monkeypatch):
    """Orbax saves need every process; the metrics log is process 0's."""
    monkeypatch.setattr(files, "is_writer", lambda: False)
    model, variables, _ = tiny_mlp()
    _, history = train_lib.fit(model, variables, tiny_splits(), tiny_cfg(epochs=1), workdir=tmp_path)
    assert len(history) == 1
    assert not (tmp_path / "metrics.jsonl").exists()
    assert [p.name for p in (tmp_path / "checkpoints" / "train").iterdir()] == ["4"]
    monkeypatch.setattr(files, "is_writer", lambda: True)
    _, resumed = train_lib.fit(model, variables, tiny_splits(), tiny_cfg(epochs=1), workdir=tmp_path)
    assert resumed == json.loads(json.dumps(history))  # restored from the checkpoint, not retrained
    assert not (tmp_path / "metrics.jsonl").exists()
