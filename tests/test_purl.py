"""PuRL: env transitions and rewards, the search end to end, baselines, resume, bad input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import built
from purl_jax import baselines
from purl_jax.checkpoint import CheckpointError
from purl_jax.data import Dataset, Splits
from purl_jax.dqn import DQN, DQNConfig
from purl_jax.env import (DEFAULT_ALPHAS, DEFAULT_FACTORS, EnvError, PruningEnv, RewardSpec,
                          Scores, hinge_reward, sparsity_candidates, step_reward,
                          threshold_candidates)
from purl_jax.evaluator import Evaluator
from purl_jax.graph import analyze
from purl_jax.masks import (MaskError, MaskPolicy, get_path, init_masks, magnitude_mask,
                            magnitude_masks, masked_layers, summary, threshold_mask)
from purl_jax.models import get_model
from purl_jax.search import PruneError, prune, purl_defaults, purl_search, validate

ROOT = Path(__file__).resolve().parents[1]
ALL_LAYERS = MaskPolicy(exclude_first=False, exclude_last=False)


def fake_evaluate_layer(masks, layer_name, layer_masks, episode=0):
    """Deterministic stand-in: accuracy falls with the candidate layer's sparsity."""
    kept = jnp.mean(layer_masks.reshape(layer_masks.shape[0], -1), axis=1)
    acc = 0.5 + 0.5 * kept
    return Scores(acc, -jnp.log(acc))


def tiny_env(reward_mode="dense", passes=1, evaluate_layer=fake_evaluate_layer, **kw):
    model, variables, graph, _ = built("lenet5")
    base = init_masks(variables["params"], graph, ALL_LAYERS)
    spec = RewardSpec(target_accuracy=0.9, target_sparsity=0.5, mode=reward_mode)
    return PruningEnv(variables["params"], graph, base, evaluate_layer, spec, passes=passes, **kw)


# -- pure maths --------------------------------------------------------------------------

def test_hinge_reward_formula():
    assert float(hinge_reward(0.9, 0.5, 0.9, 0.5)) == 0.0
    assert float(hinge_reward(0.95, 0.8, 0.9, 0.5)) == 0.0  # beyond both targets: no bonus
    np.testing.assert_allclose(hinge_reward(0.45, 0.25, 0.9, 0.5, beta=5.0), -5 * (0.5 + 0.5))
    np.testing.assert_allclose(hinge_reward(0.9, 0.1, 0.9, 0.5, beta=2.0), -2 * 0.8, rtol=1e-6)


def test_terminal_mode_rewards_only_the_last_step():
    dense, terminal = RewardSpec(0.9, 0.5), RewardSpec(0.9, 0.5, mode="terminal")
    assert float(step_reward(terminal, 0.5, 0.1, last=False)) == 0.0
    assert float(step_reward(terminal, 0.5, 0.1, last=True)) == float(step_reward(dense, 0.5, 0.1, False))


def test_threshold_action_is_purl_alpha_std_rule():
    kernel = jax.random.normal(jax.random.key(0), (5, 5, 3, 8))
    alphas = jnp.array([0.0, 0.5, 1.0, 2.2])
    cands = threshold_candidates(kernel, jnp.ones(kernel.shape, bool), alphas)
    for c, alpha in zip(cands, alphas):
        np.testing.assert_array_equal(c, threshold_mask(kernel, float(alpha)))
    assert bool(cands[0].all())


def test_later_visits_only_prune_more():
    kernel = jax.random.normal(jax.random.key(1), (64, 32))
    mask = threshold_mask(kernel, 1.0)
    again = threshold_candidates(kernel, mask, jnp.array([0.0, 0.5, 1.0]))
    assert bool((again <= mask[None]).all())
    assert int(again[2].sum()) < int(mask.sum())  # std of the survivors is larger
    ratios = jnp.array([0.0, 0.3, 0.9])
    by_ratio = sparsity_candidates(kernel, mask, ratios)
    assert bool((by_ratio <= mask[None]).all())
    current = 1 - float(mask.mean())
    np.testing.assert_allclose(1 - by_ratio.reshape(3, -1).mean(1), [current, current, 0.9], atol=1e-3)
    live = jnp.where(mask, kernel, 0.0)  # each candidate: a magnitude mask of the survivors
    for candidate, ratio in zip(by_ratio, [current, current, 0.9]):
        np.testing.assert_array_equal(candidate, magnitude_mask(live, ratio) & mask)


# -- environment transitions ---------------------------------------------------------------

