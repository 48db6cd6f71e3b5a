"""Constrained RL pruning (Malik et al., ICPR 2022): maximise accuracy s.t. cost <= budget.

An episode visits the prunable layers first to last, one step each. The action is the
fraction of the layer's weights to prune, by magnitude inside the layer (``"layer"``),
one keep value per output channel of a channel group (``"channel"``: structured;
values below 0.5 are pruned), or the fraction of a channel group's channels to prune,
those of least L1 norm (``"channel_l1"``: structured, AMC-style). The state is the
layer's static features (shared with the PuRL environment, ``env.layer_features``) and
the sum of the previous actions. At the end of the episode the reward is the accuracy on
a held-out reward set (validation split) and the cost is any budget function of the masks
(kept params, FLOPs, measured latency, a user callable), relative to the dense model.
``N`` environments run in parallel (vmap); their ``N`` end-of-episode candidates are
scored by one ``evaluate_stacked`` call.

Feasibility is guaranteed, not only expected:

* before the search, the cost with every prunable weight (channel) pruned as far as
  allowed is measured; a budget below it is a ``BudgetError``;
* ``feasibility="clamp"`` bounds each action from below, AMC-style, so that a linear
  model of the cost (per-step cost reductions, probed once) stays reachable by the
  remaining steps;
* the returned masks are *projected*: if their measured cost is over budget, every
  layer is moved towards its maximum pruning by bisection on the measured cost, whose
  feasible end point was verified up front. Each returned mask's cost is measured, so
  non-linear (channel FLOPs) and non-monotone (latency) costs are handled as well.
  With ``fill``, masks under the budget are moved the other way, up to it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
import weakref
from functools import lru_cache, partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import trange

from purl_jax import baselines, files
from purl_jax.budgets import BudgetError, CostFn, call_seconds, check_cost, time_call, within_budget
from purl_jax.env import layer_features
from purl_jax.graph import Graph
from purl_jax.masks import (
    MaskError, Masks, MaskPolicy, ascending_ranks, channel_masks_to_masks, channel_scores, get_path,
    masked_layers, prunable_groups, pruned_count, set_path,
)
from purl_jax.ppo_lagrangian import AgentState, PPOConfig, PPOLagrangian, Transition
from purl_jax.reward_finetune import defaults as reward_finetune_defaults

ACTIONS = ("layer", "channel", "channel_l1")
FEASIBILITY = ("clamp", "project")
STARTS = ("uniform", "global")
SELECT = ("reward", "finetuned")  # how ``prune.select`` picks the returned candidate
CLAMP_MARGIN = 1e-3  # relative to the budget
ScoreFn = Callable[[Masks, int], np.ndarray]  # (stacked masks [K, ...], iteration) -> accuracy[K]
SelectFn = Callable[[Masks], np.ndarray]  # stacked masks [K, ...] -> score[K], higher is better


# -- settings checks: each message starts with the ``config.prune`` field's name, so
# ``check_config`` runs them before any training and adds the ``prune.`` prefix ----------

def check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")


def check_max_fraction(max_fraction: float) -> None:
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must lie in (0, 1] (the largest share of a layer or "
                         f"channel group pruned), got {max_fraction}")


def check_start(start: str, action: str) -> None:
    if start == "global" and action != "layer":
        raise ValueError(f'start="global" needs action="layer", not {action!r}')


def check_budget_value(budget: float, name: str = "budget") -> None:
    """``BudgetError`` for a budget no cost can mean: not a finite number > 0."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.number)) \
            or not math.isfinite(budget) or budget <= 0:
        raise BudgetError(f"{name} must be a finite number > 0 (a cost relative to the dense "
                          f"model's: 0.1 = at most 10% of it), got {budget!r}")


# -- the problem: what one step prunes ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Problem:
    """The static side of a search: per-step features, limits and the mask builder.

    ``build(fractions[L], scores[L, G]) -> masks`` is pure and vmappable; ``scores`` are
    the channel keep values (ignored for layer actions).
    """

    names: tuple[str, ...]
    features: np.ndarray  # float32[L, F]
    max_fractions: np.ndarray  # float32[L]: largest prunable share of each step
    sizes: np.ndarray  # int[L]: channels per group (1 for layer actions)
    action: str
    build: Callable[[jax.Array, jax.Array], Masks]
    magnitudes: tuple[np.ndarray, ...] = ()  # layer actions: each layer's sorted |w|

    @property
    def num_steps(self) -> int:
        return len(self.names)

    @property
    def action_dim(self) -> int:
        return int(self.sizes.max())


_BUILDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _jitted_build(problem: Problem, stacked: bool = False) -> Callable:
    """``jit(build)`` / ``jit(vmap(build))``, compiled once per problem (a sweep's budgets,
    the cost probes and the projection share them)."""
    fns = _BUILDS.get(problem.build)
    if fns is None:
        fns = _BUILDS[problem.build] = (jax.jit(problem.build), jax.jit(jax.vmap(problem.build)))
    return fns[1] if stacked else fns[0]


@lru_cache(maxsize=8)
def _compiled_agent(ppo: PPOConfig, obs_dim: int, action_dim: int):
    """The agent and its jitted rollout, shared by searches of the same shape (budgets are
    traced arguments, so a sweep compiles once)."""
    agent = PPOLagrangian(ppo, obs_dim, action_dim)
    return agent, jax.jit(partial(rollout, agent), static_argnums=3)


