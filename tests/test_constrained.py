"""The constrained environment and search: bookkeeping, guaranteed feasibility, errors,
a tiny end-to-end search with resume, the algorithm registration and the configs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import built

from purl_jax import constrained as c
from purl_jax.budgets import BudgetError, get_cost, within_budget
from purl_jax.masks import MaskPolicy, get_path, init_masks, set_path, summary
from purl_jax.ppo_lagrangian import PPOConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST_PPO = PPOConfig(epochs=2, num_minibatches=2)


def _lenet():
    model, variables, graph, shape = built("lenet5")
    base = init_masks(variables["params"], graph)
    return model, variables, graph, shape, base


def _kept_score(stacked, iteration=0):
    """A cheap stand-in reward: the share of kept weights (no network evaluation)."""
    leaves = [m for m in jax.tree.leaves(stacked)]
    return np.asarray(sum(m.reshape(m.shape[0], -1).mean(1) for m in leaves) / len(leaves))


def _params(variables):
    return get_cost("params", variables=variables)


def _env_params(problem, model, budget, clamp=True, upper=1.0):
    return c.env_params(problem, model, model.dense - budget, clamp)._replace(upper=jnp.float32(upper))


def test_problem_and_env_bookkeeping():
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    assert problem.names == ("conv2", "fc1") and problem.action_dim == 1
    model = c.probe_costs(problem, _params(variables))
    assert model.dense == pytest.approx(1.0)
    conv2, fc1 = graph.layer("conv2").params, graph.layer("fc1").params
    total = sum(x.size for x in jax.tree.leaves(variables["params"]))
    np.testing.assert_allclose(model.reductions, [conv2 / total, fc1 / total], rtol=1e-5)
    assert model.floor == pytest.approx(1 - (conv2 + fc1) / total, rel=1e-5)

    p = _env_params(problem, model, budget=0.5, clamp=False)
    s = c.env_reset(2, 1)
    obs = c.observe(p, s)
    np.testing.assert_allclose(obs, np.r_[problem.features[0], 0.0])
    s = c.env_step(p, s, jnp.array([0.25]))
    s = c.env_step(p, s, jnp.array([1.7]))  # clipped to 1
    assert int(s.step) == 2
    np.testing.assert_allclose(s.fractions, [0.25, 1.0])
    np.testing.assert_allclose(c.observe(p, s)[-1], 1.25 / 2)
    masks = problem.build(s.fractions, s.scores)
    kept = summary(variables["params"], masks, graph)["layers"]
    assert kept["conv2"]["kept"] == conv2 - round(0.25 * conv2) and kept["fc1"]["kept"] == 0


def test_clamp_keeps_the_budget_reachable():
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    model = c.probe_costs(problem, _params(variables))
    budget = 0.2
    p = _env_params(problem, model, budget)
    s = c.env_reset(2, 1)
    s = c.env_step(p, s, jnp.array([0.0]))  # conv2 alone can be skipped: fc1 can cover it
    assert float(s.fractions[0]) == 0.0
    s = c.env_step(p, s, jnp.array([0.0]))  # fc1 must now prune what the budget needs
    r = model.reductions
    expect = (model.dense - budget) / r[1]
    np.testing.assert_allclose(s.fractions[1], expect, rtol=1e-5)
    assert _params(variables)(problem.build(s.fractions, s.scores)) <= budget + 1e-5
    # the schedule's upper clip applies, but never below the lower bound
    p2 = p._replace(upper=jnp.float32(0.5))
    s2 = c.env_step(p2, c.env_step(p2, c.env_reset(2, 1), jnp.array([0.9])), jnp.array([0.9]))
    np.testing.assert_allclose(s2.fractions[0], 0.5)
    np.testing.assert_allclose(s2.fractions[1], (model.dense - budget - 0.5 * r[0]) / r[1], rtol=1e-5)


def _user_cost(graph):
    """A non-linear user callable: squared share of kept fc1 weights plus conv2's."""
    def cost(masks):
        fc1 = np.mean(np.asarray(masks["fc1"]["kernel"]))
        conv2 = np.mean(np.asarray(masks["conv2"]["kernel"]))
        return 0.5 * fc1**2 + 0.5 * conv2
    return cost


