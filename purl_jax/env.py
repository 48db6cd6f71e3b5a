"""The layer-by-layer pruning MDP shared by the RL searches (PuRL, constrained).

An episode visits every masked layer first to last, ``passes`` times (QLP-style: each
later visit may only prune more). At each step the agent picks one discrete action for
the current layer:

* ``"threshold"`` (PuRL's action): prune ``|w| < alpha * std(w)``, ``alpha`` from a grid
  (default ``{0.0, 0.1, ..., 2.2}``). ``std`` is over the layer's surviving weights, which
  on the first visit is PuRL's rule and on later visits prunes a little more.
* ``"sparsity"``: a target sparsity for the layer from a grid, by magnitude; never below
  the layer's current sparsity.
* ``"global"`` (ours): prune ``|w| < alpha * T``, ``T`` the one magnitude cut of global
  magnitude pruning at the target sparsity (same alpha grid). ``alpha = 1`` in every layer
  *is* global magnitude pruning, so the search refines that allocation instead of drawing
  one far from the target and leaving the rest to ``prune.project``.
* ``"anchored"`` (ours): keep ``factor * g`` of the layer by magnitude, ``g`` the share
  global magnitude pruning at the target sparsity keeps in it (grid of factors, e.g.
  ``(0.67, 0.8, 1.0, 1.25, 1.5)``). Like ``"global"`` it contains global magnitude's
  allocation, but bounds every layer's kept share within the grid's extreme factors of
  global's, as the constrained search's ``prune.anchor`` does: a threshold factor moves a
  sparse layer's kept share by several times, so ``"global"`` strays far from it.

``max_layer_sparsity`` < 1 caps every action: each layer keeps at least that share's
complement, its largest weights, so no step empties a layer (a 100%-pruned residual
branch is lost for good, and the reward set cannot see it before fine-tuning).

State (reconstructed; the paper's full text is unavailable): the current layer's
features (index, kind, shape, share of parameters and MACs, kernel / stride / padding),
the sparsity so far of every masked layer and overall, the accuracy on the reward set,
the previous action and the pass. Reward: the hinge form of a later paper that
benchmarks PuRL, ``-beta (max(0, (A_t - A) / A_t) + max(0, 1 - S / S_t))``, beta = 5, at
every step (``"dense"``) or only at the last one (``"terminal"``, the AMC-style ablation).

Every candidate of a step is scored in one call of an injected
``evaluate_layer(masks, layer_name, layer_masks[K, ...], episode) -> Scores(accuracy[K], loss[K])``
(a ``purl_jax.evaluator.Evaluator``, whose scores do not depend on the episode, or
``FinetunedScorer.evaluate_layer`` for rewards after a short fine-tuning whose length grows
with ``episode``), so the reward and
next state of *all* actions are known, not only of the one taken. The maths are pure jnp
functions; ``PruningEnv`` only holds the static pieces and the evaluator.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purl_jax.evaluator import Evaluator, Scores
from purl_jax.graph import Graph, Layer
from purl_jax.masks import (Masks, ascending_ranks, get_path, global_cut, global_kept_shares,
                            magnitude_mask, masked_layers, pruned_count, set_path)

KINDS = ("conv", "depthwise", "dense")
ACTION_MODES = ("threshold", "sparsity", "global", "anchored")
REWARD_MODES = ("dense", "terminal")
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(23))  # PuRL: 0.0, 0.1, ..., 2.2
DEFAULT_FACTORS = (0.67, 0.8, 1.0, 1.25, 1.5)  # "anchored": within 1.5x of global's kept share


class EnvError(ValueError):
    """A pruning environment that cannot be built from these settings."""


EvaluateLayer = Callable[[Masks, str, jax.Array, int], Scores]


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """Hinge reward targets. ``target_accuracy`` is absolute, on the reward set."""

    target_accuracy: float
    target_sparsity: float
    beta: float = 5.0
    mode: str = "dense"

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise EnvError(f"target sparsity must lie in (0, 1), got {self.target_sparsity}")
        if not 0.0 < self.target_accuracy <= 1.0:
            raise EnvError(f"target accuracy must lie in (0, 1], got {self.target_accuracy}")
        check_reward_mode(self.mode)


# Each settings check's message starts with the name of the ``config.prune`` field it
# checks: ``search.validate`` runs them before any training and adds the ``prune.`` prefix.


def check_reward_mode(mode: str) -> None:
    """``EnvError`` unless ``mode`` is one of ``REWARD_MODES``."""
    if mode not in REWARD_MODES:
        raise EnvError(f"reward_mode must be one of {REWARD_MODES}, got {mode!r}")


def check_action_mode(mode: str) -> None:
    """``EnvError`` unless ``mode`` is one of ``ACTION_MODES``."""
    if mode not in ACTION_MODES:
        raise EnvError(f"action_mode must be one of {ACTION_MODES}, got {mode!r}")


def check_passes(passes: int) -> None:
    """``EnvError`` unless an episode visits every layer at least once."""
    if not isinstance(passes, (int, np.integer)) or passes < 1:
        raise EnvError(f"passes must be an integer >= 1 (visits of every layer per episode), "
                       f"got {passes!r}")


class EnvState(NamedTuple):
    step: int  # 0 .. num_steps; num_steps = done
    layer_masks: tuple[jax.Array, ...]  # one bool mask per masked layer
    accuracy: float  # on the reward set, with the current masks
    prev_action: int  # -1 before the first action


class Outcomes(NamedTuple):
    """Every action of one step, scored: leading axis K."""

    layer_masks: jax.Array  # bool[K, *kernel_shape]
    accuracy: jax.Array
    loss: jax.Array
    sparsity: jax.Array  # overall, after the action
    reward: jax.Array
    next_obs: jax.Array  # [K, obs_dim]
    done: bool


# -- pure maths -----------------------------------------------------------------------------


def hinge_reward(accuracy, sparsity, target_accuracy, target_sparsity, beta=5.0) -> jax.Array:
    """``-beta (max(0, (A_t - A) / A_t) + max(0, 1 - S / S_t))``: 0 once both targets are met."""
    accuracy_gap = jnp.maximum(0.0, (target_accuracy - accuracy) / target_accuracy)
    sparsity_gap = jnp.maximum(0.0, 1.0 - sparsity / target_sparsity)
    return -beta * (accuracy_gap + sparsity_gap)


def step_reward(spec: RewardSpec, accuracy, sparsity, last: bool) -> jax.Array:
    """The hinge reward at every step (``dense``) or only at the last one (``terminal``)."""
    r = hinge_reward(accuracy, sparsity, spec.target_accuracy, spec.target_sparsity, spec.beta)
    return r if spec.mode == "dense" or last else jnp.zeros_like(r)


def cut_candidates(kernel: jax.Array, mask: jax.Array, cuts: jax.Array) -> jax.Array:
    """``mask & (|w| >= cut)`` for every cut: bool[K, ...]."""
    return (jnp.abs(kernel)[None] >= cuts.reshape((-1,) + (1,) * kernel.ndim)) & mask[None]


def threshold_candidates(kernel: jax.Array, mask: jax.Array, alphas: jax.Array) -> jax.Array:
    """``mask & (|w| >= alpha * std of the surviving weights)`` for every alpha: bool[K, ...]."""
    n = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(jnp.where(mask, kernel, 0.0)) / n
    std = jnp.sqrt(jnp.sum(jnp.where(mask, (kernel - mean) ** 2, 0.0)) / n)
    return cut_candidates(kernel, mask, alphas * std)


def sparsity_candidates(kernel: jax.Array, mask: jax.Array, ratios: jax.Array) -> jax.Array:
    """Magnitude masks at ``max(ratio, current sparsity)`` of the layer, nested in ``mask``."""
    current = 1.0 - jnp.mean(mask)
    ranks = ascending_ranks(jnp.abs(jnp.where(mask, kernel, 0.0)))  # pruned weights rank lowest
    counts = pruned_count(jnp.maximum(ratios, current), kernel.size)
    return (ranks >= counts.reshape(-1, *[1] * kernel.ndim)) & mask


def layer_sparsities(layer_masks: Sequence[jax.Array]) -> jax.Array:
    return jnp.stack([1.0 - jnp.mean(m) for m in layer_masks])


def overall_sparsity(sparsities: jax.Array, sizes: jax.Array) -> jax.Array:
    """Pruned share of all masked weights (``sparsities`` may carry leading axes)."""
    return jnp.sum(sparsities * sizes, axis=-1) / jnp.sum(sizes)


def observation(features: jax.Array, num_layers: int, passes: int, step,
                sparsities: jax.Array, sizes: jax.Array, accuracy, prev_action,
                num_actions: int) -> jax.Array:
    """``[layer features, per-layer sparsity, overall sparsity, accuracy, prev action, pass]``.

    ``step == num_layers * passes`` (done) repeats the last layer's features.
    """
    step = jnp.asarray(step)
    layer = jnp.minimum(step, num_layers * passes - 1) % num_layers
    scalars = jnp.stack([
        overall_sparsity(sparsities, sizes),
        jnp.asarray(accuracy, jnp.float32),
        (jnp.asarray(prev_action, jnp.float32) + 1.0) / num_actions,
        (step // num_layers).astype(jnp.float32) / passes,
    ])
    return jnp.concatenate([features[layer], sparsities, scalars]).astype(jnp.float32)


def layer_features(graph: Graph, layers: Sequence[Layer]) -> np.ndarray:
    """Static per-layer features, roughly in [0, 1]: float32[L, F].

    Index, kind one-hot, log-scaled in / out features, share of the network's parameters
    and MACs, kernel size, strides and padding (2-D, zero for dense layers).
    """
    total_params = sum(layer.params for layer in graph.layers)
    total_macs = graph.dense_macs
    rows = []
    for i, layer in enumerate(layers):
        pair = lambda xs: [float(x) for x in (tuple(xs) + (0, 0))[:2]]
        pads = [float(sum(p)) for p in (tuple(layer.padding) + ((0, 0), (0, 0)))[:2]]
        rows.append(
            [i / max(len(layers) - 1, 1)]
            + [float(layer.kind == k) for k in KINDS]
            + [math.log2(layer.in_features) / 12, math.log2(layer.out_features) / 12]
            + [layer.params / total_params, layer.macs / total_macs]
            + [x / 7 for x in pair(layer.kernel_size)]
            + [x / 4 for x in pair(layer.strides)]
            + [x / 6 for x in pads]
        )
    return np.asarray(rows, np.float32)


def action_grid(mode: str, values: Sequence[float] | None) -> np.ndarray:
    """The discrete actions: alphas (``threshold``, ``global``), layer sparsities
    (``sparsity``) or factors on global magnitude's kept share (``anchored``)."""
    check_action_mode(mode)
    if values is None:
        values = {"sparsity": tuple(i / 20 for i in range(20)),
                  "anchored": DEFAULT_FACTORS}.get(mode, DEFAULT_ALPHAS)
    grid = np.asarray(list(values), np.float32)
    if grid.ndim != 1 or grid.size == 0:
        raise EnvError(f"the action grid is empty: give at least one {mode} value")
    if mode == "anchored" and (grid <= 0).any():
        raise EnvError(f"anchored factors must be > 0 (a layer keeps factor x global "
                       f"magnitude's share), e.g. {DEFAULT_FACTORS}; got {grid.tolist()}")
    if mode in ("threshold", "global") and (grid < 0).any():
        raise EnvError(f"threshold factors (alphas) must be >= 0, got {grid.tolist()}")
    if mode == "sparsity" and ((grid < 0) | (grid > 1)).any():
        raise EnvError(f"layer sparsities must lie in [0, 1], got {grid.tolist()}")
    return grid