def test_env_bookkeeping_matches_masks_summary():
    env = tiny_env()
    _, variables, graph, _ = built("lenet5")
    state = env.reset()
    assert state.accuracy == 1.0 and state.step == 0
    for action in (3, 10, 22, 5):
        out = env.score_actions(state)
        assert out.layer_masks.shape[0] == env.num_actions == 23
        assert out.next_obs.shape == (23, env.obs_dim)
        state = env.step(state, out, action)
        obs = env.observe(state)
        np.testing.assert_allclose(obs, out.next_obs[action], rtol=1e-6)
        s = summary(variables["params"], env.masks_tree(state.layer_masks), graph)
        np.testing.assert_allclose(out.sparsity[action], s["sparsity"], rtol=1e-5)
        assert state.prev_action == action
    assert out.done and state.step == env.num_steps
    with pytest.raises(EnvError, match="episode is over"):
        env.score_actions(state)


def test_env_rewards_every_step_or_only_at_the_end():
    for mode in ("dense", "terminal"):
        env = tiny_env(mode)
        state = env.reset()
        rewards = []
        for _ in range(env.num_steps):
            out = env.score_actions(state)
            rewards.append(out.reward)
            state = env.step(state, out, 12)
        expected_last = hinge_reward(out.accuracy, out.sparsity, 0.9, 0.5)
        np.testing.assert_allclose(rewards[-1], expected_last, rtol=1e-6)
        if mode == "terminal":
            assert all(float(jnp.abs(r).max()) == 0.0 for r in rewards[:-1])
        else:
            assert float(jnp.abs(rewards[0]).max()) > 0.0


def test_global_action_alpha_one_is_global_magnitude_pruning():
    env = tiny_env(action_mode="global")  # target sparsity 0.5
    one = list(np.asarray(env.actions)).index(np.float32(1.0))
    state = env.reset()
    for _ in range(env.num_steps):
        out = env.score_actions(state)
        assert bool((out.layer_masks[1:] <= out.layer_masks[:-1]).all())  # larger alpha, fewer kept
        state = env.step(state, out, one)
    _, variables, graph, _ = built("lenet5")
    expected = baselines.global_magnitude(variables["params"], env.base_masks, graph, 0.5)
    for layer, mask in zip(env.layers, state.layer_masks):
        np.testing.assert_array_equal(mask, get_path(expected, layer.path))


def test_anchored_action_scales_global_magnitudes_kept_share():
    env = tiny_env(action_mode="anchored", actions=(0.5, 1.0, 1.5))  # target sparsity 0.5
    _, variables, graph, _ = built("lenet5")
    expected = baselines.global_magnitude(variables["params"], env.base_masks, graph, 0.5)
    state = env.reset()
    for layer in env.layers:
        out = env.score_actions(state)
        g = float(get_path(expected, layer.path).mean())
        kept = out.layer_masks.reshape(3, -1).mean(1)
        np.testing.assert_allclose(kept, np.minimum([0.5 * g, g, 1.5 * g], 1.0), atol=2e-3)
        np.testing.assert_array_equal(out.layer_masks[1], get_path(expected, layer.path))
        state = env.step(state, out, 1)
    with pytest.raises(EnvError, match="factors must be > 0"):
        tiny_env(action_mode="anchored", actions=(0.0, 1.0))


@pytest.mark.parametrize("mode, grid", [("threshold", DEFAULT_ALPHAS), ("anchored", DEFAULT_FACTORS)])
def test_unset_actions_take_the_action_modes_grid(tmp_path, mode, grid):
    """Switching ``prune.action_mode`` needs no ``prune.actions``; a grid that does not fit
    the mode is refused before any work."""
    config = tiny_config(action_mode=mode, episodes=1)
    assert config.prune.actions is None
    prune(config, tmp_path, trainer=fake_trainer())
    row = _episode_rows(tmp_path / "search" / "episodes.jsonl")[0]
    assert np.isin(np.round(row["actions"], 4), np.round(grid, 4)).all(), row["actions"]
    if mode == "anchored":
        with pytest.raises(PruneError, match="factors must be > 0"):
            prune(tiny_config(action_mode=mode, actions=DEFAULT_ALPHAS), tmp_path / "bad",
                  trainer=types.SimpleNamespace(setup=lambda c: pytest.fail("work started")))


def test_replay_rebuilds_an_episodes_masks_from_its_actions():
    env = tiny_env(passes=2, action_mode="sparsity", actions=(0.0, 0.3, 0.6, 0.9),
                   max_layer_sparsity=0.8)
    state, actions = env.reset(), np.random.default_rng(0).integers(0, 4, env.num_steps)
    for a in actions:
        state = env.step(state, env.score_actions(state), int(a))
    for got, want in zip(env.replay([int(a) for a in actions]), state.layer_masks):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(EnvError, match="takes"):
        env.replay([0])