@pytest.mark.parametrize("cost_name", ["params", "flops", "user"])
def test_projection_meets_the_budget_from_any_start(cost_name):
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    cost_fn = get_cost(_user_cost(graph) if cost_name == "user" else cost_name,
                       variables=variables, graph=graph)
    model = c.probe_costs(problem, cost_fn)
    scores = np.zeros((2, 1), np.float32)
    for budget in (model.floor + 1e-4, 0.1 if cost_name == "params" else 0.3, 0.6):
        for start in ([0.0, 0.0], [1.0, 0.0], [0.3, 0.9]):  # all-zero: the adversarial policy
            f, _, cost = c.project(problem, cost_fn, model, budget, np.array(start, np.float32), scores)
            assert within_budget(cost, budget)
            assert cost_fn(problem.build(jnp.asarray(f), jnp.asarray(scores))) == pytest.approx(cost)


def test_infeasible_budget_is_a_clear_error_before_the_search():
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)  # conv1 and fc2 stay dense
    calls = []

    def score(stacked, iteration):
        calls.append(1)
        return _kept_score(stacked)

    with pytest.raises(BudgetError, match="unreachable.*exclude_first"):
        c.search(problem, _params(variables), score, c.SearchConfig(budget=0.001, iterations=1),
                 progress=False)
    assert not calls


def test_bad_settings():
    _, variables, graph, _, base = _lenet()
    with pytest.raises(ValueError, match="action"):
        c.make_problem(variables["params"], graph, base, action="filters")
    with pytest.raises(ValueError, match="feasibility"):
        c.SearchConfig(budget=0.1, feasibility="hope")
    with pytest.raises(BudgetError, match="no masked layers"):
        c.make_problem(variables["params"], graph, jax.tree.map(lambda _: None, variables["params"]))


def test_default_policy_starts_from_the_uniform_allocation_that_meets_the_budget():
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    cost_fn = _params(variables)
    start = c.uniform_start(problem, c.probe_costs(problem, cost_fn), 0.1)
    uniform = problem.build(jnp.full(problem.num_steps, start, jnp.float32),
                            jnp.zeros((problem.num_steps, problem.action_dim)))
    assert cost_fn(uniform) == pytest.approx(0.1, abs=1e-3)  # the cost is linear in the fractions here
    # the default (init_action 0) searches from there: near-deterministic episodes meet the budget unclamped
    cfg = c.SearchConfig(budget=0.1, iterations=1, num_envs=4, feasibility="project",
                         ppo=PPOConfig(epochs=1, num_minibatches=1, init_log_std=-8.0))
    res = c.search(problem, cost_fn, _kept_score, cfg, progress=False)
    assert res.history[0]["cost_mean"] == pytest.approx(0.1, abs=0.02)  # from 0.5 it would be ~0.5
    # a clip schedule starting below the uniform fraction still lets every step reach it
    low = c.SearchConfig(**{**cfg.__dict__, "clip_start": 0.5})
    assert c.search(problem, cost_fn, _kept_score, low, progress=False).history[0]["clip"] >= start


def test_global_start_fits_the_policy_to_global_magnitude():
    from purl_jax.masks import global_magnitude_masks

    _, variables, graph, _, base = _lenet()
    # conv2's weights doubled: one global threshold then prunes it clearly less than fc1
    path = graph.layer("conv2").path
    params = set_path(variables["params"], path, 2 * get_path(variables["params"], path))
    problem = c.make_problem(params, graph, base)
    cost_fn = _params(variables)
    start = c.global_start(problem, cost_fn, 0.1)
    assert within_budget(cost_fn(problem.build(jnp.asarray(start), jnp.zeros((problem.num_steps, 1)))), 0.1)
    # the per-layer fractions of one magnitude threshold over all masked layers
    sizes = [m.size for m in problem.magnitudes]
    masks = global_magnitude_masks(params, base, graph, float(np.average(start, weights=sizes)))
    layers = summary(params, masks, graph)["layers"]
    assert [layers[n]["sparsity"] for n in problem.names] == pytest.approx(list(start), abs=2e-3)
    assert start.max() - start.min() > 0.1  # not the uniform allocation
    # near-deterministic, unclamped episodes take that allocation (the uniform one at its
    # mean fraction would cost 0.29); the start itself is a candidate
    cfg = c.SearchConfig(budget=0.1, iterations=1, num_envs=4, start="global", feasibility="project",
                         ppo=PPOConfig(epochs=1, num_minibatches=1, init_log_std=-8.0))
    res = c.search(problem, cost_fn, lambda s, it: -np.abs(_kept_score(s) - 0.3), cfg, progress=False)
    assert res.history[0]["cost_mean"] == pytest.approx(0.1, abs=0.01)
    assert list(res.fractions.values()) == pytest.approx(list(start), abs=0.02)
    with pytest.raises(ValueError, match="init_action"):
        c.SearchConfig(budget=0.1, start="global", ppo=PPOConfig(init_action=0.3))
    with pytest.raises(ValueError, match="start must be one of"):
        c.SearchConfig(budget=0.1, start="magnitude")
    channel = c.make_problem(params, graph, base, action="channel_l1", policy=MaskPolicy())
    with pytest.raises(ValueError, match='needs action="layer"'):
        c.global_start(channel, cost_fn, 0.5)