def make_problem(params: Any, graph: Graph, base_masks: Masks, *, action: str = "layer",
                 policy: MaskPolicy = MaskPolicy(), max_fraction: float = 1.0) -> Problem:
    """Layer actions prune the masked layers of ``base_masks`` by magnitude; channel
    actions prune the prunable channel groups of ``policy`` (one channel always stays):
    ``"channel"`` by the policy's keep value per channel (the paper's filter-wise variant),
    ``"channel_l1"`` by one fraction per group applied to the channels of least L1 norm
    (AMC-style; uniform L1 pruning is one point of its action space)."""
    check_action(action)
    check_max_fraction(max_fraction)
    if action == "layer":
        layers = masked_layers(base_masks, graph)
        if not layers:
            raise BudgetError("no masked layers: the mask policy leaves nothing to prune")
        # magnitude ranks never change, so a mask is one comparison per layer; the sorted
        # magnitudes are for ``global_start``
        ranks, magnitudes = [], []
        for l in layers:
            w = jnp.abs(get_path(params, l.path))
            ranks.append(ascending_ranks(w))
            magnitudes.append(np.sort(np.asarray(w).reshape(-1)))

        def build(fractions, scores):
            masks = base_masks
            for i, (layer, rank) in enumerate(zip(layers, ranks)):
                masks = set_path(masks, layer.path, rank >= pruned_count(fractions[i], rank.size))
            return masks

        return Problem(tuple(l.name for l in layers), layer_features(graph, layers),
                       np.full(len(layers), max_fraction, np.float32), np.ones(len(layers), int),
                       action, build, tuple(magnitudes))

    groups = prunable_groups(graph, policy)
    if not groups:
        raise BudgetError("no prunable channel groups under this mask policy")
    sizes = np.array([g.size for g in groups])
    feats = layer_features(graph, [graph.layer(g.producers[0]) for g in groups])
    max_fractions = np.minimum(max_fraction, (sizes - 1) / sizes).astype(np.float32)
    if action == "channel_l1":  # one fraction per group, its channels pruned by L1 norm
        l1_ranks = [ascending_ranks(channel_scores(params, graph, g.name)) for g in groups]

        def build_l1(fractions, scores):
            return channel_masks_to_masks(params, graph, {
                g.name: rank >= pruned_count(fractions[i], g.size)
                for i, (g, rank) in enumerate(zip(groups, l1_ranks))})

        return Problem(tuple(g.name for g in groups), feats, max_fractions,
                       np.ones(len(groups), int), action, build_l1)

    def build(fractions, scores):
        channel_masks = {}
        for i, g in enumerate(groups):
            s = scores[i, :g.size]
            channel_masks[g.name] = ascending_ranks(s) >= pruned_count(fractions[i], g.size)
        return channel_masks_to_masks(params, graph, channel_masks)

    return Problem(tuple(g.name for g in groups), feats, max_fractions, sizes, action, build)


class CostModel(NamedTuple):
    """Measured cost probes: dense, each step alone at its maximum, all at the maximum."""

    dense: float
    reductions: np.ndarray  # float32[L]: dense - cost with only step i pruned to its max
    floor: float
    floor_fractions: np.ndarray


def probe_costs(problem: Problem, cost_fn: CostFn) -> CostModel:
    """L + 2 cost evaluations giving the linear model the action clamp uses."""
    scores = jnp.zeros((problem.num_steps, problem.action_dim))
    build = _jitted_build(problem)
    measure = lambda f: cost_fn(build(jnp.asarray(f, jnp.float32), scores))
    zeros = np.zeros(problem.num_steps, np.float32)
    dense = measure(zeros)
    reductions = []
    for i in range(problem.num_steps):
        f = zeros.copy()
        f[i] = problem.max_fractions[i]
        reductions.append(max(dense - measure(f), 0.0))
    floor = measure(problem.max_fractions)
    return CostModel(dense, np.asarray(reductions, np.float32), floor, problem.max_fractions)


def uniform_start(problem: Problem, model: CostModel, budget: float) -> float:
    """The one action every step could take to meet ``budget`` under the linear cost model:
    the search's initial policy mean. Keep-value actions (one per channel) start at 0.5."""
    if problem.action_dim > 1:
        return 0.5
    per_fraction = float(np.sum(model.reductions / np.maximum(problem.max_fractions, 1e-12)))
    return float(np.clip((model.dense - budget) / max(per_fraction, 1e-12), 0.05, 0.95))


def _bisect(make: Callable[[float], Any], cost: Callable[[Any], float], budget: float,
            over: float, within: float, steps: int) -> tuple[float, Any, float | None]:
    """``steps`` bisections of ``x`` between ``over`` (taken as over budget) and ``within``
    (taken as within it), each point ``make(x)`` measured once by ``cost``: the last ``x``
    within the budget (``within`` if none), its point and the cost measured there (``None``,
    ``None`` if none)."""
    best = best_cost = None
    for _ in range(steps):
        mid = 0.5 * (over + within)
        point = make(mid)
        measured = cost(point)
        if within_budget(measured, budget):
            within, best, best_cost = mid, point, measured
        else:
            over = mid
    return within, best, best_cost


def global_start(problem: Problem, cost_fn: CostFn, budget: float, iterations: int = 40) -> np.ndarray:
    """Global magnitude pruning's per-layer fractions at the least threshold whose
    *measured* cost meets ``budget`` (bisection): a warm start (``start="global"``) that
    begins the search from the strongest simple baseline instead of the uniform allocation."""
    check_start("global", problem.action)
    build = _jitted_build(problem)
    scores = jnp.zeros((problem.num_steps, problem.action_dim))

    def fractions(threshold):
        f = [np.searchsorted(m, threshold) / m.size for m in problem.magnitudes]
        return np.minimum(np.asarray(f, np.float32), problem.max_fractions)

    cost = lambda f: cost_fn(build(jnp.asarray(f), scores))
    top = float(max(m[-1] for m in problem.magnitudes)) * (1 + 1e-6)
    threshold, _, _ = _bisect(fractions, cost, budget, 0.0, top, iterations)
    return fractions(threshold)


def at_budget(make: Callable[[float], Masks], cost_fn: CostFn, budget: float,
              steps: int = 20) -> tuple[float, Masks]:
    """The least sparsity ``s`` whose masks ``make(s)`` cost at most ``budget``, and the
    masks: a baseline placed at a budget. Bisection, as a magnitude baseline's cost falls
    as its sparsity rises; a baseline that cannot reach the budget is a ``BudgetError``."""
    hi = 1.0 - 1e-6
    while True:  # the sparsest masks the baseline allows (random keeps a weight per layer)
        try:
            best = make(hi)
            break
        except MaskError:
            if hi < 0.5:
                raise
            hi = 1.0 - 10.0 * (1.0 - hi)
    floor = cost_fn(best)
    if not within_budget(floor, budget):
        raise BudgetError(f"the baseline cannot reach budget {budget}: it costs {floor:.4g} "
                          f"at sparsity {hi}")
    sparsity, masks, _ = _bisect(make, cost_fn, budget, 0.0, hi, steps)
    return sparsity, best if masks is None else masks