def test_max_layer_sparsity_keeps_every_layers_largest_weights():
    capped = tiny_env(action_mode="sparsity", actions=(0.0, 0.5, 1.0), max_layer_sparsity=0.7)
    free = tiny_env(action_mode="sparsity", actions=(0.0, 0.5, 1.0))
    state = capped.reset()
    for i, kernel in enumerate(capped.kernels):
        out, plain = capped.score_actions(state), free.score_actions(state)
        floor = magnitude_mask(kernel, 0.7)
        np.testing.assert_array_equal(out.layer_masks, plain.layer_masks | floor[None])
        np.testing.assert_array_equal(out.layer_masks[2], floor)  # "prune all" keeps the floor
        state = capped.step(state, out, 2)
    np.testing.assert_allclose([1 - float(m.mean()) for m in state.layer_masks], 0.7, atol=2e-3)
    with pytest.raises(EnvError, match="max_layer_sparsity"):
        tiny_env(max_layer_sparsity=0.0)


@pytest.mark.parametrize("project", ["scale", "global"])
def test_projections_respect_max_layer_sparsity(project):
    _, variables, graph, _ = built("lenet5")
    params = variables["params"]
    base = init_masks(params, graph, ALL_LAYERS)
    layers = masked_layers(base, graph)
    ratios = {l.name: 1.0 if i == len(layers) - 1 else 0.9 for i, l in enumerate(layers)}
    found = magnitude_masks(params, base, graph, ratios)  # the last layer emptied
    masks = baselines.PROJECTIONS[project](params, base, graph, found, 0.9, max_layer_sparsity=0.93)
    s = summary(params, masks, graph)
    np.testing.assert_allclose(s["sparsity"], 0.9, atol=2e-3)
    for name, v in s["layers"].items():
        assert 1 - v["kept"] / v["params"] <= 0.93 + 1 / v["params"], name
    with pytest.raises(MaskError, match="max_layer_sparsity"):
        baselines.PROJECTIONS[project](params, base, graph, found, 0.9, max_layer_sparsity=0.8)


def test_multi_pass_episodes_visit_layers_again():
    env = tiny_env(passes=2, action_mode="sparsity", actions=(0.0, 0.5, 0.9))
    assert env.num_steps == 8
    state = env.reset()
    for t in range(env.num_steps):
        state = env.step(state, env.score_actions(state), 1 if t < 4 else 2)
    sparsities = [1 - float(m.mean()) for m in state.layer_masks]
    np.testing.assert_allclose(sparsities, 0.9, atol=2e-3)


# -- the search ------------------------------------------------------------------------------

def _episode_rows(path: Path) -> list[dict]:
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


SMALL_DQN = DQNConfig(hidden=(16,), batch_size=16, min_replay=8, epsilon_decay_steps=20)


def test_search_returns_its_best_episode_and_logs(tmp_path):
    env = tiny_env()
    agent = DQN(env.obs_dim, env.num_actions, SMALL_DQN)
    out = purl_search(env, agent, episodes=4, workdir=tmp_path, progress=False)
    rows = _episode_rows(tmp_path / "episodes.jsonl")
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    best = max(rows, key=lambda r: (r["final_reward"], r["accuracy"], r["sparsity"]))
    assert out["best"]["episode"] == best["episode"]
    _, variables, graph, _ = built("lenet5")
    np.testing.assert_allclose(summary(variables["params"], out["masks"], graph)["sparsity"],
                               best["sparsity"], rtol=1e-5)


class Killed(Exception):
    pass


def test_search_resumes_after_a_kill(tmp_path):
    full = tiny_env()
    agent = DQN(full.obs_dim, full.num_actions, SMALL_DQN)
    reference = purl_search(full, agent, episodes=5, workdir=tmp_path / "ref", progress=False)

    calls = {"n": 0}

    def dies_mid_episode(masks, name, layer_masks, episode):
        calls["n"] += 1
        if calls["n"] == 1 + 4 * 2 + 2:  # reset, two full episodes, then mid-episode 3
            raise Killed
        return fake_evaluate_layer(masks, name, layer_masks)

    with pytest.raises(Killed):
        purl_search(tiny_env(evaluate_layer=dies_mid_episode), agent, episodes=5,
                    workdir=tmp_path / "run", progress=False)
    assert len(_episode_rows(tmp_path / "run" / "episodes.jsonl")) == 2
    resumed = purl_search(tiny_env(), agent, episodes=5, workdir=tmp_path / "run", progress=False)
    assert _episode_rows(tmp_path / "run" / "episodes.jsonl") == _episode_rows(tmp_path / "ref" / "episodes.jsonl")
    drop = lambda best: {k: v for k, v in best.items() if k != "seconds"}
    assert drop(resumed["best"]) == drop(reference["best"])


def test_search_with_the_real_evaluator_on_a_tiny_model(tmp_path):
    model = get_model("lenet_300_100", features=(16, 8))
    x = np.random.RandomState(0).randn(32, 28, 28, 1).astype(np.float32)
    y = np.random.RandomState(1).randint(0, 10, 32).astype(np.int32)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    graph = analyze(model, variables, (28, 28, 1))
    base = init_masks(variables["params"], graph, ALL_LAYERS)
    ev = Evaluator(model, variables, x, y, graph=graph)
    env = PruningEnv(variables["params"], graph, base, ev,
                     RewardSpec(0.1, 0.7))
    out = purl_search(env, DQN(env.obs_dim, env.num_actions, SMALL_DQN), episodes=3,
                      experience="taken", progress=False)
    s = summary(variables["params"], out["masks"], graph)
    np.testing.assert_allclose(s["sparsity"], out["best"]["sparsity"], rtol=1e-5)
    score = ev.evaluate(out["masks"])
    np.testing.assert_allclose(score.accuracy, out["best"]["accuracy"], atol=1e-6)