def test_anchor_keeps_each_layer_near_global_magnitude():
    _, variables, graph, _, base = _lenet()
    params = variables["params"]
    problem = c.make_problem(params, graph, base)
    cost_fn = _params(variables)
    start = c.global_start(problem, cost_fn, 0.1)
    lows, highs = c.anchor_bounds(start, problem.max_fractions, 1.0)
    kept = 1.0 - start
    np.testing.assert_allclose(1.0 - highs, kept / 2, rtol=1e-5)  # kept share at most halved
    np.testing.assert_allclose(1.0 - lows, np.minimum(2 * kept, 1.0), rtol=1e-5)  # at most doubled
    # a policy pulled towards keeping everything (reward: kept share) stays inside the
    # bounds; without them the clamp alone lets it move far from the start
    cfg = c.SearchConfig(budget=0.1, iterations=2, num_envs=8, start="global", anchor=1.0,
                         ppo=PPOConfig(epochs=1, num_minibatches=1, init_log_std=-0.5))
    res = c.search(problem, cost_fn, _kept_score, cfg, progress=False)
    assert res.cost <= 0.1
    got = np.array(list(res.fractions.values()))
    assert np.all(got >= lows - 1e-6) and np.all(got <= highs + 1e-6)
    free = c.search(problem, cost_fn, _kept_score, dataclasses.replace(cfg, anchor=0.0), progress=False)
    assert np.any(np.abs(np.array(list(free.fractions.values())) - start) > np.max(highs - lows))
    with pytest.raises(ValueError, match="anchor"):
        c.SearchConfig(budget=0.1, anchor=0.5)  # the uniform start has no allocation to anchor to


@pytest.mark.parametrize("feasibility", ["clamp", "project"])
def test_adversarial_policy_still_returns_feasible_masks(feasibility):
    # a policy that prunes (almost) nothing: its mean starts at 0.001 and 1 iteration
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    cfg = c.SearchConfig(budget=0.05, iterations=1, num_envs=4, feasibility=feasibility,
                         ppo=PPOConfig(epochs=1, num_minibatches=1, init_action=0.001, init_log_std=-8.0))
    res = c.search(problem, _params(variables), _kept_score, cfg, progress=False)
    assert res.cost <= 0.05
    assert _params(variables)(res.masks) <= 0.05
    if feasibility == "project":  # nothing clamped: the episodes themselves were over budget
        assert res.history[0]["cost_mean"] > 0.05
    else:  # every clamped episode counts as feasible, whole weights and float32 sums included
        assert res.history[0]["feasible_fraction"] == 1.0


def test_fill_gives_the_slack_under_the_budget_back():
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    cost_fn = _params(variables)
    model = c.probe_costs(problem, cost_fn)
    fractions = np.linspace(0.9, 0.99, problem.num_steps).astype(np.float32)
    scores = np.zeros((problem.num_steps, 1), np.float32)
    _, _, low = c.project(problem, cost_fn, model, 0.3, fractions, scores)
    assert low < 0.1  # as found: far under the budget
    filled, _, cost = c.project(problem, cost_fn, model, 0.3, fractions, scores, fill=True)
    assert 0.299 < cost <= 0.3
    assert cost_fn(problem.build(jnp.asarray(filled), jnp.asarray(scores))) == pytest.approx(cost)
    ratio = filled / fractions  # one factor for every layer: the searched shape is kept
    assert ratio.max() - ratio.min() < 1e-5 and ratio.max() < 1.0
    # an (almost) deterministic search that prunes 99% of every layer, wired through SearchConfig
    cfg = c.SearchConfig(budget=0.3, iterations=1, num_envs=4, feasibility="project", fill=True,
                         ppo=PPOConfig(epochs=1, num_minibatches=1, init_action=0.99, init_log_std=-8.0))
    res = c.search(problem, cost_fn, _kept_score, cfg, progress=False)
    assert res.searched_cost < 0.2 and 0.299 < res.cost <= 0.3
    assert res.to_json()["searched_cost"] == res.searched_cost


