"""Shared fixtures: small built models with concrete variables."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purl_jax.graph import analyze
from purl_jax.models import get_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small inputs keep every model quick on a CPU while exercising all its layers.
SMALL_INPUTS = {
    "lenet_300_100": (28, 28, 1), "lenet5": (28, 28, 1),
    "vgg11": (32, 32, 3), "vgg13": (32, 32, 3), "vgg16": (32, 32, 3), "vgg19": (32, 32, 3),
    "resnet20": (32, 32, 3), "resnet32": (32, 32, 3), "resnet56": (32, 32, 3),
    "resnet18": (32, 32, 3), "resnet34": (32, 32, 3), "resnet50": (32, 32, 3),
    "mobilenet_v2": (32, 32, 3),
}

# Deeper members of a family that a shallower model already covers (same blocks, more of
# them): their zoo-wide tests run with ``-m slow``, as CI's second pass does.
DEEPER = frozenset({"vgg13", "vgg16", "vgg19", "resnet32", "resnet34", "resnet56"})


def forced_cpu_devices_env(devices: int, **extra: str) -> dict[str, str]:
    """The environment for a subprocess whose jax sees ``devices`` forced CPU devices.

    Their collectives rendezvous in threads that a busy 2-core machine can starve for longer
    than XLA's default 40 s limit, which aborts the process; these tests wait up to 10 min.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **extra, XLA_FLAGS=" ".join([
        f"--xla_force_host_platform_device_count={devices}",
        "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120",
        "--xla_cpu_collective_call_terminate_timeout_seconds=600",
        "--xla_cpu_collective_timeout_seconds=600",  # multi-process (gloo) collectives
    ]))
    return env


def zoo(slow=DEEPER) -> list:
    """Every model name, those in ``slow`` marked slow, for ``parametrize``."""
    return [pytest.param(m, marks=pytest.mark.slow) if m in slow else m for m in SMALL_INPUTS]


def lecun_normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Flax's default kernel init in NumPy: normal truncated to 2 std, variance 1 / fan-in."""
    x = rng.normal(size=shape)
    while (out := np.abs(x) > 2).any():
        x[out] = rng.normal(size=int(out.sum()))
    return x * (np.prod(shape[:-1]) ** -0.5 / 0.87962566103423978)


@functools.cache
def built(name: str, num_classes: int = 10):
    """(model, variables, graph, input_shape) with random but fixed variables.

    Batch-norm statistics and scales are randomised so that masking mistakes cannot hide
    behind zero means or unit variances.
    """
    shape = SMALL_INPUTS[name]
    model = get_model(name, num_classes=num_classes)
    # Drawn with NumPy into the shapes ``init`` would give: compiling ``init`` of a deep model
    # (and one eager op per leaf) costs 25-35 s on a 2-core CPU, this under a second.
    structure = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    leaves, treedef = jax.tree.flatten(structure)
    rng = np.random.default_rng(1)
    leaves = [  # kernels as Flax's default init; scales, biases, statistics > 0.5
        lecun_normal(rng, leaf.shape) if len(leaf.shape) > 1 else np.abs(rng.normal(size=leaf.shape)) + 0.5
        for leaf in leaves
    ]
    variables = jax.tree.unflatten(treedef, [jnp.asarray(x, jnp.float32) for x in leaves])
    graph = analyze(model, variables, shape)
    return model, variables, graph, shape


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA} (present in CI, not in a user's clone)")
    return SHARED_DATA


@pytest.fixture
def mock_tfds(monkeypatch):
    """``tfds.testing.mock_data``: 40 random examples per split, no files."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    def getitems(*args, generator, serialized=False):
        # tfds 4.9.10's mock installs this as an unbound attribute, so `self` never arrives.
        return [generator[key] for key in args[-1]]

    monkeypatch.setattr(mocking, "_getitems", getitems)
    with tfds.testing.mock_data(num_examples=40):
        yield