_observation = jax.jit(observation, static_argnums=(1, 2, 8))
_sparsity_candidates = jax.jit(sparsity_candidates)  # "anchored" names layer sparsities too
_CANDIDATES = {"threshold": jax.jit(threshold_candidates), "sparsity": _sparsity_candidates,
               "global": jax.jit(cut_candidates), "anchored": _sparsity_candidates}


@functools.partial(jax.jit, static_argnames=("last", "spec", "passes"))
def _outcomes(features, sizes, base_sparsities, cands, accuracy, layer, next_step, last: bool,
              spec: RewardSpec, passes: int):
    """Overall sparsity, reward and next observation of every candidate of one step."""
    k = cands.shape[0]
    cand_sparsity = 1.0 - jnp.mean(cands.reshape(k, -1), axis=1)
    sparsities = jnp.tile(base_sparsities, (k, 1)).at[:, layer].set(cand_sparsity)
    overall = overall_sparsity(sparsities, sizes)
    reward = step_reward(spec, accuracy, overall, last)
    next_obs = jax.vmap(
        lambda s, a, act: observation(features, sizes.shape[0], passes, next_step, s, sizes, a,
                                      act, k)
    )(sparsities, accuracy, jnp.arange(k))
    return overall, reward, next_obs


# -- the environment -----------------------------------------------------------------------