# -- baselines -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_baselines_hit_the_target_sparsity(name, sparsity):
    _, variables, graph, _ = built("lenet5")
    base = init_masks(variables["params"], graph, ALL_LAYERS)
    masks = baselines.BASELINES[name](variables["params"], base, graph, sparsity, seed=3)
    s = summary(variables["params"], masks, graph)
    np.testing.assert_allclose(s["sparsity"], sparsity, atol=2e-3)
    assert all(v["kept"] > 0 for v in s["layers"].values())
    if name == "uniform":
        np.testing.assert_allclose([v["sparsity"] for v in s["layers"].values()], sparsity, atol=2e-3)


def test_global_min_keeps_a_share_of_every_layer():
    _, variables, graph, _ = built("lenet5")
    base = init_masks(variables["params"], graph, ALL_LAYERS)
    masks = baselines.global_min(variables["params"], base, graph, 0.95, min_keep_fraction=0.005)
    s = summary(variables["params"], masks, graph)
    total = sum(v["params"] for v in s["layers"].values())
    for v in s["layers"].values():
        assert v["kept"] >= min(v["params"], round(0.005 * total))


def test_projection_keeps_the_allocation_shape_at_the_exact_sparsity():
    _, variables, graph, _ = built("lenet5")
    base = init_masks(variables["params"], graph, ALL_LAYERS)
    found = baselines.global_magnitude(variables["params"], base, graph, 0.8)
    masks = baselines.project_scale(variables["params"], base, graph, found, 0.95)
    before = summary(variables["params"], found, graph)["layers"]
    s = summary(variables["params"], masks, graph)
    np.testing.assert_allclose(s["sparsity"], 0.95, atol=2e-3)
    ratios = [v["kept"] / before[k]["kept"] for k, v in s["layers"].items()]
    np.testing.assert_allclose(ratios, ratios[0], rtol=0.05)  # one common scale factor
    collapsed = baselines.scale_keep(np.array([500, 25000]), np.array([0.002, 0.5]), 0.9)
    assert collapsed[0] <= 1 - 1 / 500  # a collapsed layer still keeps one weight


@pytest.mark.parametrize("start", [0.8, 0.97])  # the found masks under, then over, the target
def test_global_projection_moves_the_smallest_weights_across_layers(start):
    _, variables, graph, _ = built("lenet5")
    params = variables["params"]
    base = init_masks(params, graph, ALL_LAYERS)
    found = baselines.uniform(params, base, graph, start)  # unlike global magnitude's allocation
    masks = baselines.project_global(params, base, graph, found, 0.95)
    flat = lambda tree, f=np.asarray: np.concatenate(
        [f(get_path(tree, l.path)).ravel() for l in masked_layers(base, graph)])
    w, f, m = flat(params, lambda x: np.abs(np.asarray(x))), flat(found), flat(masks)
    assert m.sum() == w.size - round(0.95 * w.size)
    if start < 0.95:  # prunes only what found kept, its smallest, whatever the layer
        assert not (m & ~f).any() and w[m].min() >= w[f & ~m].max()
    else:  # restores only what found pruned, its largest
        assert not (f & ~m).any() and w[m & ~f].min() >= w[~m].max()
    layers = summary(params, masks, graph)["layers"]
    assert len({round(v["kept"] / v["params"], 2) for v in layers.values()}) > 1  # not uniform


# -- prune(): the command, on a fake trainer -------------------------------------------------

def fake_trainer(dense_features=(16, 8)):
    """``purl_jax.train``'s API over 200 random examples; fit only re-applies the masks."""
    rng = np.random.RandomState(0)

    def ds(n):
        return Dataset(rng.randn(n, 28, 28, 1).astype(np.float32), rng.randint(0, 10, n).astype(np.int32))

    splits = Splits("random", ds(128), ds(64), ds(64), 10, (0.0,), (1.0,))

    def init(features):
        model = get_model("lenet_300_100", num_classes=10, features=features)
        return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))

    def setup(config):
        model, variables = init((16, 8))
        return model, variables, splits, analyze(model, variables, (28, 28, 1))

    def load_dense(config, workdir, *, parts=None):
        return init(dense_features)[1]

    def fit(model, variables, data, cfg, *, masks=None, workdir=None, seed=0, desc="train",
            augment=None, teacher=None, checkpoint_name="train"):
        from purl_jax.masks import apply_masks
        return {**variables, "params": apply_masks(variables["params"], masks)}, []

    def evaluate_dataset(model, variables, dataset, *, masks=None, batch_size=1000):
        from purl_jax.masks import apply_masks
        params = variables["params"] if masks is None else apply_masks(variables["params"], masks)
        logits = model.apply({**variables, "params": params}, dataset.images)
        return dict(accuracy=float((logits.argmax(-1) == dataset.labels).mean()), loss=0.0)

    return types.SimpleNamespace(setup=setup, load_dense=load_dense, fit=fit,
                                 evaluate_dataset=evaluate_dataset,
                                 get_augment=lambda config: None)


