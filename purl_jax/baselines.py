"""Magnitude-pruning baselines at a given sparsity of the masked weights.

Uniform (the same ratio in every layer), global (one threshold over all layers), global
with a minimum share kept per layer (no layer collapse; Gupta et al. 2022's default
0.05% of the network's masked weights), and random per-layer allocation (random ratios
scaled so the overall sparsity is the target, magnitude within each layer). Uniform L1
channel pruning is the structured baseline of a constrained sweep's front.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from purl_jax.graph import Graph
from purl_jax.masks import (MaskPolicy, Masks, MaskError, channel_masks_to_masks, get_path,
                            global_magnitude_masks, init_channel_masks, l1_channel_masks,
                            magnitude_mask, magnitude_masks, masked_layers, set_path)

Baseline = Callable[..., Masks]


def _check(sparsity: float) -> None:
    if not 0.0 < sparsity < 1.0:
        raise MaskError(f"target sparsity must lie in (0, 1), got {sparsity}")


def uniform(params: Any, masks: Masks, graph: Graph, sparsity: float, **_) -> Masks:
    """The same share ``sparsity`` pruned by magnitude in every masked layer."""
    _check(sparsity)
    return magnitude_masks(params, masks, graph, float(sparsity))


def global_magnitude(params: Any, masks: Masks, graph: Graph, sparsity: float, **_) -> Masks:
    """One magnitude threshold over all masked layers, pruning ``sparsity`` of their weights."""
    _check(sparsity)
    return global_magnitude_masks(params, masks, graph, sparsity)


def global_min(params: Any, masks: Masks, graph: Graph, sparsity: float, *,
               min_keep_fraction: float = 0.0005, **_) -> Masks:
    """Global magnitude where every layer keeps at least ``min_keep_fraction`` of the
    masked weights (of the network), so no layer is emptied."""
    _check(sparsity)
    return global_magnitude_masks(params, masks, graph, sparsity, min_keep_fraction=min_keep_fraction)


def random_ratios(sizes: np.ndarray, sparsity: float, seed: int) -> np.ndarray:
    """Per-layer ratios ``min(cap, c * u)``, ``u ~ U(0, 1)``, with ``c`` bisected so the
    size-weighted mean is ``sparsity``; every layer keeps at least one weight."""
    sizes = np.asarray(sizes, np.float64)
    u = np.random.default_rng(seed).uniform(0.05, 1.0, len(sizes))
    cap = 1.0 - 1.0 / sizes
    if sparsity > (cap * sizes).sum() / sizes.sum():
        raise MaskError(f"sparsity {sparsity} leaves less than one weight per layer")
    lo, hi = 0.0, 1.0 / u.min()
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if (np.minimum(cap, c * u) * sizes).sum() < sparsity * sizes.sum() else (lo, c)
    return np.minimum(cap, hi * u)


def random_allocation(params: Any, masks: Masks, graph: Graph, sparsity: float, *,
                      seed: int = 0, **_) -> Masks:
    """Random per-layer ratios (``random_ratios``) at overall ``sparsity``, by magnitude
    within each layer."""
    _check(sparsity)
    layers = masked_layers(masks, graph)
    ratios = random_ratios(np.array([l.params for l in layers]), sparsity, seed)
    return magnitude_masks(params, masks, graph, {l.name: float(r) for l, r in zip(layers, ratios)})


def scale_keep(sizes: np.ndarray, keep: np.ndarray, sparsity: float,
               max_layer_sparsity: float = 1.0) -> np.ndarray:
    """Per-layer ratios ``1 - c * keep`` (every layer keeping between one weight, or its
    ``1 - max_layer_sparsity`` share, and all), ``c`` bisected so the size-weighted
    sparsity is ``sparsity``: the allocation's shape kept, its total moved to the target."""
    sizes = np.asarray(sizes, np.float64)
    floor = np.maximum(1.0 / sizes, 1.0 - max_layer_sparsity)
    keep = np.maximum(np.asarray(keep, np.float64), floor)  # a collapsed layer keeps the floor
    budget = (1.0 - sparsity) * sizes.sum()
    lo, hi = 0.0, 1.0 / keep.min()
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if (np.clip(c * keep, floor, 1.0) * sizes).sum() < budget else (lo, c)
    return 1.0 - np.clip(hi * keep, floor, 1.0)  # no layer collapses


