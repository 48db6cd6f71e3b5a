"""Multi-device and multi-host paths on CPU: forced host devices in subprocesses.

A subprocess because ``--xla_force_host_platform_device_count`` must be set before jax
starts, and the test process has already started it with one device.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import forced_cpu_devices_env
from purl_jax import main

REPO = Path(__file__).resolve().parents[1]

# LeNet-300-100 / embedded MNIST, PuRL, tiny: 5,000 training images (the rest held out as
# validation, which only costs cheap forward passes), 2 episodes, 1 epoch each.
TINY = [
    "--config", str(REPO / "configs" / "lenet300_mnist_purl.py"),
    "--config.validation_size=55000", "--config.train.epochs=1", "--config.finetune.epochs=1",
    "--config.train.checkpoint_every_steps=0", "--config.finetune.checkpoint_every_steps=0",
    "--config.prune.episodes=2", "--config.prune.passes=1", "--config.prune.reward_set_size=512",
    "--config.prune.dqn.min_replay=8", "--config.prune.progress=False",
]

PRUNE = """
import jax
from purl_jax.main import run
assert jax.device_count() == {devices}, jax.devices()
run(["purl-jax", "prune", *{argv!r}])
"""


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = forced_cpu_devices_env(devices, **extra)
    if "PURL_JAX_DISTRIBUTED" not in extra:
        env.pop("PURL_JAX_DISTRIBUTED", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_together(runs: list[tuple[list[str], dict]], logs: Path, timeout: int) -> list[str]:
    """Starts every (argv, env) at once and returns their stdouts; output goes to files, as
    a full pipe would stall a process and so its peers, which wait on its collectives."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i, (argv, env) in enumerate(runs):
            with open(logs / f"{i}.out", "w") as out, open(logs / f"{i}.err", "w") as err:
                procs.append(subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=err))
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:  # a process that died leaves its peers waiting on a collective
        for proc in procs:
            proc.kill()
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, (logs / f"{i}.err").read_text()[-4000:]
    return [(logs / f"{i}.out").read_text() for i in range(len(runs))]


def _prune(workdir: Path, devices: int) -> dict:
    argv = [*TINY, "--workdir", str(workdir)]
    proc = subprocess.run([sys.executable, "-c", PRUNE.format(devices=devices, argv=argv)],
                          env=_env(devices), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((workdir / "result.json").read_text())


@pytest.mark.slow  # two tiny `purl-jax prune` runs: ~1-2 minutes on 2 busy CPU cores
def test_prune_on_four_devices_matches_one(tmp_path):
    """Data-parallel training and fine-tuning (batch sharded over 4 devices) and the
    evaluator's candidate axis sharded over 4 devices give the run of one device."""
    one = _prune(tmp_path / "one", 1)
    four = _prune(tmp_path / "four", 4)
    episodes = lambda d: [json.loads(l) for l in (d / "search" / "episodes.jsonl").read_text().splitlines()]
    ep1, ep4 = episodes(tmp_path / "one"), episodes(tmp_path / "four")
    assert [e["actions"] for e in ep1] == [e["actions"] for e in ep4]
    for a, b in zip(ep1, ep4):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=2e-3)
        assert a["sparsity"] == pytest.approx(b["sparsity"], abs=1e-4)
    assert one["layer_sparsity"] == pytest.approx(four["layer_sparsity"], abs=1e-4)
    assert one["sparsity"] == pytest.approx(four["sparsity"], abs=1e-4)
    assert one["dense_test_accuracy"] == pytest.approx(four["dense_test_accuracy"], abs=3e-3)
    assert one["pruned_test_accuracy"] == pytest.approx(four["pruned_test_accuracy"], abs=3e-3)


@pytest.mark.slow  # three tiny `purl-jax prune` processes: ~3-5 minutes on 2 busy CPU cores
def test_prune_on_two_processes_matches_one(tmp_path):
    """`purl-jax prune --distributed` on two processes (one device each, one work directory)
    finds what one process with two devices finds; process 0 alone writes the logs."""
    port, workdir = str(_free_port()), tmp_path / "two"
    argv = [sys.executable, "-m", "purl_jax.main", "prune", *TINY, "--workdir", str(workdir)]
    out = _run_together([(argv, _env(1, PURL_JAX_DISTRIBUTED="1", JAX_NUM_PROCESSES="2",
                                     JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_PROCESS_ID=str(i)))
                         for i in range(2)], tmp_path / "logs", timeout=900)
    assert "jax.distributed: 2 processes, 2 devices (1 local)" in out[0]
    assert "test accuracy" in out[0] and "test accuracy" not in out[1]  # process 0 prints
    two = json.loads((workdir / "result.json").read_text())
    one = _prune(tmp_path / "one", 2)
    lines = lambda path: (workdir / path).read_text().splitlines()
    assert len(lines("search/episodes.jsonl")) == 2 and len(lines("dense/metrics.jsonl")) == 2
    assert two["layer_sparsity"] == pytest.approx(one["layer_sparsity"], abs=1e-4)
    assert two["dense_test_accuracy"] == pytest.approx(one["dense_test_accuracy"], abs=3e-3)
    assert two["pruned_test_accuracy"] == pytest.approx(one["pruned_test_accuracy"], abs=3e-3)


