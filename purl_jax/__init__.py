"""purl-jax: prune deep networks with reinforcement learning, in JAX.

The flat public API: models by name, the model graph (layers, FLOPs, channel groups),
masks as pytrees shaped like the params, and cost (budget) functions.
"""

from purl_jax.budgets import (
    BudgetError,
    checked,
    flops_cost,
    get_cost,
    latency_cost,
    params_cost,
    time_call,
)
from purl_jax.graph import ChannelGroup, Graph, Layer, analyze
from purl_jax.masks import (
    MaskError,
    MaskPolicy,
    apply_masks,
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

__version__ = "0.1.0"