def check_budget(model: CostModel, budget: float, cost_name: str = "cost") -> None:
    """A clear error before any search when no mask can meet ``budget``."""
    check_budget_value(budget)
    if not within_budget(model.floor, budget):
        raise BudgetError(
            f"budget {budget:g} on {cost_name} is unreachable: pruning everything the mask policy "
            f"allows still costs {model.floor:.4g} (dense: {model.dense:.4g}). Raise the budget, or "
            "allow more layers (mask_policy: exclude_first / exclude_last / exclude).")


# -- the environment: pure functions, vmapped over envs --------------------------------

class EnvParams(NamedTuple):
    features: jax.Array  # [L, F]
    reductions: jax.Array  # [L]
    max_fractions: jax.Array  # [L]
    sizes: jax.Array  # [L] float
    need: jax.Array  # dense cost - budget: the reduction the episode must reach
    upper: jax.Array  # the action clip of this iteration
    clamp: jax.Array  # 1.0: AMC-style lower bound on, 0.0: off
    lows: jax.Array  # [L] each layer's least fraction (0 unless ``anchor``)
    highs: jax.Array  # [L] each layer's greatest fraction (``max_fractions`` unless ``anchor``)


def env_params(problem: Problem, model: CostModel, need: float, clamp: bool,
               bounds: tuple[np.ndarray, np.ndarray] | None = None) -> EnvParams:
    """The environment of ``problem``, the clip at 1; ``bounds``: per-layer (lows, highs)."""
    lows, highs = bounds if bounds is not None else (np.zeros(problem.num_steps), problem.max_fractions)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return EnvParams(f32(problem.features), f32(model.reductions), f32(problem.max_fractions),
                     f32(problem.sizes), f32(need), f32(1.0), f32(clamp), f32(lows), f32(highs))