class PruningEnv:
    """Static pieces of the MDP (layers, kernels, action grid, targets) plus the evaluator.

    ``base_masks`` (from ``masks.init_masks``) decides which layers are pruned; their
    kernels come from ``params``. ``step`` is pure in ``EnvState``.
    """

    def __init__(self, params: Any, graph: Graph, base_masks: Masks,
                 evaluate_layer: EvaluateLayer | Evaluator, reward: RewardSpec, *,
                 action_mode: str = "threshold", actions: Sequence[float] | None = None,
                 passes: int = 1, max_layer_sparsity: float = 1.0) -> None:
        self.layers = masked_layers(base_masks, graph)
        if not self.layers:
            raise EnvError("no masked layers: the mask policy excludes every layer")
        check_passes(passes)
        if not 0.0 < max_layer_sparsity <= 1.0:
            raise EnvError(f"max_layer_sparsity must lie in (0, 1], got {max_layer_sparsity}")
        self.graph, self.base_masks, self.reward = graph, base_masks, reward
        if isinstance(evaluate_layer, Evaluator):
            evaluator = evaluate_layer
            evaluate_layer = lambda masks, name, layer_masks, episode: evaluator.evaluate_layer(
                masks, name, layer_masks)
        self.evaluate_layer = evaluate_layer
        self.action_mode = action_mode
        self.actions = jnp.asarray(action_grid(action_mode, actions))
        self.passes = passes
        self.kernels = tuple(jnp.asarray(get_path(params, l.path)) for l in self.layers)
        self.sizes = jnp.asarray([l.params for l in self.layers], jnp.float32)
        self.features = jnp.asarray(layer_features(graph, self.layers))
        self._candidates = _CANDIDATES[action_mode]
        # Kept by every action: each layer's largest (1 - max_layer_sparsity) share.
        self._floors = (None if max_layer_sparsity == 1.0 else
                        tuple(magnitude_mask(k, max_layer_sparsity) for k in self.kernels))
        # What the candidate function gets per layer [L, K]: the grid, or the cuts
        # ("global") or layer sparsities ("anchored") it names.
        grid = self.actions
        if action_mode == "global":
            grid = self.actions * global_cut(self.kernels, reward.target_sparsity)
        elif action_mode == "anchored":
            kept = global_kept_shares(self.kernels, reward.target_sparsity)
            grid = jnp.clip(1.0 - self.actions[None] * kept[:, None], 0.0, 1.0)
        self._grid = jnp.broadcast_to(grid, (len(self.layers), self.num_actions))

    @property
    def num_actions(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_steps(self) -> int:
        return len(self.layers) * self.passes

    @property
    def obs_dim(self) -> int:
        return int(self.features.shape[1]) + len(self.layers) + 4

    def layer_index(self, step: int) -> int:
        return step % len(self.layers)

    def masks_tree(self, layer_masks: Sequence[jax.Array]) -> Masks:
        """The full mask tree (``None`` on unmasked params) of per-layer masks."""
        masks = self.base_masks
        for layer, m in zip(self.layers, layer_masks):
            masks = set_path(masks, layer.path, m)
        return masks

    def observe(self, state: EnvState) -> jax.Array:
        return _observation(self.features, len(self.layers), self.passes, state.step,
                           layer_sparsities(state.layer_masks), self.sizes, state.accuracy,
                           state.prev_action, self.num_actions)

    def reset(self, accuracy: float | None = None) -> EnvState:
        """All weights kept. ``accuracy`` (of the dense net on the reward set) is measured
        with one evaluator call when not given."""
        layer_masks = tuple(jnp.ones(k.shape, bool) for k in self.kernels)
        if accuracy is None:
            scores = self.evaluate_layer(self.masks_tree(layer_masks), self.layers[0].name,
                                         layer_masks[0][None], 0)
            accuracy = float(scores.accuracy[0])
        return EnvState(0, layer_masks, float(accuracy), -1)

    def score_actions(self, state: EnvState, episode: int = 0) -> Outcomes:
        """Every action's mask, accuracy, loss, reward and next observation, in one
        evaluator call (``episode``: the search's, for evaluators that change over it)."""
        if state.step >= self.num_steps:
            raise EnvError("the episode is over: reset the environment")
        i = self.layer_index(state.step)
        cands = self._layer_candidates(state.layer_masks, i)
        scores = self.evaluate_layer(self.masks_tree(state.layer_masks), self.layers[i].name, cands,
                                     episode)
        accuracy = jnp.asarray(scores.accuracy, jnp.float32)
        last = state.step + 1 == self.num_steps
        overall, reward, next_obs = _outcomes(
            self.features, self.sizes, layer_sparsities(state.layer_masks), cands, accuracy, i,
            state.step + 1, last, self.reward, self.passes)
        return Outcomes(cands, accuracy, jnp.asarray(scores.loss), overall, reward, next_obs, last)

    def _layer_candidates(self, layer_masks: Sequence[jax.Array], i: int) -> jax.Array:
        cands = self._candidates(self.kernels[i], layer_masks[i], self._grid[i])
        return cands if self._floors is None else cands | self._floors[i][None]

    def replay(self, actions: Sequence[int]) -> tuple[jax.Array, ...]:
        """The per-layer masks an episode taking ``actions`` (grid indices) ends with,
        without the evaluator: the masks depend on the actions alone."""
        if len(actions) != self.num_steps:
            raise EnvError(f"an episode takes {self.num_steps} actions, got {len(actions)}")
        layer_masks = [jnp.ones(k.shape, bool) for k in self.kernels]
        for t, a in enumerate(actions):
            i = self.layer_index(t)
            layer_masks[i] = self._layer_candidates(layer_masks, i)[a]
        return tuple(layer_masks)

    def step(self, state: EnvState, outcomes: Outcomes, action: int) -> EnvState:
        """Commits ``action`` (an index into the grid) for the current layer."""
        i = self.layer_index(state.step)
        layer_masks = list(state.layer_masks)
        layer_masks[i] = outcomes.layer_masks[action]
        return EnvState(state.step + 1, tuple(layer_masks),
                        float(outcomes.accuracy[action]), int(action))
