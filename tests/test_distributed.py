"""Multi-device and multi-host paths on CPU: forced host devices in subprocesses.

A subprocess because ``--xla_force_host_platform_device_count`` must be set before jax
starts, and the test process has already started it with one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PURL_JAX_DISTRIBUTED")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               **extra)
    return env


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
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    extra = dict(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="1",
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
