"""Rewards after a short masked fine-tuning (the constrained search's option, and PuRL's per step)."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from conftest import built

from purl_jax import reward_finetune as rf
from purl_jax.data import Dataset
from purl_jax.evaluator import Evaluator
from purl_jax.masks import MaskPolicy, get_path, init_masks, set_path
from purl_jax.train import base_config


def cfg(**kw):
    return ml_collections.ConfigDict({**rf.defaults().to_dict(), **kw})


def test_steps_grow_with_the_iteration_up_to_the_cap():
    c = cfg(steps=2, growth=0.5, max_steps=4)
    assert [rf.steps_at(c, i) for i in (0, 1, 2, 4, 10)] == [2, 2, 3, 4, 4]
    assert rf.steps_at(cfg(steps=3), 100) == 3 and not rf.enabled(cfg())
    with pytest.raises(ValueError, match=">= 0"):
        rf.check(cfg(growth=-1.0))


def test_no_steps_scores_as_the_evaluator_and_steps_fit_the_data():
    model, variables, graph, shape = built("lenet5")
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(32, *shape)).astype(np.float32), rng.integers(0, 10, 32).astype(np.int32))
    masks = init_masks(variables["params"], graph)
    stacked = jax.tree.map(lambda m: np.stack([m, rng.random(m.shape) < 0.5]), masks)
    recipe = base_config().finetune
    untrained = rf.FinetunedScorer(model, variables, data, data, cfg(growth=1.0, batch_size=16), recipe)
    ev = Evaluator(model, variables, data.images, data.labels, graph=graph)
    np.testing.assert_allclose(untrained(stacked, 0), ev.evaluate_stacked(stacked).accuracy, atol=1e-6)
    # 30 steps on the reward set itself: both candidates fit it better than before
    tuned = rf.FinetunedScorer(model, variables, data, data, cfg(steps=30, batch_size=16, learning_rate=5e-4),
                               recipe)
    assert np.all(tuned(stacked, 0) > untrained(stacked, 0) + 0.2)
    with pytest.raises(ValueError, match="larger than the 32"):
        rf.FinetunedScorer(model, variables, data, data, cfg(steps=1, batch_size=64), recipe)


def test_an_adamw_recipes_decay_is_not_taken_as_sgd_l2():
    """The short fine-tuning is SGD; a recipe's AdamW decay (0.3 in the LeNet-300-100 wd
    recipe) as L2 would collapse every candidate to chance within 100 steps."""
    model, variables, graph, shape = built("lenet5")
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(32, *shape)).astype(np.float32), rng.integers(0, 10, 32).astype(np.int32))
    stacked = jax.tree.map(lambda m: m[None], init_masks(variables["params"], graph))
    scores = {}
    for optimizer, decay in (("adam", 0.3), ("adam", 0.0), ("sgd", 0.3), ("sgd", 0.0)):
        recipe = base_config().finetune
        recipe.update(optimizer=optimizer, weight_decay=decay)
        scores[optimizer, decay] = rf.FinetunedScorer(
            model, variables, data, data, cfg(steps=20, batch_size=16), recipe)._scores(
            [jax.tree.map(lambda m: m[0], stacked)], 0).loss[0]
    assert scores["adam", 0.3] == scores["adam", 0.0]
    assert scores["sgd", 0.3] != scores["sgd", 0.0]  # an SGD recipe's L2 still applies


def mock_context(config, workdir):
    """A ``PruneContext`` of ``config``'s model on 16 random images (train = reward set)."""
    from purl_jax.data import Splits
    from purl_jax.search import PruneContext

    model, variables, graph, shape = built(config.model)
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(16, *shape)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32))
    splits = Splits(name="mock", train=data, validation=data, test=data, num_classes=10, mean=(0.0,), std=(1.0,))
    ev = Evaluator(model, variables, data.images, data.labels, graph=graph)
    base = init_masks(variables["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    return PruneContext(config, workdir, model, variables, splits, graph, base, data, ev)


def test_constrained_search_scores_with_reward_finetuning(tmp_path):
    """``run_constrained`` picks the fine-tuned reward from the config, end to end on mock data."""
    from purl_jax import constrained as c
    from purl_jax.train import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist_constrained.py")
    config.prune.update(iterations=2, num_envs=2, progress=False, reward_set_size=16)
    config.prune.reward_finetune.update(steps=1, growth=1.0, batch_size=8)
    config.prune.ppo.update(epochs=1, num_minibatches=1)
    ctx = mock_context(config, tmp_path)
    score = c.score_function(config, ctx.model, ctx.variables, ctx.splits, ctx.reward_set, ctx.evaluator)
    assert isinstance(score, rf.FinetunedScorer)
    out = c.run_constrained(ctx)
    assert out["constrained"]["feasible"] and out["cost"] <= config.prune.budget


def test_scores_do_not_depend_on_the_evaluation_chunk(monkeypatch):
    """A reward set evaluated in chunks (5 + 5 + 5 + 1 images) scores as in one call."""
    model, variables, graph, shape = built("lenet5")
    rng = np.random.default_rng(4)
    data = Dataset(rng.normal(size=(16, *shape)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32))
    stacked = jax.tree.map(lambda m: np.stack([m, rng.random(m.shape) < 0.5]), init_masks(variables["params"], graph))
    scorer = rf.FinetunedScorer(model, variables, data, data, cfg(steps=2, batch_size=8), base_config().finetune)
    whole = scorer._scores([jax.tree.map(lambda m: m[i], stacked) for i in range(2)], 0)
    monkeypatch.setattr(rf, "EVAL_CHUNK", 5)
    chunked = scorer._scores([jax.tree.map(lambda m: m[i], stacked) for i in range(2)], 0)
    np.testing.assert_allclose(chunked.accuracy, whole.accuracy, atol=1e-6)
    np.testing.assert_allclose(chunked.loss, whole.loss, rtol=1e-5)


def test_constrained_search_selects_by_short_finetuning(tmp_path):
    """``prune.select = "finetuned"``: ``run_constrained`` scores its kept candidates after
    ``select_steps`` masked SGD steps on the validation split, and returns the best of them."""
    from purl_jax import constrained as c
    from purl_jax.train import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist_constrained.py")
    config.prune.update(iterations=2, num_envs=2, progress=False, reward_set_size=16,
                        select="finetuned", select_candidates=3, select_steps=2)
    config.prune.reward_finetune.batch_size = 8
    config.prune.ppo.update(epochs=1, num_minibatches=1)
    ctx = mock_context(config, tmp_path)
    select = c.select_function(config, ctx.model, ctx.variables, ctx.splits, ctx.evaluator)
    out = c.run_constrained(ctx)["constrained"]
    assert out["feasible"] and len(out["selection"]) == 3
    scores = [s["selection_score"] for s in out["selection"]]
    assert scores[0] == max(scores)
    # the chosen masks score the same again (deterministic steps, same batches)
    problem = c.make_problem(ctx.variables["params"], ctx.graph, ctx.base_masks)
    chosen = problem.build(np.asarray([out["fractions"][n] for n in problem.names], np.float32),
                           np.zeros((problem.num_steps, 1), np.float32))
    assert float(select(jax.tree.map(lambda m: m[None], chosen))[0]) == pytest.approx(scores[0])
    config.prune.select = "reward"
    assert c.select_function(config, ctx.model, ctx.variables, ctx.splits, ctx.evaluator) is None


def test_no_steps_with_calibration_scores_as_the_calibrated_evaluator():
    model, variables, graph, shape = built("resnet20")
    rng = np.random.default_rng(1)
    data = Dataset(rng.normal(size=(8, *shape)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
    calibration = rng.normal(size=(8, *shape)).astype(np.float32)
    masks = init_masks(variables["params"], graph)
    stacked = jax.tree.map(lambda m: np.stack([m, rng.random(m.shape) < 0.3]), masks)
    ev = Evaluator(model, variables, data.images, data.labels, graph=graph, calibration_images=calibration)
    scorer = rf.FinetunedScorer(model, variables, data, data, cfg(growth=1.0, batch_size=4), base_config().finetune,
                                calibration_images=ev.calibration_images)
    np.testing.assert_allclose(scorer(stacked, 0), ev.evaluate_stacked(stacked).accuracy, atol=1e-6)


def test_a_growing_step_count_does_not_recompile():
    model, variables, graph, shape = built("lenet5")
    rng = np.random.default_rng(2)
    data = Dataset(rng.normal(size=(16, *shape)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32))
    stacked = jax.tree.map(lambda m: np.stack([m, m]), init_masks(variables["params"], graph))
    scorer = rf.FinetunedScorer(model, variables, data, data, cfg(growth=1.0, batch_size=8), base_config().finetune)
    for iteration in (3, 4, 5):
        scorer(stacked, iteration)
    assert [f._cache_size() for f in (scorer._init, scorer._step, scorer._tuned)] == [1, 1, 1]


def test_purl_candidates_score_as_the_stacked_ones_and_as_the_evaluator_without_steps():
    """``evaluate_layer`` (PuRL's per-step form) agrees with the stacked form and, at 0 steps,
    with ``Evaluator.evaluate_layer`` (accuracy and loss)."""
    model, variables, graph, shape = built("lenet5")
    rng = np.random.default_rng(3)
    data = Dataset(rng.normal(size=(32, *shape)).astype(np.float32), rng.integers(0, 10, 32).astype(np.int32))
    masks = init_masks(variables["params"], graph)
    layer = graph.layer("conv2")
    kernel = np.asarray(get_path(variables["params"], layer.path))
    candidates = np.stack([np.abs(kernel) > q for q in np.quantile(np.abs(kernel), [0.0, 0.5, 0.9])])
    scorer = rf.FinetunedScorer(model, variables, data, data, cfg(growth=1.0, batch_size=8, learning_rate=1e-3),
                                base_config().finetune, graph=graph)
    ev = Evaluator(model, variables, data.images, data.labels, graph=graph)
    plain, untrained = ev.evaluate_layer(masks, "conv2", candidates), scorer.evaluate_layer(masks, "conv2", candidates, 0)
    np.testing.assert_allclose(untrained.accuracy, plain.accuracy, atol=1e-6)
    np.testing.assert_allclose(untrained.loss, plain.loss, rtol=1e-4)
    trained = scorer.evaluate_layer(masks, "conv2", candidates, 3)  # 3 steps at episode 3
    stacked = jax.tree.map(lambda m: np.stack([m] * 3), masks)
    stacked = set_path(stacked, layer.path, candidates)
    np.testing.assert_allclose(trained.accuracy, scorer(stacked, 3), atol=1e-6)
    assert not np.allclose(trained.loss, untrained.loss)
    with pytest.raises(ValueError, match="graph"):
        rf.FinetunedScorer(model, variables, data, data, cfg(steps=1, batch_size=8),
                           base_config().finetune).evaluate_layer(masks, "conv2", candidates, 0)


def test_purl_search_scores_with_reward_finetuning(tmp_path):
    """``run_purl`` scores every action after the configured SGD steps, end to end on mock data."""
    from purl_jax.search import make_env, run_purl
    from purl_jax.train import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist_purl.py")
    config.prune.update(episodes=2, progress=False, reward_set_size=16, actions=(0.0, 1.0, 2.0))
    config.prune.reward_finetune.update(steps=1, batch_size=8)
    config.prune.dqn.update(min_replay=4, batch_size=4)
    ctx = mock_context(config, tmp_path)
    assert isinstance(make_env(ctx).evaluate_layer.__self__, rf.FinetunedScorer)
    out = run_purl(ctx)
    rows = (tmp_path / "search" / "episodes.jsonl").read_text().splitlines()
    assert len(rows) == 2 and 0.0 < out["best"]["sparsity"] < 1.0