def tiny_config(algorithm="purl", **prune):
    from purl_jax.train import base_config
    c = base_config()
    c.model, c.validation_size = "lenet_300_100", 64
    c.mask_policy = dict(exclude_first=False, exclude_last=False, exclude=())
    c.prune = purl_defaults(target_sparsity=0.8, episodes=2)
    c.prune.update(**{"algorithm": algorithm, "reward_set_size": 32, "progress": False, **prune})
    c.prune.dqn.update(hidden=(16,), batch_size=8, min_replay=8)
    return c


@pytest.mark.parametrize("algorithm", ["purl", "global_min", "random"])
def test_prune_end_to_end_on_a_fake_trainer(tmp_path, algorithm, capsys):
    result = prune(tiny_config(algorithm), tmp_path, trainer=fake_trainer())
    assert 0.0 < result["sparsity"] < 1.0 and result["kept_params"] < result["params"]
    assert json.loads((tmp_path / "result.json").read_text())["algorithm"] == algorithm
    assert "test accuracy" in capsys.readouterr().out
    for name in ("config.json", "curves.json", "summary.json", "layer_sparsity.png",
                 "accuracy_vs_sparsity.png"):
        assert (tmp_path / name).exists(), name
    curves = json.loads((tmp_path / "curves.json").read_text())["baselines"]
    assert set(curves) == {"uniform", "global", "global_min", "random"}
    assert 0.8 in curves["global"]["sparsity"]
    if algorithm == "purl":
        assert (tmp_path / "search" / "episodes.jsonl").exists()
        assert (tmp_path / "search_curves.png").exists()
    else:
        np.testing.assert_allclose(result["sparsity"], 0.8, atol=2e-3)


def test_projected_selection_returns_the_best_episode_after_projection(tmp_path):
    config = tiny_config(select="projected", episodes=4)
    result = prune(config, tmp_path, trainer=fake_trainer())
    rows = _episode_rows(tmp_path / "search" / "episodes.jsonl")
    assert len({r["projected_accuracy"] for r in rows}) > 1  # the choice is not trivial
    best = max(rows, key=lambda r: (r["projected_accuracy"], r["final_reward"]))
    assert result["best"]["episode"] == best["episode"]
    # what is returned is what was ranked: those masks, projected to the target
    np.testing.assert_allclose(result["reward_set_accuracy_before_finetune"],
                               best["projected_accuracy"], atol=1e-6)
    np.testing.assert_allclose(result["sparsity"], 0.8, atol=2e-3)


def test_finetuned_selection_reranks_the_best_projected_episodes(tmp_path):
    config = tiny_config(select="finetuned", episodes=6, select_candidates=3, select_steps=2)
    result = prune(config, tmp_path, trainer=fake_trainer())
    rows = _episode_rows(tmp_path / "search" / "episodes.jsonl")
    key = lambda r: (r["projected_accuracy"], r["final_reward"], r["accuracy"], r["sparsity"])
    by_episode = {r["episode"]: r for r in rows}
    picked = [by_episode[s["episode"]] for s in result["selection"]]
    assert len(picked) == 3 and picked[0] == max(rows, key=key)
    assert [key(r) for r in picked] == sorted(map(key, picked), reverse=True)
    assert len({tuple(r["actions"]) for r in picked}) == 3  # distinct masks, not repeats
    for r in rows:  # every better episode left out repeats one that was kept
        assert key(r) <= key(picked[-1]) or tuple(r["actions"]) in {tuple(p["actions"]) for p in picked}
    chosen = max(result["selection"], key=lambda s: s["selection_score"])
    assert result["best"]["episode"] == chosen["episode"]
    # the returned masks, replayed from that episode's actions, are the ones it ranked
    np.testing.assert_allclose(result["reward_set_accuracy_before_finetune"],
                               chosen["projected_accuracy"], atol=1e-6)
    np.testing.assert_allclose(result["sparsity"], 0.8, atol=2e-3)


@pytest.mark.parametrize("options", [dict(select="finetuned"),
                                     dict(reward_finetune=dict(steps=2, batch_size=8))])
