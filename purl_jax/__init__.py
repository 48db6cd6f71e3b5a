"""purl-jax: prune deep networks with reinforcement learning, in JAX.

The flat public API. Models by name, the model graph (layers, FLOPs, channel groups),
masks as pytrees shaped like the params, cost (budget) functions, data, training, the
candidate evaluator, compact export and reports are imported eagerly; the searches (which
pull in rlax and distrax, a few seconds of imports) load on first use.
"""

import importlib

from purl_jax.budgets import (
    BudgetError,
    checked,
    flops_cost,
    get_cost,
    latency_cost,
    params_cost,
    time_call,
    within_budget,
)
from purl_jax.data import DataError, Splits, load_dataset, reward_subset
from purl_jax.evaluator import Evaluator, Scores
from purl_jax.export import ExportError, compact, load_export, save_export, sparse_storage
from purl_jax.graph import ChannelGroup, Graph, Layer, analyze
from purl_jax.masks import (
    MaskError,
    MaskPolicy,
    apply_masks,
    channel_masks_from_masks,
    channel_masks_to_masks,
    channel_scores,
    check_masks,
    global_magnitude_masks,
    init_channel_masks,
    init_masks,
    l1_channel_masks,
    magnitude_mask,
    magnitude_masks,
    masked_layers,
    prunable_groups,
    summary,
    threshold_mask,
)
from purl_jax.models import available_models, get_model, register
from purl_jax.report import write_report
from purl_jax.train import (
    base_config,
    evaluate_dataset,
    fit,
    load_config,
    load_dense,
    setup,
    train_and_evaluate,
)

__version__ = "0.1.0"

_LAZY = {
    "prune": "purl_jax.search",
    "prune_context": "purl_jax.search",
    "PruneContext": "purl_jax.search",
    "register_algorithm": "purl_jax.search",
    "PruneError": "purl_jax.search",
    "purl_search": "purl_jax.search",
    "purl_defaults": "purl_jax.search",
    "PruningEnv": "purl_jax.env",
    "RewardSpec": "purl_jax.env",
    "hinge_reward": "purl_jax.env",
    "DQN": "purl_jax.dqn",
    "DQNConfig": "purl_jax.dqn",
    "BASELINES": "purl_jax.baselines",
    "PROJECTIONS": "purl_jax.baselines",
    "FRONT_BASELINES": "purl_jax.baselines",
    "PPOLagrangian": "purl_jax.ppo_lagrangian",
    "PPOConfig": "purl_jax.ppo_lagrangian",
    "constrained_defaults": "purl_jax.constrained",
    "make_problem": "purl_jax.constrained",
    "at_budget": "purl_jax.constrained",
    "layer_latency_cost": "purl_jax.constrained",
}


__all__ = sorted(
    [name for name, value in globals().items()
     if not name.startswith("_") and getattr(value, "__module__", "").startswith("purl_jax")]
    + list(_LAZY)
)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'purl_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