def anchor_bounds(start: np.ndarray, max_fractions: np.ndarray, anchor: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer fraction bounds keeping each layer's kept share within a factor
    ``1 + anchor`` of its share at ``start`` (global magnitude's allocation)."""
    kept = 1.0 - np.asarray(start, np.float64)
    lows = np.clip(1.0 - kept * (1.0 + anchor), 0.0, max_fractions)
    highs = np.clip(1.0 - kept / (1.0 + anchor), 0.0, max_fractions)
    return lows.astype(np.float32), highs.astype(np.float32)


class EnvState(NamedTuple):
    step: jax.Array  # int32
    fractions: jax.Array  # [L]
    scores: jax.Array  # [L, G] channel keep values


def env_reset(num_steps: int, action_dim: int) -> EnvState:
    return EnvState(jnp.zeros((), jnp.int32), jnp.zeros(num_steps), jnp.zeros((num_steps, action_dim)))


def observe(p: EnvParams, s: EnvState) -> jax.Array:
    """[features of the current layer, sum of previous actions / L]."""
    num_steps = p.features.shape[0]
    layer = jnp.minimum(s.step, num_steps - 1)
    return jnp.concatenate([p.features[layer], (s.fractions.sum() / num_steps)[None]])


def action_fraction(action: jax.Array, size: jax.Array) -> jax.Array:
    """Layer actions (dim 1): the fraction itself. Channel actions: the share of the
    group's channels whose keep value is below 0.5."""
    if action.shape[-1] == 1:
        return action[0]
    valid = jnp.arange(action.shape[-1]) < size
    return jnp.sum(valid & (action < 0.5)) / size


def clamp_fraction(p: EnvParams, s: EnvState, fraction: jax.Array) -> jax.Array:
    """Clip to [low, min(high, schedule)], then raise to the least fraction that keeps the
    budget reachable if every later step prunes its highest (AMC's action wall)."""
    i = s.step
    upper = jnp.minimum(p.highs[i], p.upper)
    fraction = jnp.clip(fraction, jnp.minimum(p.lows[i], upper), upper)
    share = lambda f: p.reductions * f / jnp.maximum(p.max_fractions, 1e-12)  # linear cost model
    done = jnp.sum(jnp.where(jnp.arange(p.reductions.size) < i, share(s.fractions), 0.0))
    later = jnp.sum(jnp.where(jnp.arange(p.reductions.size) > i, share(p.highs), 0.0))
    missing = p.need - done - later
    lower = jnp.where(p.reductions[i] > 0, missing / jnp.maximum(p.reductions[i], 1e-12), 0.0)
    lower = jnp.clip(lower * p.max_fractions[i], 0.0, p.max_fractions[i])
    return jnp.where(p.clamp > 0, jnp.maximum(fraction, lower), fraction)


def env_step(p: EnvParams, s: EnvState, action: jax.Array) -> EnvState:
    i = s.step
    fraction = clamp_fraction(p, s, action_fraction(action, p.sizes[i]))
    scores = s.scores.at[i].set(action) if action.shape[-1] > 1 else s.scores
    return EnvState(i + 1, s.fractions.at[i].set(fraction), scores)


def rollout(agent: PPOLagrangian, params: Any, p: EnvParams, rng: jax.Array,
            num_envs: int) -> tuple[Transition, EnvState, jax.Array]:
    """One episode in each of ``num_envs`` environments: [L, N] transitions with zero
    reward and cost (filled in at the end), the final states and the final observations."""
    num_steps, action_dim = p.features.shape[0], agent.action_dim
    states = jax.vmap(lambda _: env_reset(num_steps, action_dim))(jnp.arange(num_envs))
    obs_fn = jax.vmap(observe, in_axes=(None, 0))
    step_fn = jax.vmap(env_step, in_axes=(None, 0, 0))

    def body(states, key):
        obs = obs_fn(p, states)
        action, logp, v_r, v_c = agent.act(params, obs, key)
        new = step_fn(p, states, action)
        done = jnp.full(num_envs, 1.0) * (new.step[0] == num_steps)
        zero = jnp.zeros(num_envs)
        return new, Transition(obs, action, logp, zero, zero, done, v_r, v_c)

    final, traj = jax.lax.scan(body, states, jax.random.split(rng, num_steps))
    return traj, final, obs_fn(p, final)


def start_observations(p: EnvParams, fractions: np.ndarray) -> jax.Array:
    """The observations [L, F + 1] of the episode whose layer actions are ``fractions``."""
    def body(s, f):
        return env_step(p, s, f[None]), observe(p, s)

    _, obs = jax.lax.scan(body, env_reset(len(fractions), 1), jnp.asarray(fractions, jnp.float32))
    return obs


# -- feasibility -------------------------------------------------------------------------

def project(problem: Problem, cost_fn: CostFn, model: CostModel, budget: float,
            fractions: np.ndarray, scores: np.ndarray, iterations: int = 16, fill: bool = False
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """The least move of ``fractions`` towards the maximum whose *measured* cost meets the
    budget (bisection); falls back to the verified floor, so the result always fits.

    ``fill``: masks under the budget give the slack back, every pruned fraction scaled
    down by one factor, the least factor whose measured cost still meets the budget
    (bisection; the masks as found when nothing fits). A search returns its best
    *sampled* episode, often well under the budget with channel actions, where whole
    channels make the cost coarse; weights the budget allows are accuracy left unused.
    """
    build = _jitted_build(problem)
    measure = lambda f, sc: cost_fn(build(jnp.asarray(f, jnp.float32), jnp.asarray(sc)))
    cost = measure(fractions, scores)
    if within_budget(cost, budget):
        return _fill(measure, budget, fractions, scores, cost, iterations) if fill else (fractions, scores, cost)
    top = np.asarray(problem.max_fractions)
    _, f, c = _bisect(lambda t: fractions + t * (top - fractions), lambda f: measure(f, scores),
                      budget, 0.0, 1.0, iterations)
    if f is not None:
        return f, scores, c
    c = measure(top, scores)
    if within_budget(c, budget):
        return top, scores, c
    floor_scores = np.zeros_like(scores)
    return model.floor_fractions, floor_scores, measure(model.floor_fractions, floor_scores)


def _fill(measure: Callable, budget: float, fractions: np.ndarray, scores: np.ndarray,
          cost: float, iterations: int) -> tuple[np.ndarray, np.ndarray, float]:
    # fractions scaled by 1 - t: t = 0 (as found, measured at ``cost``) fits, t = 1 need not
    _, f, c = _bisect(lambda t: fractions * (1.0 - t), lambda f: measure(f, scores),
                      budget, 1.0, 0.0, iterations)
    return (fractions, scores, cost) if f is None else (f, scores, c)


# -- the search --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SearchConfig:
    budget: float
    iterations: int = 100
    num_envs: int = 16
    feasibility: str = "clamp"
    clip_start: float = 0.9  # action clip schedule min(clip_start + clip_step * t / clip_every, 1)
    clip_step: float = 0.05
    clip_every: int = 10
    checkpoint_every: int = 10
    seed: int = 0
    # "uniform": the policy starts at the one fraction every layer could take to meet the
    # budget; "global": its mean is fitted to global magnitude's allocation (``global_start``)
    start: str = "uniform"
    # > 0 (with start="global"): every layer's kept share stays within a factor 1 + anchor of
    # global magnitude's (``anchor_bounds``), so the search moves near that allocation
    anchor: float = 0.0
    fill: bool = False  # give the slack under the budget back to the returned masks (``project``)
    select_candidates: int = 1  # the best candidates by reward kept for ``search``'s ``select_fn``
    ppo: PPOConfig = PPOConfig()

    def __post_init__(self) -> None:
        if self.feasibility not in FEASIBILITY:
            raise ValueError(f"feasibility must be one of {FEASIBILITY}, got {self.feasibility!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.start == "global" and self.ppo.init_action:
            raise ValueError('start="global" sets the initial policy itself: ppo.init_action '
                             f"must be 0, got {self.ppo.init_action}")
        if self.anchor < 0 or (self.anchor > 0 and self.start != "global"):
            raise ValueError(f'anchor must be >= 0, and > 0 only with start="global"; got {self.anchor} '
                             f"with start={self.start!r}")
        # each message starts with the field's name (``check_config`` prefixes ``prune.``)
        for name in ("iterations", "num_envs", "clip_every", "checkpoint_every", "select_candidates"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    def clip(self, iteration: int) -> float:
        return min(self.clip_start + self.clip_step * iteration / self.clip_every, 1.0)


@dataclasses.dataclass
class SearchResult:
    masks: Masks
    cost: float
    budget: float
    reward_accuracy: float  # of the returned (projected) masks
    fractions: dict[str, float]
    history: list[dict]
    searched_cost: float  # of the chosen episode, before ``project``
    # with ``select_fn``: each kept candidate's reward and selection score, the chosen first
    selection: list[dict] | None = None

    def to_json(self) -> dict:
        out = dict(cost=self.cost, budget=self.budget, feasible=bool(within_budget(self.cost, self.budget)),
                   reward_accuracy=self.reward_accuracy, fractions=self.fractions,
                   searched_cost=self.searched_cost)
        return out if self.selection is None else dict(out, selection=self.selection)


def _take(tree, k: int):
    return jax.tree.map(lambda x: x[k], tree)


def _keep(top: list[dict], candidates: list[dict], k: int) -> list[dict]:
    """The ``k`` best of ``top`` and ``candidates``: feasible before infeasible, then by
    reward; on a tie the one kept earlier stays ahead."""
    return sorted([*top, *candidates], key=lambda c: (c["feasible"], c["accuracy"]), reverse=True)[:k]


def plot_training(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Reward, cost with the budget, and nu over training iterations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [h["iteration"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(it, [h["reward_mean"] for h in history], label="mean")
    axes[0].plot(it, [h["reward_max"] for h in history], label="max")
    axes[0].set(title="reward (reward-set accuracy)", xlabel="iteration")
    axes[0].legend()
    axes[1].plot(it, [h["cost_mean"] for h in history], label="mean cost")
    axes[1].plot(it, [h["budget"] for h in history], "k--", label="budget")
    axes[1].set(title="cost", xlabel="iteration")
    axes[1].legend()
    axes[2].plot(it, [h["nu"] for h in history])
    axes[2].set(title="multiplier nu", xlabel="iteration")
    fig.tight_layout()
    files.save_figure(fig, files.path(path), dpi=100)


def search(problem: Problem, cost_fn: CostFn, score_fn: ScoreFn, cfg: SearchConfig,
           workdir: str | os.PathLike | None = None, *, progress: bool = True,
           cost_model: CostModel | None = None, select_fn: SelectFn | None = None) -> SearchResult:
    """PPO-Lagrangian search under ``cost_fn(masks) <= cfg.budget``; resumable in ``workdir``.

    ``score_fn(stacked_masks, iteration) -> accuracy[K]`` scores all end-of-episode
    candidates of an iteration in one call (``score_function``: ``Evaluator.evaluate_stacked``,
    or after a short fine-tuning that grows with the iteration). The returned masks are the
    best-scoring feasible candidate seen, projected onto the budget (see ``project``); with
    ``select_fn`` (``select_function``) and ``cfg.select_candidates`` > 1, the one of the
    ``cfg.select_candidates`` best whose projected masks ``select_fn`` scores highest.
    ``cost_model``: this problem's ``probe_costs``, when the caller has measured it already.
    """
    model = cost_model if cost_model is not None else probe_costs(problem, cost_fn)
    check_budget(model, cfg.budget)
    if cfg.start == "global":
        start_fractions = global_start(problem, cost_fn, cfg.budget)
        init_action = float(np.clip(start_fractions.mean(), 0.05, 0.95))
    else:
        init_action = uniform_start(problem, model, cfg.budget)
        start_fractions = np.full(problem.num_steps, init_action, np.float32)
    ppo = cfg.ppo if cfg.ppo.init_action else dataclasses.replace(cfg.ppo, init_action=init_action)
    # The action clip keeps the start allocation within reach: below it, every episode's
    # clamp would make up the difference by pruning the last layers entirely.
    clip_floor = min(float(start_fractions.max()) + 0.05, 1.0) if problem.action_dim == 1 else 0.0
    agent, run = _compiled_agent(ppo, problem.features.shape[1] + 1, problem.action_dim)
    key_init, root = jax.random.split(jax.random.key(cfg.seed))
    state: AgentState = agent.init(key_init)
    start, history, top = 0, [], []
    choice = None  # select_fn's scores of the final ``top``, kept so a resumed search skips them
    workdir = None if workdir is None else files.path(workdir)
    ckpt = None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt = workdir / "agent.pkl"
        if ckpt.exists():
            saved = pickle.loads(ckpt.read_bytes())
            if (saved["budget"] != cfg.budget or saved["names"] != problem.names
                    or saved.get("start", "uniform") != cfg.start or saved.get("anchor", 0.0) != cfg.anchor):
                raise ValueError(f"{ckpt} belongs to another search (budget {saved['budget']}, "
                                 f"start {saved.get('start', 'uniform')!r}, anchor "
                                 f"{saved.get('anchor', 0.0)}); use another workdir")
            state = jax.tree.map(jnp.asarray, saved["state"])
            start, history = saved["iteration"], saved["history"]
            top = saved["top"] if "top" in saved else [saved["best"]]  # a checkpoint from before ``top``
            choice = saved.get("choice")

    # The clamp aims CLAMP_MARGIN under the budget: fractions become whole weights and
    # float32 sums, and an episode landing 1e-5 over the budget would not count as feasible.
    need = model.dense - cfg.budget * (1.0 - CLAMP_MARGIN)
    bounds = anchor_bounds(start_fractions, problem.max_fractions, cfg.anchor) if cfg.anchor else None
    base = env_params(problem, model, need, cfg.feasibility == "clamp", bounds)
    build = _jitted_build(problem, stacked=True)
    budget = jnp.float32(cfg.budget)
    if cfg.start == "global" and start == 0 and not history:
        # fit the policy to the start allocation, and count the allocation as a candidate:
        # the search returns nothing worse, by its reward, than where it started
        state, _ = agent.imitate(state, start_observations(base, start_fractions),
                                 jnp.asarray(start_fractions)[:, None], 500)
        zeros = np.zeros((problem.num_steps, problem.action_dim), np.float32)
        stacked = build(jnp.asarray(start_fractions)[None], jnp.asarray(zeros)[None])
        cost = float(cost_fn(_take(stacked, 0)))
        top = [dict(accuracy=float(np.asarray(score_fn(stacked, 0))[0]), cost=cost,
                    feasible=bool(within_budget(cost, cfg.budget)), fractions=start_fractions, scores=zeros)]

    def checkpoint(iteration):
        if ckpt is not None:
            files.write_bytes_atomic(ckpt, pickle.dumps(jax.device_get(dict(
                state=state, iteration=iteration, history=history, top=top, choice=choice,
                budget=cfg.budget, names=problem.names, start=cfg.start, anchor=cfg.anchor))))
            plot_training(history, workdir / "training.png")

    for it in trange(start, cfg.iterations, disable=not progress, desc=f"constrained b={cfg.budget:g}"):
        tic, choice = time.time(), None
        key_roll, key_update = jax.random.split(jax.random.fold_in(root, it))
        upper = max(cfg.clip(it), clip_floor)
        p = base._replace(upper=jnp.float32(upper))
        traj, final, last_obs = run(state.params, p, key_roll, cfg.num_envs)
        stacked = build(final.fractions, final.scores)
        costs = np.array([cost_fn(_take(stacked, k)) for k in range(cfg.num_envs)])
        accs = np.asarray(score_fn(stacked, it), np.float32)
        traj = traj._replace(reward=traj.reward.at[-1].set(accs), cost=traj.cost.at[-1].set(costs))
        state, m = agent.update(state, traj, last_obs, budget, key_update)
        feasible = within_budget(costs, cfg.budget)
        # every feasible episode competes for ``top``; while none is, the best infeasible one
        ks = np.flatnonzero(feasible) if feasible.any() else [int(np.argmax(accs))]
        top = _keep(top, [dict(accuracy=float(accs[k]), cost=float(costs[k]), feasible=bool(feasible[k]),
                               fractions=np.asarray(final.fractions[k]), scores=np.asarray(final.scores[k]))
                          for k in ks], cfg.select_candidates)
        record = dict(iteration=it + 1, reward_mean=float(accs.mean()), reward_max=float(accs.max()),
                      cost_mean=float(costs.mean()), cost_min=float(costs.min()),
                      feasible_fraction=float(feasible.mean()), budget=cfg.budget,
                      reward=float(accs.mean()), cost=float(costs.mean()),  # report curves
                      nu=float(m["nu"]), best_accuracy=top[0]["accuracy"], clip=upper,
                      **{k: float(m[k]) for k in ("pi_loss", "v_loss", "approx_kl", "entropy")},
                      seconds=round(time.time() - tic, 3))
        history.append(record)
        if workdir is not None:
            files.append_line(workdir / "metrics.jsonl", json.dumps(record))
        if (it + 1) % cfg.checkpoint_every == 0:
            checkpoint(it + 1)
    checkpoint(cfg.iterations)

    pool = [t for t in top if t["feasible"] == top[0]["feasible"]]
    if select_fn is None:
        pool = pool[:1]
    projected = [project(problem, cost_fn, model, cfg.budget, t["fractions"], t["scores"], fill=cfg.fill)
                 for t in pool]
    selection = None
    chosen = 0
    if len(pool) > 1:
        if choice is None:
            stacked = build(jnp.asarray(np.stack([f for f, _, _ in projected]), jnp.float32),
                            jnp.asarray(np.stack([s for _, s, _ in projected])))
            choice = np.asarray(select_fn(stacked), np.float32)
            checkpoint(cfg.iterations)
        chosen = int(np.argmax(choice))
        order = [chosen, *(i for i in range(len(pool)) if i != chosen)]
        selection = [dict(reward_accuracy=pool[i]["accuracy"], selection_score=float(choice[i]),
                          cost=float(projected[i][2])) for i in order]
    fractions, scores, cost = projected[chosen]
    masks = _jitted_build(problem)(jnp.asarray(fractions, jnp.float32), jnp.asarray(scores))
    accuracy = float(np.asarray(score_fn(jax.tree.map(lambda x: x[None], masks), cfg.iterations))[0])
    result = SearchResult(masks, float(cost), cfg.budget, accuracy,
                          dict(zip(problem.names, map(float, fractions))), history,
                          pool[chosen]["cost"], selection)
    if workdir is not None:
        files.write_text(workdir / "search.json", json.dumps(result.to_json(), indent=2) + "\n")
    return result


# -- a measured latency that sees structured pruning ------------------------------------

def layer_latency_cost(graph: Graph, *, batch_size: int = 32, repeats: int = 5,
                       levels: int | None = 16, paired: bool = True,
                       clock: Callable[[Callable, tuple], float] = call_seconds) -> CostFn:
    """Measured latency of the *compact* conv / dense layers, relative to dense.

    A masked model runs as fast as the dense one on backends that do not skip zeros (the
    CPU), so ``budgets.latency_cost`` cannot see pruning there. This cost times each layer
    at its kept input and output channel counts (channels whose kernel slice is all
    pruned are gone) on this device, caches every shape, and sums: a latency lookup
    table in the style of NetAdapt. Batch norm, adds and pooling are not timed.

    ``levels``: kept channel counts are rounded *up* to multiples of ``ceil(n / levels)``
    (n = the layer's channels), so the table holds at most ``(levels + 1)^2`` shapes per
    layer (each a compile and a timing) and over-estimates, never under-estimates, the
    time of the exact shape (time grows with channels); ``None`` times exact counts.

    ``paired``: the table fills up over a search, minutes after the dense layers were
    timed, while the machine's speed drifts (other jobs, clocks). Each new shape is then
    timed alternately with its layer's dense shape and stored as the median of their
    ratios, times the layer's dense time of the reference pass, so a drift cancels. It
    costs twice the timing calls per new shape. ``clock(fn, args) -> seconds`` times one call.
    """
    @lru_cache(maxsize=None)
    def kernel(kind: str, strides: tuple, padding: tuple, groups: int) -> Callable:
        if kind == "dense":
            return jax.jit(jnp.dot)
        return jax.jit(partial(jax.lax.conv_general_dilated, window_strides=strides, padding=padding,
                               feature_group_count=groups, dimension_numbers=("NHWC", "HWIO", "NHWC")))

    def timing(layer, cin: int, cout: int) -> tuple[Callable, tuple]:
        """The layer's op at these channel counts, and fresh inputs (not kept: at large
        batches every layer's input would stay in memory)."""
        if layer.kind == "dense":
            return kernel("dense", (), (), 1), (jnp.ones((batch_size, cin)), jnp.ones((cin, cout)))
        groups = cin if layer.kind == "depthwise" else 1
        return (kernel(layer.kind, layer.strides, layer.padding, groups),
                (jnp.ones((batch_size, *layer.input_shape[:-1], cin)),
                 jnp.ones((*layer.kernel_size, cin // groups, cout))))

    def seconds(fn, args) -> float:
        return time_call(fn, *args, repeats=repeats, clock=clock)

    def paired_ratio(fn, args, reference) -> float:
        """Median ratio of ``fn``'s time to ``reference``'s, the two timed back to back."""
        for _ in range(2):  # warm-up (compiles)
            jax.block_until_ready(fn(*args))
            jax.block_until_ready(reference[0](*reference[1]))
        return float(np.median([clock(fn, args) / clock(*reference) for _ in range(repeats)]))

    dense_seconds = {layer.name: seconds(*timing(layer, layer.in_features, layer.out_features))
                     for layer in graph.layers}
    cache: dict[tuple, float] = {}

    def layer_time(layer, cin: int, cout: int) -> float:
        key = (layer.name, cin, cout)
        if key not in cache:
            if min(cin, cout) == 0:
                cache[key] = 0.0
            elif (cin, cout) == (layer.in_features, layer.out_features):
                cache[key] = dense_seconds[layer.name]
            elif paired:
                reference = timing(layer, layer.in_features, layer.out_features)
                ratio = paired_ratio(*timing(layer, cin, cout), reference)
                cache[key] = ratio * dense_seconds[layer.name]
            else:
                cache[key] = seconds(*timing(layer, cin, cout))
        return cache[key]

    def kept_channels(layer, mask) -> tuple[int, int]:
        if mask is None:
            return layer.in_features, layer.out_features
        m = np.asarray(mask).reshape(-1, *np.shape(mask)[-2:])
        if layer.kind == "depthwise":
            kept = int(m.any(axis=(0, 1)).sum())
            return kept, kept
        return int(m.any(axis=(0, 2)).sum()), int(m.any(axis=(0, 1)).sum())

    def quantise(count: int, n: int) -> int:
        if levels is None or count == 0:
            return count
        step = -(-n // levels)
        return min(-(-count // step) * step, n)

    def total(masks) -> float:
        seconds = 0.0
        for layer in graph.layers:
            try:
                mask = get_path(masks, layer.path)
            except (KeyError, TypeError):
                mask = None
            cin, cout = kept_channels(layer, mask)
            seconds += layer_time(layer, quantise(cin, layer.in_features),
                                  quantise(cout, layer.out_features))
        return seconds

    dense = sum(dense_seconds.values())
    return lambda masks: total(masks) / dense


# -- configs and the ``purl-jax prune`` algorithm ----------------------------------------

def constrained_defaults(budget: float, *, cost: str = "params", action: str = "layer",
                         iterations: int = 100, num_envs: int = 16) -> Any:
    """``config.prune`` for the constrained search (``budgets`` non-empty = a sweep)."""
    import ml_collections

    return ml_collections.ConfigDict(dict(
        algorithm="constrained",
        cost=cost,  # "params", "flops", "latency" (masked model), "layer_latency" (compact layers),
        # or "package.module:factory" (budgets.get_cost)
        latency_batch_size=32,  # images per timed call of "latency" and "layer_latency":
        # 1 for one request's latency, larger for throughput
        budget=budget,  # relative to dense: 0.1 = at most 10% of the dense cost
        budgets=(),  # a sweep: several budgets in one run -> <workdir>/front.json, front.png
        front_baselines=(),  # names in baselines.FRONT_BASELINES, each placed at every budget
        # of the sweep and fine-tuned alike: "global" (layer actions), "uniform_l1" (channels)
        action=action,  # "layer" (fraction by magnitude), "channel" (keep value per channel),
        # "channel_l1" (fraction of each channel group, by L1 norm)
        feasibility="clamp",
        start="uniform",  # or "global": the policy starts at global magnitude's allocation
        anchor=0.0,  # > 0 with start="global": each layer's kept share within a factor 1 + anchor
        # of global magnitude's
        fill=False,  # True: the returned masks use the slack under the budget (``project``)
        select="reward",  # the best candidate by reward; "finetuned" (ours): of the
        # ``select_candidates`` best, the one most accurate on the validation split after
        # ``select_steps`` masked SGD steps each (``select_function``)
        select_candidates=8,
        select_steps=100,
        max_fraction=1.0,
        iterations=iterations,
        num_envs=num_envs,
        reward_set_size=1000,
        bn_calibration=0,  # training images to re-estimate BatchNorm statistics per candidate
        reward_finetune=reward_finetune_defaults(),  # masked SGD steps before scoring (off)
        clip_start=0.9, clip_step=0.05, clip_every=max(iterations // 10, 1),
        checkpoint_every=10,
        progress=True,
        baseline_curves=True,  # curves.json: the baselines' reward-set accuracy over sparsity
        min_keep_fraction=0.0005,  # the global_min baseline's, in curves.json
        ppo=dict(dataclasses.asdict(PPOConfig(num_minibatches=max(num_envs // 8, 1)))),
    ))


def score_function(config: Any, model: Any, variables: dict, splits: Any, reward_set: Any,
                   evaluator: Any) -> ScoreFn:
    """The search's reward: ``evaluator`` accuracy, or with ``prune.reward_finetune`` the
    accuracy after a few masked SGD steps per candidate (``purl_jax.reward_finetune``)."""
    from purl_jax import reward_finetune

    scorer = reward_finetune.from_config(config, model, variables, splits, reward_set, evaluator)
    if scorer is None:
        return lambda stacked, iteration: np.asarray(evaluator.evaluate_stacked(stacked).accuracy)
    return scorer


def select_function(config: Any, model: Any, variables: dict, splits: Any,
                    evaluator: Any) -> SelectFn | None:
    """``prune.select = "finetuned"``: each kept candidate trained ``prune.select_steps``
    masked SGD steps (``prune.reward_finetune``'s batch size and learning rate), then scored
    on the whole validation split. None for ``"reward"``. On ResNet-20 the masks the reward
    ranks highest before fine-tuning lose after it (BENCHMARKS.md, Constrained (e)); a
    hundred steps rank masks closer to how the full fine-tuning does."""
    import ml_collections

    from purl_jax import reward_finetune

    p = config.prune
    if p.select == "reward":
        return None
    cfg = ml_collections.ConfigDict(dict(p.reward_finetune.to_dict(), steps=p.select_steps,
                                         growth=0.0, max_steps=0))
    scorer = reward_finetune.scorer(config, cfg, model, variables, splits, splits.validation,
                                    evaluator.calibration_images)
    desc = f"select ({p.select_steps} steps each)" if p.progress else None
    return lambda stacked: scorer(stacked, 0, desc)


def check_config(p: Any, seed: int = 0) -> None:
    """``ValueError`` naming the ``prune.`` field, for a ``config.prune`` no constrained
    search can run: the checks ``run_constrained`` makes, run before any training."""
    if p.select not in SELECT:
        raise ValueError(f"prune.select must be one of {SELECT}, got {p.select!r}")
    if p.select == "finetuned" and (p.select_candidates < 2 or p.select_steps < 1):
        raise ValueError('prune.select = "finetuned" needs select_candidates >= 2 and '
                         f"select_steps >= 1, got {p.select_candidates} and {p.select_steps}")
    try:  # every message below starts with the field's name
        check_action(p.action)
        check_max_fraction(p.max_fraction)
        check_start(p.start, p.action)
        check_cost(p.cost)
        if not isinstance(p.latency_batch_size, int) or p.latency_batch_size < 1:
            raise ValueError(f"latency_batch_size must be a positive integer, got {p.latency_batch_size!r}")
        check_budget_value(p.budget)
        for b in p.budgets:
            check_budget_value(b, "budgets entries")
        search_config(p, p.budget, seed)
    except ValueError as e:
        raise type(e)(f"prune.{e}") from None


def search_config(p: Any, budget: float, seed: int) -> SearchConfig:
    """The ``SearchConfig`` of ``config.prune`` at ``budget``; a ``ValueError`` names the
    field (without the ``prune.`` prefix)."""
    ppo = dict(p.ppo)
    ppo["hidden"] = tuple(ppo["hidden"])
    try:
        ppo = PPOConfig(**ppo)
    except ValueError as e:  # its messages start with the field's name
        raise ValueError(f"ppo.{e}") from None
    return SearchConfig(budget=float(budget), iterations=p.iterations, num_envs=p.num_envs,
                        feasibility=p.feasibility, clip_start=p.clip_start, clip_step=p.clip_step,
                        clip_every=p.clip_every, checkpoint_every=p.checkpoint_every, seed=seed,
                        start=p.start, anchor=p.anchor, fill=p.fill, ppo=ppo,
                        select_candidates=p.select_candidates if p.select == "finetuned" else 1)


def _trainer(ctx):
    """``prune``'s trainer (tests inject a fake), or ``purl_jax.train`` for a bare context."""
    if ctx.trainer is not None:
        return ctx.trainer
    from purl_jax import train

    return train


def run_constrained(ctx) -> dict:
    """``config.prune.algorithm = "constrained"`` for ``purl_jax.search.prune``.

    Searches under ``prune.budget`` in ``<workdir>/search`` (``metrics.jsonl``: one record
    per iteration, read by ``purl_jax.report``; ``training.png``; ``search.json``). With
    ``prune.budgets`` it also sweeps them: every other budget is searched in
    ``search/budget_<b>``, and every budget's masks are fine-tuned (``config.finetune``,
    the config's augmentation) and tested into ``<workdir>/front.json`` / ``front.png``;
    each of ``prune.front_baselines`` is placed at every budget (``at_budget``) and
    fine-tuned and tested alike, in ``search/budget_<b>/<name>``.
    Candidates are scored by ``ctx.evaluator`` (the reward set). Returns the masks of
    ``prune.budget`` (which ``prune`` fine-tunes) with ``budget``, ``cost`` and
    ``cost_name`` for the result and the report.
    """
    from purl_jax.budgets import TIMED_COSTS, get_cost

    config, p = ctx.config, ctx.config.prune
    params = ctx.variables["params"]
    policy = MaskPolicy(**dict(config.mask_policy))
    problem = make_problem(params, ctx.graph, ctx.base_masks, action=p.action, policy=policy,
                           max_fraction=p.max_fraction)
    cost_fn = get_cost(p.cost, model=ctx.model, variables=ctx.variables, graph=ctx.graph,
                       input_shape=ctx.splits.input_shape,
                       **(dict(batch_size=p.latency_batch_size) if p.cost in TIMED_COSTS else {}))
    score_fn = score_function(config, ctx.model, ctx.variables, ctx.splits, ctx.reward_set, ctx.evaluator)
    select_fn = select_function(config, ctx.model, ctx.variables, ctx.splits, ctx.evaluator)
    main = float(p.budget)
    budgets = list(dict.fromkeys([main, *(float(b) for b in p.budgets)]))
    model = probe_costs(problem, cost_fn)
    for b in budgets:  # every budget checked before any search
        check_budget(model, b, p.cost)
    root = ctx.workdir / "search"

    def run(b):
        return search(problem, cost_fn, score_fn, search_config(p, b, config.seed),
                      root if b == main else root / f"budget_{b:g}", progress=p.progress,
                      cost_model=model, select_fn=select_fn)

    res = run(main)
    out = dict(masks=res.masks, budget=main, cost=res.cost, cost_name=p.cost,
               constrained=dict(res.to_json(), cost_name=p.cost, iterations=len(res.history)))
    if p.budgets:
        from purl_jax import report
        from purl_jax.search import finetune  # search imports this module

        trainer = _trainer(ctx)
        rows = []
        for b in sorted(budgets, reverse=True):
            r = res if b == main else run(b)
            # The main budget is fine-tuned where prune() looks, which then resumes it, done.
            where = ctx.workdir / "finetune" if b == main else root / f"budget_{b:g}"
            tuned, _, masks = finetune(ctx, r.masks, where)
            test = trainer.evaluate_dataset(ctx.model, tuned, ctx.splits.test, masks=masks,
                                            batch_size=config.train.eval_batch_size)
            rows.append(dict(r.to_json(), method="constrained", cost_name=p.cost,
                             test_accuracy=float(test["accuracy"])))
            for name in p.front_baselines:
                make = partial(baselines.FRONT_BASELINES[name], params, ctx.base_masks, ctx.graph,
                               seed=config.seed, policy=policy)
                sparsity, masks = at_budget(make, cost_fn, b)
                tuned, _, masks = finetune(ctx, masks, root / f"budget_{b:g}" / name)
                test = trainer.evaluate_dataset(ctx.model, tuned, ctx.splits.test, masks=masks,
                                                batch_size=config.train.eval_batch_size)
                rows.append(dict(method=name, budget=b, cost=float(cost_fn(masks)), cost_name=p.cost,
                                 sparsity=sparsity, test_accuracy=float(test["accuracy"])))
        files.write_text(ctx.workdir / "front.json", json.dumps(rows, indent=2) + "\n")
        report.plot_front(rows, ctx.workdir / "front.png")
        out["constrained"]["front"] = rows
    return out


def _register() -> None:
    from purl_jax import search as search_module

    try:
        search_module.register_algorithm("constrained", run_constrained)
    except ValueError:  # already registered (a module reload)
        pass


_register()