def test_fine_tuned_scores_on_a_streamed_split_fail_before_the_dense_model(tmp_path, options):
    from purl_jax.data import StreamedDataset

    trainer = fake_trainer()
    setup, loaded = trainer.setup, []

    def streamed_setup(config):
        model, variables, splits, graph = setup(config)
        train = StreamedDataset("train", None, np.arange(len(splits.train)), 28, (0.0,), (1.0,))
        return model, variables, dataclasses.replace(splits, train=train), graph

    trainer.setup = streamed_setup
    # training it may take hours
    trainer.load_dense = lambda config, workdir, parts=None: loaded.append(workdir)
    with pytest.raises(ValueError, match="held in memory"):
        prune(tiny_config(**options), tmp_path, trainer=trainer)
    assert not loaded and not (tmp_path / "search").exists()


@pytest.mark.parametrize("field, value, match", [
    ("select_candidates", 1, "select_candidates >= 2"),  # every "select_*" row: "finetuned"
    ("select_steps", 0, "select_steps >= 1"),
    ("target_sparsity", 0.0, "target_sparsity"),
    ("target_sparsity", 1.2, "target_sparsity"),
    ("actions", (), "empty"),
    ("reward_set_size", 65, "reward_set_size"),
    ("bn_calibration", -1, "bn_calibration"),
    ("algorithm", "nope", "unknown pruning algorithm"),
    ("project", "scaled", "prune.project"),
    ("select", "best", "prune.select"),
    ("project", "none", "prune.select"),  # every "project" row runs with select="projected"
    ("max_layer_sparsity", 0.7, "max_layer_sparsity"),  # below the 0.8 target
])
def test_bad_input_fails_before_any_work(tmp_path, field, value, match):
    select = {"project": "projected", "select_candidates": "finetuned", "select_steps": "finetuned"}
    config = tiny_config(**{field: value, **({"select": select[field]} if field in select else {})})
    trainer = types.SimpleNamespace(setup=lambda c: pytest.fail("work started"))
    with pytest.raises(PruneError, match=match):
        prune(config, tmp_path, trainer=trainer)


def _recording_trainer(calls):
    """``fake_trainer`` that records its ``setup`` and ``load_dense`` calls."""
    trainer = fake_trainer()
    setup, load_dense = trainer.setup, trainer.load_dense
    trainer.setup = lambda config: calls.append("setup") or setup(config)
    trainer.load_dense = lambda config, workdir, parts=None: calls.append("load_dense") or load_dense(
        config, workdir, parts=parts)
    return trainer


@pytest.mark.parametrize("field, value, allowed", [
    ("reward_mode", "foo", "('dense', 'terminal')"),
    ("passes", 0, ">= 1"),
    ("episodes", 0, ">= 1"),
    ("checkpoint_every", 0, ">= 1"),
    ("experience", "some", "('taken', 'all_actions')"),
    ("action_mode", "alpha", "('threshold', 'sparsity', 'global', 'anchored')"),
])
def test_bad_search_settings_fail_before_any_work_naming_the_field(tmp_path, field, value, allowed):
    calls = []
    with pytest.raises(PruneError) as e:
        prune(tiny_config(**{field: value}), tmp_path, trainer=_recording_trainer(calls))
    assert f"prune.{field} " in str(e.value) and allowed in str(e.value) and repr(value) in str(e.value)
    assert not calls


def test_bn_calibration_beyond_the_training_split_fails_before_the_dense_model(tmp_path):
    calls = []
    with pytest.raises(PruneError, match=r"prune\.bn_calibration=129.* at most the 128 ") as e:
        prune(tiny_config(bn_calibration=129), tmp_path, trainer=_recording_trainer(calls))
    assert calls == ["setup"] and "calibration_subset" not in str(e.value)
    assert not (tmp_path / "search").exists()
    from purl_jax.search import reward_evaluator

    splits = fake_trainer().setup(None)[2]
    with pytest.raises(PruneError, match="prune.bn_calibration"):  # a library caller alike
        reward_evaluator(tiny_config(bn_calibration=129), None, None, splits, None, None)


def test_a_too_large_reward_set_says_what_to_change():
    with pytest.raises(PruneError) as e:
        validate(tiny_config(reward_set_size=65))
    for part in ("prune.reward_set_size=65", "config.validation_size=64", "Lower prune.reward_set_size",
                 "raise config.validation_size", "with config.dense_checkpoint"):
        assert part in str(e.value), part


def test_a_missing_dense_checkpoint_says_what_config_dense_checkpoint_must_be(tmp_path):
    from purl_jax.checkpoint import restore_variables

    (tmp_path / "empty").mkdir()
    for where, start in ((tmp_path / "nothing", "no checkpoint folder"),
                         (tmp_path / "empty", "no checkpoint in")):
        with pytest.raises(CheckpointError) as e:
            restore_variables(where, {})
        message = str(e.value)
        assert message.startswith(start) and "config.dense_checkpoint" in message
        assert "purl-jax train --workdir" in message and "dense/ subfolder" in message
        assert "checkpoints/train" in message