def test_projection_keeps_the_cost_it_measured_at_each_point_it_measured_once():
    # a latency-like cost never measures the same twice: each bisection point is measured
    # once, and the cost returned is the one measured at the returned fractions
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    params = _params(variables)
    model = c.probe_costs(problem, params)
    scores = np.zeros((problem.num_steps, 1), np.float32)
    calls = []

    def drifting(masks):
        calls.append(float(params(masks)) + 1e-6 * len(calls))
        return calls[-1]

    for start, fill in (([0.0, 0.0], False), ([0.9, 0.99], True)):
        calls.clear()
        f, _, cost = c.project(problem, drifting, model, 0.3, np.array(start, np.float32), scores,
                               iterations=8, fill=fill)
        assert len(calls) == 1 + 8 and cost <= 0.3 and cost in calls[1:]
        built_cost = float(params(problem.build(jnp.asarray(f), jnp.asarray(scores))))
        assert cost == pytest.approx(built_cost + 1e-6 * calls.index(cost), abs=1e-9)
    calls.clear()
    c.global_start(problem, drifting, 0.1, iterations=8)
    assert len(calls) == 8


def test_tiny_search_end_to_end_and_resume(tmp_path):
    model, variables, graph, shape, base = _lenet()
    from purl_jax.evaluator import Evaluator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    ev = Evaluator(model, variables, x, y, graph=graph)
    score = lambda stacked, iteration: np.asarray(ev.evaluate_stacked(stacked).accuracy)
    problem = c.make_problem(variables["params"], graph, base)
    cost_fn = _params(variables)
    cfg = c.SearchConfig(budget=0.1, iterations=2, num_envs=4, checkpoint_every=1, ppo=FAST_PPO)
    first = c.search(problem, cost_fn, score, cfg, tmp_path, progress=False)
    assert first.cost <= 0.1 and cost_fn(first.masks) <= 0.1
    assert (tmp_path / "training.png").exists() and (tmp_path / "agent.pkl").exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert {"reward_mean", "cost_mean", "nu", "budget"} <= set(json.loads(lines[0]))
    # "killed" after 2 iterations: a longer run resumes at iteration 3
    more = c.search(problem, cost_fn, score, c.SearchConfig(**{**cfg.__dict__, "iterations": 3}),
                    tmp_path, progress=False)
    assert [h["iteration"] for h in more.history] == [1, 2, 3]
    assert more.history[:2] == first.history
    assert json.loads((tmp_path / "search.json").read_text())["feasible"]
    with pytest.raises(ValueError, match="another search"):
        c.search(problem, cost_fn, score, c.SearchConfig(budget=0.2, iterations=3), tmp_path,
                 progress=False)


def test_keep_ranks_feasible_first_then_by_reward_and_keeps_the_earlier_on_a_tie():
    cand = lambda name, acc, feasible=True: dict(name=name, accuracy=acc, feasible=feasible)
    top = c._keep([], [cand("a", 0.5, False), cand("b", 0.4), cand("c", 0.6)], 2)
    assert [t["name"] for t in top] == ["c", "b"]
    top = c._keep(top, [cand("d", 0.6), cand("e", 0.9, False), cand("f", 0.45)], 3)
    assert [t["name"] for t in top] == ["c", "d", "f"]


def test_select_fn_picks_among_the_best_candidates_and_every_one_meets_the_budget(tmp_path):
    """``select_candidates`` keeps the best episodes by reward; ``select_fn`` (here: fewest kept
    conv2 weights, which the kept-share reward does not prefer) chooses among them."""
    _, variables, graph, _, base = _lenet()
    problem = c.make_problem(variables["params"], graph, base)
    cost_fn = _params(variables)
    path = graph.layer("conv2").path
    conv2_pruned = lambda stacked: 1.0 - np.asarray(get_path(stacked, path)).reshape(
        len(jax.tree.leaves(stacked)[0]), -1).mean(1)
    cfg = c.SearchConfig(budget=0.3, iterations=2, num_envs=4, ppo=FAST_PPO)
    plain = c.search(problem, cost_fn, _kept_score, cfg, progress=False)
    assert plain.selection is None and "selection" not in plain.to_json()
    calls = []
    picked = c.search(problem, cost_fn, _kept_score, c.SearchConfig(**{**cfg.__dict__, "select_candidates": 5}),
                      tmp_path, progress=False, select_fn=lambda m: calls.append(m) or conv2_pruned(m))
    sel = picked.selection
    assert len(calls) == 1 and len(sel) == 5
    assert sel[0]["selection_score"] == max(s["selection_score"] for s in sel)
    # the same episodes as the plain search: its best by reward is among those kept
    assert [h["best_accuracy"] for h in picked.history] == [h["best_accuracy"] for h in plain.history]
    assert max(s["reward_accuracy"] for s in sel) == plain.history[-1]["best_accuracy"]
    assert all(s["cost"] <= cfg.budget for s in sel) and cost_fn(picked.masks) <= cfg.budget
    assert 1.0 - float(np.asarray(get_path(picked.masks, path)).mean()) == pytest.approx(sel[0]["selection_score"])
    assert json.loads((tmp_path / "search.json").read_text())["selection"] == sel
    # resumed when finished: the kept scores are reused, not computed again
    again = c.search(problem, cost_fn, _kept_score, c.SearchConfig(**{**cfg.__dict__, "select_candidates": 5}),
                     tmp_path, progress=False, select_fn=lambda m: pytest.fail("scored again"))
    assert again.selection == sel and again.fractions == picked.fractions
    # one candidate: the select_fn is not called and the result is the plain search's
    single = c.search(problem, cost_fn, _kept_score, cfg, progress=False, select_fn=lambda m: pytest.fail("called"))
    assert single.fractions == plain.fractions