def test_distributed_flag_is_opt_in_and_removed(monkeypatch):
    monkeypatch.delenv(main.DISTRIBUTED_ENV, raising=False)
    argv = ["purl-jax", "models"]
    assert main.maybe_initialize_distributed(argv, environ={}) is False
    assert argv == ["purl-jax", "models"]


INIT = """
import sys
import jax
from purl_jax.main import maybe_initialize_distributed
argv = sys.argv[1:]
assert maybe_initialize_distributed(argv)
assert argv == ["purl-jax", "prune", "--workdir", "w"], argv
print("processes", jax.process_count(), "devices", jax.device_count())
"""


@pytest.mark.parametrize("how", ["flag", "env"])
def test_distributed_initialize_single_process(how):
    """``--distributed`` / ``PURL_JAX_DISTRIBUTED=1`` call ``jax.distributed.initialize`` with
    the coordinator, process count and id from the environment (one process here)."""
    extra = dict(JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", JAX_NUM_PROCESSES="1",
                 JAX_PROCESS_ID="0")
    argv = ["purl-jax", "prune", "--workdir", "w"]
    if how == "flag":
        argv.insert(2, "--distributed")
    else:
        extra[main.DISTRIBUTED_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(INIT), *argv],
                          env=_env(2, **extra), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "processes 1 devices 2" in proc.stdout


FIT = """
import sys
import jax, numpy as np
process, processes, port, workdir, out = sys.argv[1:]
process, processes = int(process), int(processes)
if processes > 1:
    jax.distributed.initialize(coordinator_address=f"localhost:{{port}}", num_processes=processes,
                               process_id=process)
sys.path.insert(0, {tests!r})
from test_train import tiny_cfg, tiny_mlp, tiny_splits
from purl_jax import train
from purl_jax.masks import init_masks, magnitude_masks
assert jax.device_count() == 2 and jax.process_count() == processes, jax.devices()
model, variables, graph = tiny_mlp()
data, kwargs = tiny_splits(), dict(workdir=workdir) if workdir else {{}}


def run():  # dense training, then masked fine-tuning, as `purl-jax prune` does
    dense, h1 = train.fit(model, variables, data, tiny_cfg(epochs=2), seed=1, **kwargs)
    masks = magnitude_masks(dense["params"], init_masks(dense["params"], graph), graph, 0.5)
    tuned, h2 = train.fit(model, dense, data, tiny_cfg(epochs=1), masks=masks, seed=1,
                          desc="finetune", checkpoint_name="finetune", **kwargs)
    test = train.evaluate_dataset(model, tuned, data.test, masks=masks, batch_size=8)
    return [*jax.tree.leaves(dense), *jax.tree.leaves(tuned),
            np.array([h1[-1]["val_loss"], h2[-1]["val_loss"], test["loss"]])]


arrays = run()
if workdir:  # finished runs: every process restores the final checkpoints, trains no further
    for a, b in zip(run(), arrays, strict=True):
        np.testing.assert_array_equal(a, b)
np.savez(out, *arrays)
"""


def test_fit_on_two_processes_matches_one_process(tmp_path):
    """Two jax processes on localhost (gloo CPU collectives), one device each, train and
    fine-tune on one global mesh: both end with the same params as one process with two
    devices and the same global batches, both resume from the one checkpoint folder they
    saved together, and only process 0 writes the metrics log."""
    script = textwrap.dedent(FIT).format(tests=str(REPO / "tests"))
    port, workdir = str(_free_port()), tmp_path / "run"
    runs = [([sys.executable, "-c", script, str(i), "2", port, str(workdir), str(tmp_path / f"p{i}.npz")],
             _env(1)) for i in range(2)]
    runs.append(([sys.executable, "-c", script, "0", "1", port, "", str(tmp_path / "ref.npz")], _env(2)))
    _run_together(runs, tmp_path / "logs", timeout=240)
    p0, p1, ref = (np.load(tmp_path / f"{name}.npz") for name in ("p0", "p1", "ref"))
    assert len(p0.files) == len(ref.files) > 4
    for key in p0.files:
        np.testing.assert_array_equal(p0[key], p1[key])
        np.testing.assert_allclose(p0[key], ref[key], rtol=1e-5, atol=1e-6)
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    # One line per epoch: process 0 alone wrote them.
    assert [(r["desc"], r["epoch"]) for r in records] == [("train", 1), ("train", 2), ("finetune", 1)]
    steps = lambda desc: sorted(p.name for p in (workdir / "checkpoints" / desc).iterdir())
    assert steps("train") == ["4", "8"] and steps("finetune") == ["4"]