def test_the_module_docstring_names_every_built_in_search():
    import purl_jax.search as search

    assert "``purl``" in search.__doc__ and "``constrained``" in search.__doc__
    assert {"purl", "constrained"} <= set(search._ALGORITHMS)


def test_gradual_finetuning_ramps_to_the_searched_allocation(tmp_path):
    trainer, calls = fake_trainer(), []
    fit = trainer.fit

    def recording_fit(model, variables, data, cfg, *, masks=None, workdir=None, **kw):
        calls.append((workdir.name, 1 - np.mean([np.mean(m) for m in jax.tree.leaves(masks)]),
                      cfg.epochs))
        return fit(model, variables, data, cfg, masks=masks, workdir=workdir, **kw)

    trainer.fit = recording_fit
    config = tiny_config("global_min")
    config.finetune.update(rounds=3, epochs=2, final_epochs=5)
    config.prune.baseline_curves = False
    searched = prune(config, tmp_path / "one_shot", trainer=fake_trainer())
    result = prune(config, tmp_path / "gradual", trainer=trainer)
    assert [c[0] for c in calls] == ["round_1", "round_2", "round_3"]
    assert calls[0][1] < calls[1][1] < calls[2][1]  # sparser every round
    assert [c[2] for c in calls] == [2, 2, 5]  # the last round fine-tunes final_epochs
    assert result["layer_sparsity"] == pytest.approx(searched["layer_sparsity"], abs=1e-3)
    for field, value in (("rounds", 0), ("final_epochs", -1)):
        bad = tiny_config("global_min")
        bad.finetune[field] = value
        with pytest.raises(PruneError, match=f"finetune.{field}"):
            prune(bad, tmp_path / "bad", trainer=trainer)


def test_dense_checkpoint_of_another_model_is_refused(tmp_path):
    trainer = fake_trainer(dense_features=(32, 8))
    with pytest.raises(CheckpointError, match="does not match the model"):
        prune(tiny_config(), tmp_path, trainer=trainer)
    assert not (tmp_path / "search").exists()


# -- configs ---------------------------------------------------------------------------------

def load_config(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["lenet5_mnist_purl", "lenet300_mnist_purl",
                                  "resnet20_fmnist_purl", "resnet50_imagenet_purl",
                                  "mobilenetv2_imagenet_purl"])