def test_select_settings_are_checked_before_any_work(tmp_path):
    import types

    from purl_jax.search import PruneError, prune
    from purl_jax.train import base_config

    config = base_config()
    trainer = types.SimpleNamespace(setup=lambda c: pytest.fail("work started"))
    for change, match in ((dict(select="best"), "prune.select must be one of"),
                          (dict(select="finetuned", select_candidates=1), "select_candidates >= 2"),
                          (dict(select="finetuned", select_steps=0), "select_steps >= 1"),
                          (dict(feasibility="hope"), "feasibility")):
        config.prune = c.constrained_defaults(0.3)
        config.prune.update(change)
        with pytest.raises(PruneError, match=match):
            prune(config, tmp_path, trainer=trainer)


@pytest.mark.slow  # ~100 s on 2 busy CPU cores: ResNet-20 init, 11 channel steps, compiles
def test_channel_actions_under_a_flops_budget():
    _, variables, graph, _ = built("resnet20")
    policy = MaskPolicy()
    problem = c.make_problem(variables["params"], graph, None, action="channel", policy=policy)
    assert problem.action_dim == 64 and problem.action == "channel"
    assert np.all(problem.max_fractions < 1)  # one channel per group always stays
    cost_fn = get_cost("flops", graph=graph)
    cfg = c.SearchConfig(budget=0.5, iterations=1, num_envs=2, ppo=PPOConfig(epochs=1, num_minibatches=1))
    res = c.search(problem, cost_fn, _kept_score, cfg, progress=False)
    assert res.cost <= 0.5 and cost_fn(res.masks) <= 0.5


def test_layer_latency_cost_sees_channel_pruning():
    _, variables, graph, _ = built("lenet5")
    cost = c.layer_latency_cost(graph, batch_size=8, repeats=2)
    dense = init_masks(variables["params"], graph)
    assert cost(dense) == pytest.approx(1.0)
    half = dict(dense)
    half["fc1"] = {"kernel": dense["fc1"]["kernel"].at[:, 250:].set(False)}
    assert cost(half) != cost(dense)


def test_paired_latency_table_cancels_a_change_of_machine_speed():
    _, variables, graph, _ = built("lenet5")
    speed = [1.0]
    clock = lambda fn, args: float(np.prod(args[1].shape)) / speed[0]  # time ~ kernel size
    paired = c.layer_latency_cost(graph, batch_size=2, repeats=1, levels=None, clock=clock)
    unpaired = c.layer_latency_cost(graph, batch_size=2, repeats=1, levels=None, paired=False, clock=clock)
    speed[0] = 0.5  # the machine slows down after the dense layers were timed
    dense = init_masks(variables["params"], graph)
    half = dict(dense)
    half["fc1"] = {"kernel": dense["fc1"]["kernel"].at[:, 250:].set(False)}  # 250 of 500 outputs
    sizes = {"conv1": 5 * 5 * 20, "conv2": 5 * 5 * 20 * 50, "fc1": 800 * 500, "fc2": 500 * 10}
    exact = (sum(sizes.values()) - sizes["fc1"] / 2) / sum(sizes.values())
    assert paired(dense) == unpaired(dense) == pytest.approx(1.0)
    assert paired(half) == pytest.approx(exact)
    assert unpaired(half) == pytest.approx(1.0)  # fc1 at half width, timed at half speed