def _check_cap(sparsity: float, max_layer_sparsity: float) -> None:
    if not sparsity <= max_layer_sparsity <= 1.0:
        raise MaskError(f"max_layer_sparsity must lie in [sparsity, 1] = [{sparsity}, 1], "
                        f"got {max_layer_sparsity}")


def project_scale(params: Any, masks: Masks, graph: Graph, found: Masks, sparsity: float,
                  max_layer_sparsity: float = 1.0) -> Masks:
    """``found``'s per-layer allocation rescaled to exactly ``sparsity`` overall, by
    magnitude within each layer (threshold actions prune by magnitude too, so at equal
    per-layer ratios the masks are the same); no layer beyond ``max_layer_sparsity``."""
    _check(sparsity)
    _check_cap(sparsity, max_layer_sparsity)
    layers = masked_layers(masks, graph)
    sizes = np.array([l.params for l in layers])
    keep = np.array([float(np.mean(np.asarray(get_path(found, l.path)))) for l in layers])
    ratios = scale_keep(sizes, keep, sparsity, max_layer_sparsity)
    return magnitude_masks(params, masks, graph, {l.name: float(r) for l, r in zip(layers, ratios)})


def project_global(params: Any, masks: Masks, graph: Graph, found: Masks, sparsity: float,
                   max_layer_sparsity: float = 1.0) -> Masks:
    """``found`` moved to exactly ``sparsity`` overall by one magnitude ranking over all
    layers: the weights it kept rank above those it pruned, so extra pruning takes the
    smallest weights it kept, in whichever layer they are (and a shortfall restores the
    largest it pruned). Unlike ``project_scale``, a small layer is not pruned harder just
    because the whole allocation is scaled; but when ``found`` pruned only weights that
    global magnitude pruning at ``sparsity`` prunes too (a search that stopped well short
    of the target), the result *is* global magnitude's masks (BENCHMARKS.md, PuRL,
    "Session 11"). Each layer's largest ``1 - max_layer_sparsity`` share ranks above all."""
    _check(sparsity)
    _check_cap(sparsity, max_layer_sparsity)
    layers = masked_layers(masks, graph)
    # In NumPy, once per search: eager jnp would compile each op for every kernel shape.
    weights = {l.path: np.abs(np.asarray(get_path(params, l.path))) for l in layers}
    top = 1.0 + max(float(w.max()) for w in weights.values())
    scores = params
    for path, w in weights.items():
        score = np.where(np.asarray(get_path(found, path)), w + top, w)
        if max_layer_sparsity < 1.0:
            floor = np.asarray(magnitude_mask(jnp.asarray(w), max_layer_sparsity))
            score = np.where(floor, w + 2 * top, score)
        scores = set_path(scores, path, score)
    return global_magnitude_masks(scores, masks, graph, sparsity)


# ``prune.project``: how the search's best masks reach exactly the target sparsity.
PROJECTIONS: dict[str, Callable[..., Masks]] = {"scale": project_scale, "global": project_global}


BASELINES: dict[str, Baseline] = {
    "uniform": uniform,
    "global": global_magnitude,
    "global_min": global_min,
    "random": random_allocation,
}


def uniform_l1(params: Any, masks: Masks, graph: Graph, sparsity: float, *,
               policy: MaskPolicy = MaskPolicy(), **_) -> Masks:
    """Structured: the ``sparsity`` share of every prunable channel group's outputs, those
    of least L1 norm (Li et al. 2017); ``sparsity`` counts channels, not weights."""
    _check(sparsity)
    channels = l1_channel_masks(params, graph, init_channel_masks(graph, policy), float(sparsity))
    return channel_masks_to_masks(params, graph, channels)


# ``prune.front_baselines``: what a constrained budget sweep places at each of its budgets.
FRONT_BASELINES: dict[str, Baseline] = {**BASELINES, "uniform_l1": uniform_l1}