def test_configs_are_valid_and_documented(name):
    module = load_config(name)
    validate(module.get_config())
    assert f"purl-jax prune --config configs/{name}.py" in module.__doc__


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50_imagenet_purl", "mobilenetv2_imagenet_purl"])
def test_paper_configs_run_one_search_step_on_mock_data(name):
    """The paper-scale MDP and agent, built from the config, on 4 random 32x32 images."""
    config = load_config(name).get_config()
    model = get_model(config.model, num_classes=10, **dict(config.model_kwargs))
    x = np.random.RandomState(0).randn(4, 32, 32, 3).astype(np.float32)
    y = np.arange(4, dtype=np.int32)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    graph = analyze(model, variables, (32, 32, 3))
    base = init_masks(variables["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    p = config.prune
    ev = Evaluator(model, variables, x, y, graph=graph)
    env = PruningEnv(variables["params"], graph, base, ev,
                     RewardSpec(0.5, p.target_sparsity, p.beta, p.reward_mode),
                     action_mode=p.action_mode, actions=p.actions, passes=p.passes)
    from purl_jax.search import dqn_config
    agent = DQN(env.obs_dim, env.num_actions, dqn_config(p.dqn))
    state = env.reset()
    out = env.score_actions(state)
    assert out.layer_masks.shape[0] == env.num_actions == 23
    a = int(agent.act(agent.init(jax.random.key(0)), env.observe(state), jax.random.key(1), 0.0))
    state = env.step(state, out, a)
    assert state.step == 1 and env.num_steps > 20


def test_prune_exports_masked_params_and_the_compact_model(tmp_path):
    """A channel-pruning baseline run leaves a compact model that rebuilds from its metadata."""
    from purl_jax import search
    from purl_jax.export import load_export
    from purl_jax.masks import (MaskPolicy, channel_masks_to_masks, init_channel_masks,
                                l1_channel_masks)

    def half_channels(ctx):
        p = ctx.variables["params"]
        groups = init_channel_masks(ctx.graph, MaskPolicy(exclude_first=False))
        cm = l1_channel_masks(p, ctx.graph, groups, 0.5)
        return dict(masks=channel_masks_to_masks(p, ctx.graph, cm, base=ctx.base_masks))

    if "test_half_channels" not in search._ALGORITHMS:
        search.register_algorithm("test_half_channels", half_channels)
    result = prune(tiny_config("test_half_channels"), tmp_path, trainer=fake_trainer())
    exported = result["export"]
    assert exported["bitmask_bytes"] < exported["dense_bytes"]
    meta = json.loads((tmp_path / "export" / "compact" / "export.json").read_text())
    small = get_model(meta["model"], num_classes=10, **meta["model_kwargs"])
    like = jax.eval_shape(small.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    restored, _, _ = load_export(tmp_path / "export" / "compact", like)
    assert sum(x.size for x in jax.tree.leaves(restored["params"])) == exported["compact_params"]
    assert exported["compact_params"] < 0.6 * result["params"]


def test_prune_streams_mock_imagenet_with_the_paper_config(mock_tfds, tmp_path):
    """``purl-jax prune`` on a streamed imagenet2012 (tfds mock: 40 random variable-size
    images per split) with the ResNet-50 recipe's data and training settings, a tiny MLP at
    32x32, one epoch and the global-magnitude search (PuRL's is data-independent and
    tested above); twice, for determinism."""
    from purl_jax import train

    config = load_config("resnet50_imagenet_purl").get_config()
    config.update(model="lenet_300_100", model_kwargs=dict(features=(16, 8)), image_size=32,
                  validation_size=16, data_dir=str(tmp_path / "tfds"))
    for cfg in (config.train, config.finetune):
        cfg.update(epochs=1, warmup_epochs=0, batch_size=8, eval_batch_size=16)
    config.prune.update(algorithm="global", reward_set_size=16, baseline_curves=False)
    model, _, splits, _ = train.setup(config)
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 1000
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (24, 16, 40)
    runs = [prune(config, tmp_path / name) for name in ("a", "b")]
    result = runs[0]
    assert 0.0 <= result["dense_test_accuracy"] <= 1.0 and 0.0 < result["sparsity"] < 1.0
    assert [h["epoch"] for h in result["finetune_history"]] == [1]  # 3 steps of 8, then validation
    assert "val_accuracy" in result["finetune_history"][0]
    dense = json.loads((tmp_path / "a" / "dense" / "metrics.jsonl").read_text().splitlines()[-1])
    assert dense["desc"] == "test" and dense["dataset"] == "imagenet2012"
    for a, b in zip(jax.tree.leaves(runs[0]["variables"]), jax.tree.leaves(runs[1]["variables"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0]["pruned_test_accuracy"] == runs[1]["pruned_test_accuracy"]


def test_gradual_finetuning_checkpoints_under_plain_folder_names(tmp_path):
    """Round r checkpoints in ``finetune/round_<r>/checkpoints/finetune``: the bar's label
    ("finetune r/R") made a folder with a space and a nested ``R/`` folder; a rerun resumes."""
    from purl_jax import train

    trainer = fake_trainer()
    trainer.fit = train.fit  # really trains (and checkpoints) the tiny MLP
    config = tiny_config("global_min")
    config.finetune.update(rounds=3, epochs=1, batch_size=32, eval_batch_size=64,
                           checkpoint_every_steps=0)
    config.prune.baseline_curves = False
    result = prune(config, tmp_path, trainer=trainer)
    assert not [p for p in tmp_path.rglob("*") if " " in str(p.relative_to(tmp_path))]
    rounds = sorted(p.name for p in (tmp_path / "finetune").iterdir())
    assert rounds == ["round_1", "round_2", "round_3"]
    for r in rounds:
        assert [p.name for p in (tmp_path / "finetune" / r / "checkpoints").iterdir()] == ["finetune"]
    assert [(h["round"], h["desc"]) for h in result["finetune_history"]] == [
        (r, f"finetune {r}/3") for r in (1, 2, 3)]
    metrics = lambda: [(tmp_path / "finetune" / r / "metrics.jsonl").read_text() for r in rounds]
    before = metrics()
    again = prune(config, tmp_path, trainer=trainer)  # every round restored, none trained again
    assert metrics() == before
    assert again["finetune_history"] == result["finetune_history"]


def test_prune_loads_the_data_once(tmp_path, monkeypatch):
    """``prune_context`` hands what its trainer's ``setup`` loaded to ``train.load_dense``,
    whether it trains the dense model or restores it from ``config.dense_checkpoint``."""
    from purl_jax import train

    fake, calls = fake_trainer(), []

    def setup(config):
        calls.append(config.dense_checkpoint)
        return fake.setup(config)

    monkeypatch.setattr(train, "setup", setup)  # counted too, if load_dense loaded on its own
    trainer = types.SimpleNamespace(setup=setup, load_dense=train.load_dense, fit=fake.fit,
                                    evaluate_dataset=fake.evaluate_dataset,
                                    get_augment=fake.get_augment)
    config = tiny_config("global_min")
    config.train.update(epochs=1, batch_size=32, eval_batch_size=64, checkpoint_every_steps=0)
    config.prune.baseline_curves = False
    prune(config, tmp_path / "a", trainer=trainer)  # trains the dense model in a/dense
    assert calls == [""] and (tmp_path / "a" / "dense" / "checkpoints" / "train").is_dir()
    config.dense_checkpoint = str(tmp_path / "a" / "dense")
    prune(config, tmp_path / "b", trainer=trainer)
    assert calls == ["", config.dense_checkpoint]