def test_registered_as_the_constrained_algorithm():
    from purl_jax.search import get_algorithm

    assert get_algorithm("constrained") is c.run_constrained


def _load(name):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("name", ["lenet5_mnist_constrained", "resnet20_fmnist_constrained",
                                  "resnet20_fmnist_latency_constrained",
                                  "vgg16_cifar10_constrained", "resnet18_cifar10_constrained"])
def test_configs_build(name):
    config = _load(name)
    assert config.prune.algorithm == "constrained"
    cfg = c.search_config(config.prune, config.prune.budget, config.seed)
    assert cfg.budget == config.prune.budget


@pytest.mark.slow  # minutes on 2 CPU cores: VGG-16 and ResNet-18 compile and probe costs
@pytest.mark.parametrize("name,shape", [("vgg16_cifar10_constrained", (32, 32, 3)),
                                        ("resnet18_cifar10_constrained", (64, 64, 3))])
def test_paper_configs_one_step_on_mock_data(name, shape, tmp_path):
    """The whole ``run_constrained`` path for one iteration on small random arrays."""
    from purl_jax.data import Dataset, Splits
    from purl_jax.graph import analyze
    from purl_jax.search import PruneContext

    config = _load(name)
    config.prune.update(iterations=1, num_envs=2, progress=False, reward_set_size=8)
    config.prune.ppo.update(epochs=1, num_minibatches=1)
    model, variables, _, _ = built(config.model)
    graph = analyze(model, variables, shape)  # costs at this test's input size
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(8, *shape)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
    splits = Splits(name="mock", train=data, validation=data, test=data, num_classes=10,
                    mean=(0.0,) * 3, std=(1.0,) * 3)
    base = init_masks(variables["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    from purl_jax.evaluator import Evaluator

    ev = Evaluator(model, variables, data.images, data.labels, graph=graph)
    ctx = PruneContext(config, tmp_path, model, variables, splits, graph, base, data, ev)
    out = c.run_constrained(ctx)
    assert out["constrained"]["feasible"] and out["cost"] <= 0.1 and out["budget"] == 0.1
    assert (tmp_path / "search" / "metrics.jsonl").exists()
    assert _params(variables)(out["masks"]) <= 0.1


# -- prune(): the budget sweep end to end, on a fake trainer ---------------------------------

def _fake_trainer():
    """``purl_jax.train``'s API over random examples; fit only re-applies the masks."""
    import types

    from purl_jax.data import Dataset, Splits
    from purl_jax.graph import analyze
    from purl_jax.masks import apply_masks
    from purl_jax.models import get_model

    rng = np.random.RandomState(0)
    ds = lambda n: Dataset(rng.randn(n, 28, 28, 1).astype(np.float32),
                           rng.randint(0, 10, n).astype(np.int32))
    splits = Splits("random", ds(64), ds(64), ds(64), 10, (0.0,), (1.0,))
    model = get_model("lenet_300_100", num_classes=10, features=(16, 8))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    fits = []

    def fit(model, variables, data, cfg, *, masks=None, workdir=None, seed=0, desc="train",
            augment=None, teacher=None, checkpoint_name="train"):
        fits.append(dict(workdir=workdir, augment=augment))
        return {**variables, "params": apply_masks(variables["params"], masks)}, []

    def evaluate_dataset(model, variables, dataset, *, masks=None, batch_size=1000):
        params = variables["params"] if masks is None else apply_masks(variables["params"], masks)
        logits = model.apply({**variables, "params": params}, dataset.images)
        return dict(accuracy=float((logits.argmax(-1) == dataset.labels).mean()), loss=0.0)

    return types.SimpleNamespace(
        setup=lambda config: (model, variables, splits, analyze(model, variables, (28, 28, 1))),
        load_dense=lambda config, workdir, parts=None: variables, fit=fit, evaluate_dataset=evaluate_dataset,
        get_augment=lambda config: "the-augment", fits=fits)


def test_budget_sweep_through_prune_on_a_fake_trainer(tmp_path, monkeypatch, capsys):
    from purl_jax.search import prune
    from purl_jax.train import base_config

    trainer = _fake_trainer()
    monkeypatch.setattr(c, "_trainer", lambda ctx: trainer)
    config = base_config()
    config.model, config.validation_size = "lenet_300_100", 64
    config.mask_policy = dict(exclude_first=False, exclude_last=False, exclude=())
    config.prune = c.constrained_defaults(0.1, cost="params", iterations=2, num_envs=4)
    # budget as --config.prune.budget=0.3 sets it; 0.3 joins the sweep
    config.prune.update(budget=0.3, budgets=(0.5,), reward_set_size=32, progress=False,
                        baseline_curves=False, front_baselines=("global",))
    config.prune.ppo.update(epochs=1, num_minibatches=1)
    result = prune(config, tmp_path, trainer=trainer)

    front = json.loads((tmp_path / "front.json").read_text())
    assert [(r["method"], r["budget"]) for r in front] == [
        ("constrained", 0.5), ("global", 0.5), ("constrained", 0.3), ("global", 0.3)]
    for r in front:
        assert r["cost"] <= r["budget"] and 0.0 <= r["test_accuracy"] <= 1.0
        if r["method"] == "constrained":
            assert r["feasible"]
        else:  # placed at the budget: the least global sparsity that meets it
            assert r["budget"] - r["cost"] < 0.01 and 0.0 < r["sparsity"] < 1.0
    assert (tmp_path / "front.png").exists()
    assert any("budget_0.3/global" in str(f["workdir"]) for f in trainer.fits)
    # the main budget is searched once, in search/ (where the report reads its log)
    assert (tmp_path / "search" / "metrics.jsonl").exists()
    assert not (tmp_path / "search" / "budget_0.3" / "agent.pkl").exists()
    assert (tmp_path / "search" / "budget_0.5" / "agent.pkl").exists()
    assert result["budget"] == 0.3 and result["cost_name"] == "params"
    assert result["cost"] <= 0.3
    assert f"{result['cost']:.4f} / 0.3000" in capsys.readouterr().out  # the printed table
    assert result["kept_params"] <= 0.3 * result["params"]  # independent of the cost function
    saved = json.loads((tmp_path / "result.json").read_text())
    assert {"budget", "cost", "cost_name"} <= set(saved)
    summary_ = json.loads((tmp_path / "summary.json").read_text())
    assert summary_["budget"] == 0.3 and summary_["cost"] <= 0.3
    # no sparsity target beside the budget (it was 1 - the default budget, stale after an override)
    assert "target_sparsity" not in saved and "target_sparsity" not in summary_
    assert (tmp_path / "search_curves.png").exists()
    # fine-tuning: 2 sweep budgets, 2 baselines + prune()'s own, all with the config's augmentation
    assert len(trainer.fits) == 5 and {f["augment"] for f in trainer.fits} == {"the-augment"}


@pytest.mark.parametrize("front_baselines, rounds, match", [
    (("global", "magnitude"), 1, "front_baselines.*'magnitude'"),
    (("uniform_l1",), 3, "uniform_l1 front baseline's channel structure"),
])
def test_a_bad_front_baseline_fails_before_any_work(tmp_path, front_baselines, rounds, match):
    import types

    from purl_jax.search import PruneError, prune
    from purl_jax.train import base_config

    config = base_config()
    config.prune = c.constrained_defaults(0.3)
    config.prune.update(budgets=(0.5,), front_baselines=front_baselines)
    config.finetune.rounds = rounds
    trainer = types.SimpleNamespace(setup=lambda c: pytest.fail("work started"))
    with pytest.raises(PruneError, match=match):
        prune(config, tmp_path, trainer=trainer)


def test_latency_costs_time_batches_of_latency_batch_size(tmp_path, monkeypatch):
    from purl_jax.search import prune
    from purl_jax.train import base_config

    class Timed(Exception):
        pass

    def layer_latency_cost(graph, **kwargs):
        raise Timed(kwargs)

    monkeypatch.setattr(c, "layer_latency_cost", layer_latency_cost)
    trainer = _fake_trainer()
    monkeypatch.setattr(c, "_trainer", lambda ctx: trainer)
    config = base_config()
    config.model, config.validation_size = "lenet_300_100", 64
    config.prune = c.constrained_defaults(0.5, cost="layer_latency", iterations=1, num_envs=2)
    config.prune.update(latency_batch_size=1, reward_set_size=8, progress=False, baseline_curves=False)
    with pytest.raises(Timed, match="'batch_size': 1"):
        prune(config, tmp_path, trainer=trainer)


def test_a_baseline_algorithm_on_a_constrained_config_asks_for_a_target(tmp_path):
    import types

    from purl_jax.search import PruneError, prune
    from purl_jax.train import base_config

    config = base_config()
    config.prune = c.constrained_defaults(0.3)
    config.prune.algorithm = "global"
    trainer = types.SimpleNamespace(setup=lambda c: pytest.fail("work started"))
    with pytest.raises(PruneError, match="'global' prunes to prune.target_sparsity"):
        prune(config, tmp_path, trainer=trainer)


@pytest.mark.parametrize("change, field, allowed", [
    ({"cost": "flop"}, "prune.cost", "'layer_latency'"),  # a typo of "flops"
    ({"cost": "no_such_module_xyz:make"}, "prune.cost", "cannot import"),
    ({"action": "chanel"}, "prune.action", "('layer', 'channel', 'channel_l1')"),
    ({"budget": 0.0}, "prune.budget", "> 0"),
    ({"budget": -1.0}, "prune.budget", "> 0"),
    ({"budgets": (0.5, 0.0)}, "prune.budgets", "> 0"),
    ({"max_fraction": 0.0}, "prune.max_fraction", "(0, 1]"),
    ({"iterations": 0}, "prune.iterations", ">= 1"),
    ({"num_envs": 0}, "prune.num_envs", ">= 1"),
    ({"clip_every": 0}, "prune.clip_every", ">= 1"),
    ({"checkpoint_every": 0}, "prune.checkpoint_every", ">= 1"),
    ({"start": "global", "action": "channel"}, 'prune.start="global"', 'action="layer"'),
    ({"ppo.lagrangian": "nope"}, "prune.ppo.lagrangian", "must be one of"),
    ({"latency_batch_size": 0}, "prune.latency_batch_size", "positive integer"),
])
def test_bad_constrained_settings_fail_before_any_work_naming_the_field(tmp_path, change, field, allowed):
    from purl_jax.search import PruneError, prune
    from purl_jax.train import base_config

    trainer, calls = _fake_trainer(), []
    setup, load_dense = trainer.setup, trainer.load_dense
    trainer.setup = lambda config: calls.append("setup") or setup(config)
    trainer.load_dense = lambda config, workdir, parts=None: calls.append("load_dense") or load_dense(
        config, workdir, parts=parts)
    config = base_config()
    config.model, config.validation_size = "lenet_300_100", 64
    config.mask_policy = dict(exclude_first=False, exclude_last=False, exclude=())
    config.prune = c.constrained_defaults(0.3, iterations=2, num_envs=4)
    config.prune.update(reward_set_size=32, progress=False, baseline_curves=False)
    config.prune.ppo.update(epochs=1, num_minibatches=1)
    for key, value in change.items():
        *parents, leaf = key.split(".")
        node = config.prune
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with pytest.raises(PruneError) as e:
        prune(config, tmp_path, trainer=trainer)
    assert str(e.value).startswith(field) and allowed in str(e.value)
    assert not calls and not (tmp_path / "search").exists()


def test_the_module_docstring_names_every_action():
    for action in c.ACTIONS:
        assert f'``"{action}"``' in c.__doc__, action


@pytest.mark.parametrize("name, cost", [("global", "params"), ("random", "params"), ("uniform_l1", "flops")])
def test_a_baseline_placed_at_a_budget_is_the_least_sparsity_that_meets_it(name, cost):
    from functools import partial

    from purl_jax import baselines

    model, variables, graph, _ = built("lenet5")
    params, policy = variables["params"], MaskPolicy(exclude_first=False)
    base = init_masks(params, graph, policy)
    cost_fn = get_cost(cost, variables=variables, graph=graph)
    make = partial(baselines.FRONT_BASELINES[name], params, base, graph, policy=policy)
    sparsity, masks = c.at_budget(make, cost_fn, 0.4)
    assert within_budget(cost_fn(masks), 0.4) and not within_budget(cost_fn(make(sparsity - 0.01)), 0.4)
    with pytest.raises(BudgetError, match="cannot reach budget"):
        c.at_budget(make, cost_fn, 1e-4)


def test_channel_l1_actions_prune_by_l1_norm():
    from purl_jax.masks import channel_masks_to_masks, l1_channel_masks, prunable_groups

    _, variables, graph, _ = built("lenet5")
    params, policy = variables["params"], MaskPolicy(exclude_first=False)
    problem = c.make_problem(params, graph, None, action="channel_l1", policy=policy)
    assert problem.names == ("conv1", "conv2", "fc1") and problem.action_dim == 1
    masks = problem.build(jnp.full(3, 0.3), jnp.zeros((3, 1)))
    ones = {g.name: jnp.ones(g.size, bool) for g in prunable_groups(graph, policy)}
    expect = channel_masks_to_masks(params, graph, l1_channel_masks(params, graph, ones, 0.3))
    jax.tree.map(np.testing.assert_array_equal, masks, expect)
