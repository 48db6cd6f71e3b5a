"""The evaluator's per-candidate scores equal a plain sequential evaluation of each candidate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DEEPER, built, forced_cpu_devices_env, zoo
from purl_jax.evaluator import CPU_ROWS, FOLD_BYTES_PER_WEIGHT, Evaluator, Scores, recalibrated
from purl_jax.masks import (MaskError, MaskPolicy, apply_masks, channel_masks_to_masks, get_path, init_channel_masks,
                            init_masks, set_path)

N = 6  # images: small, and not a multiple of the micro-batches below
ALL = MaskPolicy(exclude_first=False, exclude_last=False)
MODELS = zoo(DEEPER | {"resnet50", "mobilenet_v2"})


def data(shape, n=N, seed=2):
    images = np.asarray(jax.random.normal(jax.random.key(seed), (n, *shape)))
    return images, np.arange(n) % 10


def reference(model, variables, masks, images, labels) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of one mask tree, computed the obvious way."""
    params = jax.tree.map(lambda m, p: p if m is None else np.where(m, p, 0), masks,
                          variables["params"], is_leaf=lambda x: x is None)
    logits = np.asarray(model.apply({**variables, "params": params}, images, train=False), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float((logits.argmax(-1) == labels).mean()), float(-logp[np.arange(len(labels)), labels].mean())


def assert_matches(scores: Scores, expected: list[tuple[float, float]]) -> None:
    assert scores.accuracy.shape == scores.loss.shape == (len(expected),)
    np.testing.assert_allclose(scores.accuracy, [a for a, _ in expected], atol=1e-6)
    np.testing.assert_allclose(scores.loss, [l for _, l in expected], rtol=2e-4, atol=2e-4)


def random_masks(masks, seed, k=None):
    """Random keep-masks (70%) on every masked leaf, stacked over ``k`` when given."""
    leaves, treedef = jax.tree.flatten(masks)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    shape = lambda m: m.shape if k is None else (k, *m.shape)
    return jax.tree.unflatten(treedef, [jax.random.bernoulli(key, 0.7, shape(m)) for key, m in zip(keys, leaves)])


def unstack(stacked, i):
    return jax.tree.map(lambda m: m[i], stacked)


def structured(variables, graph, seed, k):
    """K structured mask trees (random channels of every prunable group), stacked."""
    groups = init_channel_masks(graph)
    trees = []
    for i in range(k):
        keys = jax.random.split(jax.random.key(seed + i), len(groups))
        cm = {g: jax.random.bernoulli(key, 0.6, m.shape).at[0].set(True) for key, (g, m) in zip(keys, groups.items())}
        trees.append(channel_masks_to_masks(variables["params"], graph, cm))
    return jax.tree.map(lambda *ms: jnp.stack(ms), *trees)


def check_layers(ev, model, variables, masks, layers, images, labels, k, strategy="fold"):
    for t, layer in enumerate(layers):
        lm = jax.random.bernoulli(jax.random.key(10 + t), 0.7, (k, *layer.kernel_shape))
        expected = [reference(model, variables, set_path(masks, layer.path, lm[i]), images, labels)
                    for i in range(k)]
        assert_matches(ev.evaluate_layer(masks, layer.name, lm, strategy=strategy), expected)


def first_middle_last(graph):
    layers = graph.layers
    return tuple(dict.fromkeys([layers[0], layers[len(layers) // 2], layers[-1]]))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_one_layer_and_all_layer_candidates(name):
    model, variables, graph, shape = built(name)
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
    check_layers(ev, model, variables, masks, first_middle_last(graph), images, labels, k=2)
    stacked = random_masks(masks, 1, k=2)
    expected = [reference(model, variables, unstack(stacked, i), images, labels) for i in range(2)]
    assert_matches(ev.evaluate_stacked(stacked), expected)


@pytest.mark.parametrize("name", ["lenet5", "resnet20", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("strategy", ["fold", "vmap", "map"])
def test_layer_strategies_agree_with_sequential(name, strategy):
    model, variables, graph, shape = built(name)
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph, batch_size=4)  # 2 micro-batches, padded
    masks = random_masks(init_masks(variables["params"], graph), 0)  # first and last layer unmasked
    layers = graph.layers if name == "lenet5" else first_middle_last(graph)
    check_layers(ev, model, variables, masks, layers, images, labels, k=3, strategy=strategy)


@pytest.mark.parametrize("strategy", ["fold", "vmap", "map"])
def test_a_single_candidate(strategy):
    """K = 1 skips the candidate loop (``map``): the same scores as the sequential evaluation."""
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph, batch_size=4)
    masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
    check_layers(ev, model, variables, masks, graph.layers[:2], images, labels, k=1, strategy=strategy)
    if strategy != "fold":
        stacked = random_masks(masks, 5, k=1)
        expected = [reference(model, variables, unstack(stacked, 0), images, labels)]
        assert_matches(ev.evaluate_stacked(stacked, strategy=strategy), expected)


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
@pytest.mark.parametrize("strategy", ["vmap", "map"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_stacked_strategies_agree_with_sequential(name, strategy, batch_size):
    model, variables, graph, shape = built(name)
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph, strategy=strategy, batch_size=batch_size)
    stacked = random_masks(init_masks(variables["params"], graph, ALL), 3, k=3)
    expected = [reference(model, variables, unstack(stacked, i), images, labels) for i in range(3)]
    assert_matches(ev.evaluate_stacked(stacked), expected)
    one = ev.evaluate(unstack(stacked, 1))
    assert one.accuracy.shape == one.loss.shape == ()
    assert_matches(Scores(one.accuracy[None], one.loss[None]), expected[1:2])


@pytest.mark.parametrize("name", ["resnet20", "vgg11", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_structured_candidates(name):
    model, variables, graph, shape = built(name)
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    stacked = structured(variables, graph, 0, k=2)
    expected = [reference(model, variables, unstack(stacked, i), images, labels) for i in range(2)]
    for strategy in ("map", "vmap"):
        assert_matches(ev.evaluate_stacked(stacked, strategy=strategy), expected)
    # One-layer candidates: the structured kernel masks of one layer, the rest of candidate 0.
    base = unstack(stacked, 0)
    layer = graph.layers[len(graph.layers) // 2]
    lm = get_path(stacked, layer.path)
    expected = [reference(model, variables, set_path(base, layer.path, lm[i]), images, labels) for i in range(2)]
    for strategy in ("fold", "map"):
        assert_matches(ev.evaluate_layer(base, layer.name, lm, strategy=strategy), expected)


def test_dense_masks_none_and_one_candidate():
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    masks = jax.tree.map(lambda _: None, variables["params"])  # nothing masked at all
    layer = graph.layer("conv2")
    lm = jnp.ones((1, *layer.kernel_shape), bool)
    expected = [reference(model, variables, masks, images, labels)]
    assert_matches(ev.evaluate_layer(masks, "conv2", lm), expected)
    one = ev.evaluate(masks)
    assert_matches(Scores(one.accuracy[None], one.loss[None]), expected)


def test_auto_measures_once_per_layer_and_k_and_keeps_the_choice():
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
    check_layers(ev, model, variables, masks, graph.layers[:2], images, labels, k=3, strategy="auto")
    assert set(ev.strategy_choices) == {("conv1", 3), ("conv2", 3)}
    assert {strategy for strategy, _ in ev.strategy_choices.values()} <= {"fold", "map"}
    compiled = len(ev._jits)
    check_layers(ev, model, variables, masks, graph.layers[:2], images, labels, k=3, strategy="auto")
    assert len(ev._jits) == compiled  # the cached choice runs; nothing is measured again


@pytest.mark.parametrize("long_calls", [False, True])
def test_auto_compiles_each_plan_before_timing_it(monkeypatch, long_calls):
    from collections import Counter

    from purl_jax import evaluator

    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape, n=CPU_ROWS + 10)  # micro-batches and one batch: several plans
    ev = Evaluator(model, variables, images, labels, graph=graph)
    runs, real = Counter(), Evaluator._run

    def counted(self, key, k, k_pad, group, chunk, candidate_args):
        if not self._lower_only:  # an evaluation, not a compile
            runs[(key[1], chunk)] += 1
        return real(self, key, k, k_pad, group, chunk, candidate_args)

    monkeypatch.setattr(Evaluator, "_run", counted)
    if long_calls:  # every call counts as long: one timed run per plan is enough
        monkeypatch.setattr(evaluator, "LONG_CALL_SECONDS", 0.0)
    masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
    check_layers(ev, model, variables, masks, graph.layers[1:2], images, labels, k=3, strategy="auto")
    assert len(runs) >= 2  # the plans measured
    assert set(runs.values()) == {1 if long_calls else evaluator.MEASURE_RUNS}  # no compiling run
    choice = ev.strategy_choices[(graph.layers[1].name, 3)]
    check_layers(ev, model, variables, masks, graph.layers[1:2], images, labels, k=3, strategy="auto")
    assert sum(runs.values()) == len(runs) * (1 if long_calls else evaluator.MEASURE_RUNS) + 1
    assert runs[choice] == (1 if long_calls else evaluator.MEASURE_RUNS) + 1  # the kept plan ran


def test_auto_times_micro_batches_against_one_batch_for_all_layer_candidates():
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape, n=CPU_ROWS + 10)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    stacked = random_masks(init_masks(variables["params"], graph, ALL), 1, k=2)
    expected = [reference(model, variables, unstack(stacked, i), images, labels) for i in range(2)]
    assert_matches(ev.evaluate_stacked(stacked), expected)
    assert ev.strategy_choices[("all layers", 2)] in {("map", CPU_ROWS), ("map", CPU_ROWS + 10)}
    fixed = Evaluator(model, variables, images, labels, graph=graph, batch_size=64)
    assert_matches(fixed.evaluate_stacked(stacked), expected)
    assert not fixed.strategy_choices  # a given batch_size leaves one plan: nothing to measure


def test_recalibrated_statistics_are_the_batch_statistics_of_train_mode():
    """Derived independently: train mode moves each running average by (1 - momentum) towards
    its batch statistic, so from zero averages the update divided by (1 - momentum) is it."""
    model, variables, graph, shape = built("resnet20")
    images, _ = data(shape, n=16)
    masked = {**variables, "params": jax.tree.map(lambda p: p * (jnp.abs(p) > 0.05), variables["params"])}
    zeros = jax.tree.map(jnp.zeros_like, masked["batch_stats"])
    _, moved = model.apply({**masked, "batch_stats": zeros}, images, train=True, mutable=["batch_stats"])
    expected = jax.tree.map(lambda s: s / (1 - 0.9), moved["batch_stats"])  # the zoo's momentum
    got = recalibrated(model, masked, images)["batch_stats"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, expected)
    assert not np.allclose(got["bn_init"]["var"], masked["batch_stats"]["bn_init"]["var"])


def test_calibrated_candidates_match_sequential_recalibration():
    model, variables, graph, shape = built("resnet20")
    images, labels = data(shape)
    calibration, _ = data(shape, n=8, seed=5)
    ev = Evaluator(model, variables, images, labels, graph=graph, calibration_images=calibration)
    masks = random_masks(init_masks(variables["params"], graph), 0)

    def expected(m):
        tuned = recalibrated(model, {**variables, "params": apply_masks(variables["params"], m)}, calibration)
        return reference(model, tuned, m, images, labels)

    stacked = random_masks(masks, 1, k=2)
    for strategy in ("map", "vmap"):
        assert_matches(ev.evaluate_stacked(stacked, strategy=strategy),
                       [expected(unstack(stacked, i)) for i in range(2)])
    layer = first_middle_last(graph)[1]
    lm = jax.random.bernoulli(jax.random.key(3), 0.7, (3, *layer.kernel_shape))
    assert_matches(ev.evaluate_layer(masks, layer.name, lm),
                   [expected(set_path(masks, layer.path, lm[i])) for i in range(3)])
    with pytest.raises(ValueError, match="cannot re-estimate"):
        ev.evaluate_layer(masks, layer.name, lm, strategy="fold")
    lenet, lv, lgraph, lshape = built("lenet5")
    with pytest.raises(ValueError, match="has none"):
        Evaluator(lenet, lv, *data(lshape), graph=lgraph, calibration_images=data(lshape)[0])
    with pytest.raises(ValueError, match="calibration_images must have shape"):
        Evaluator(model, variables, images, labels, graph=graph, calibration_images=calibration[..., :1])


def test_big_kernels_run_in_groups_with_the_same_scores(monkeypatch):
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
    layer = graph.layer("fc1")
    # 9 bool masks + this = 48 bytes per weight: room for 2 folded candidates
    monkeypatch.setattr(ev, "_held_bytes", (2 * FOLD_BYTES_PER_WEIGHT - 9) * layer.params)
    lm = jax.random.bernoulli(jax.random.key(3), 0.7, (9, *layer.kernel_shape))
    group, k_pad, _ = ev._layout(("layer", "fold", layer.path), 9, layer.params)
    assert (group, k_pad) == (2, 10)  # 5 groups of 2, one padding
    expected = [reference(model, variables, set_path(masks, layer.path, lm[i]), images, labels) for i in range(9)]
    assert_matches(ev.evaluate_layer(masks, "fc1", lm, strategy="fold"), expected)


SUBPROCESS = """
import jax, numpy as np
from conftest import built
from test_evaluator import ALL, data, random_masks, reference, assert_matches, unstack, check_layers
from purl_jax.evaluator import Evaluator
from purl_jax.masks import init_masks
assert jax.device_count() == 2, jax.devices()
model, variables, graph, shape = built("{name}")
images, labels = data(shape)
ev = Evaluator(model, variables, images, labels, graph=graph)
assert ev.mesh is not None and ev.mesh.size == 2
masks = random_masks(init_masks(variables["params"], graph, ALL), 0)
for strategy in ("fold", "vmap", "map"):  # K = 3: padded to 4 over 2 devices
    check_layers(ev, model, variables, masks, graph.layers[:2] + graph.layers[-1:], images, labels, 3, strategy)
stacked = random_masks(masks, 1, k=3)
expected = [reference(model, variables, unstack(stacked, i), images, labels) for i in range(3)]
for strategy in ("map", "vmap"):
    assert_matches(ev.evaluate_stacked(stacked, strategy=strategy), expected)
print("ok")
"""


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_two_forced_cpu_devices(name):
    env = forced_cpu_devices_env(
        2, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(SUBPROCESS.format(name=name))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


# -- bad input ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet():
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    return ev, variables, graph, init_masks(variables["params"], graph)


def test_bad_trees(lenet):
    ev, variables, graph, masks = lenet
    missing = {k: v for k, v in masks.items() if k != "fc2"}
    with pytest.raises(MaskError, match="does not match"):
        ev.evaluate(missing)
    wrong_shape = set_path(masks, graph.layer("conv2").path, jnp.ones((3, 3), bool))
    with pytest.raises(MaskError, match="shape"):
        ev.evaluate(wrong_shape)
    with pytest.raises(MaskError, match="does not match"):
        ev.evaluate_stacked(missing)
    with pytest.raises(MaskError, match="does not match"):
        ev.evaluate_layer(missing, "conv2", jnp.ones((2, *graph.layer("conv2").kernel_shape), bool))


def test_bad_k(lenet):
    ev, variables, graph, masks = lenet
    shape = graph.layer("conv2").kernel_shape
    with pytest.raises(MaskError, match="K must be at least 1"):
        ev.evaluate_layer(masks, "conv2", jnp.ones((0, *shape), bool))
    with pytest.raises(MaskError, match="K must be at least 1"):
        ev.evaluate_stacked(jax.tree.map(lambda m: jnp.ones((0, *m.shape), bool), masks))
    uneven = jax.tree.map(lambda m: jnp.ones((2, *m.shape), bool), masks)
    uneven = set_path(uneven, graph.layer("fc1").path, jnp.ones((3, *graph.layer("fc1").kernel_shape), bool))
    with pytest.raises(MaskError, match="same leading K"):
        ev.evaluate_stacked(uneven)
    with pytest.raises(MaskError, match="leading K"):
        ev.evaluate_stacked(masks)  # no candidate axis


def test_bad_layer_input(lenet):
    ev, variables, graph, masks = lenet
    shape = graph.layer("conv2").kernel_shape
    with pytest.raises(MaskError, match="no layer named"):
        ev.evaluate_layer(masks, "conv9", jnp.ones((2, *shape), bool))
    with pytest.raises(MaskError, match=r"must have shape \(K, 5, 5, 20, 50\)"):
        ev.evaluate_layer(masks, "conv2", jnp.ones(shape, bool))
    with pytest.raises(MaskError, match="bool"):
        ev.evaluate_layer(masks, "conv2", jnp.ones((2, *shape)))
    with pytest.raises(ValueError, match="unknown strategy"):
        ev.evaluate_layer(masks, "conv2", jnp.ones((2, *shape), bool), strategy="fast")


def test_bad_data():
    model, variables, graph, shape = built("lenet5")
    images, labels = data(shape)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 28, 28, 1\)"):
        Evaluator(model, variables, images[..., 0], labels, graph=graph)
    with pytest.raises(ValueError, match="images must have shape"):
        Evaluator(model, variables, np.zeros((N, 32, 32, 1)), labels, graph=graph)
    with pytest.raises(ValueError, match="at least one"):
        Evaluator(model, variables, images[:0], labels[:0], graph=graph)
    with pytest.raises(ValueError, match="labels must be integers"):
        Evaluator(model, variables, images, labels[:-1], graph=graph)
    with pytest.raises(ValueError, match="labels must be integers"):
        Evaluator(model, variables, images, labels.astype(np.float32), graph=graph)
    with pytest.raises(ValueError, match="batch_size"):
        Evaluator(model, variables, images, labels, graph=graph, batch_size=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        Evaluator(model, variables, images, labels, graph=graph, strategy="fast")
