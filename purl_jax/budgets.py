"""Cost (budget) functions of a mask tree: kept parameters, MACs, measured latency, any callable.

A cost maps a mask tree to a float. The built-in ones are relative to the dense model
(1.0 = nothing pruned) so one budget number means the same thing for every network;
a user callable may return anything finite, may be non-differentiable, and is wrapped
so a NaN or a non-scalar fails loudly with the cost's name.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from purl_jax.graph import Graph
from purl_jax.masks import Masks, _get_or_none, apply_masks

CostFn = Callable[[Masks], float]


class BudgetError(ValueError):
    """A cost that cannot be evaluated or a budget that cannot be met."""


def params_cost(params: Any, relative: bool = True) -> CostFn:
    """Kept parameters (all of them, masked or not), jit-compatible."""
    total = sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params))

    def cost(masks: Masks):
        pruned = sum(m.size - jnp.sum(m) for m in jax.tree.leaves(masks))
        kept = total - pruned
        return kept / total if relative else kept

    return cost


def flops_cost(graph: Graph, relative: bool = True) -> CostFn:
    """Multiply-accumulates per example of the conv and dense layers, jit-compatible.

    A pruned weight saves one MAC per output position. Channel masks expanded with
    ``channel_masks_to_masks`` also mask the next layers' input rows, so a pruned
    channel removes the work it fed downstream too.
    """
    total = graph.dense_macs

    def cost(masks: Masks):
        kept = 0
        for layer in graph.layers:
            mask = _get_or_none(masks, layer.path)
            kept += layer.macs if mask is None else layer.positions * jnp.sum(mask)
        return kept / total if relative else kept

    return cost


def call_seconds(fn: Callable, args: tuple) -> float:
    """Wall time of one ``fn(*args)``, waiting for the device."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def time_call(fn: Callable, *args, repeats: int = 10, warmup: int = 2,
              clock: Callable[[Callable, tuple], float] = call_seconds) -> float:
    """Median wall time in seconds of ``fn(*args)`` (``clock`` times one call)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    return float(np.median([clock(fn, args) for _ in range(repeats)]))


def latency_cost(
    model, variables: Any, input_shape: tuple[int, ...], *, batch_size: int = 32,
    repeats: int = 10, build: Callable[[Masks], tuple[Callable, tuple]] | None = None,
    relative: bool = True,
) -> CostFn:
    """Measured forward-pass time on the current device.

    By default the masked model is timed, which only gets faster where the backend skips
    zeros; pass ``build(masks) -> (fn, args)`` (for example a compact export) to time a
    smaller model. Results are cached per mask tree contents' kept counts per leaf, so
    repeated queries of the same architecture cost nothing.
    """
    x = jnp.zeros((batch_size, *input_shape), jnp.float32)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))

    def default_build(masks):
        params = apply_masks(variables["params"], masks)
        return forward, ({**variables, "params": params}, x)

    build = build or default_build
    cache: dict[tuple, float] = {}

    def measure(masks) -> float:
        key = tuple(int(jnp.sum(m)) for m in jax.tree.leaves(masks))
        if key not in cache:
            fn, args = build(masks)
            cache[key] = time_call(fn, *args, repeats=repeats)
        return cache[key]

    dense = measure(jax.tree.map(lambda _: None, variables["params"]))

    def cost(masks: Masks) -> float:
        seconds = measure(masks)
        return seconds / dense if relative else seconds

    return cost


def within_budget(cost: Any, budget: float) -> Any:
    """``cost <= budget`` in float32, the precision the built-in costs are computed in: masks
    exactly at a budget (kept weights / all weights = 0.1) read 1e-9 over it in float64.
    Elementwise for an array of costs."""
    return np.asarray(cost, np.float32) <= np.float32(budget)


def checked(cost: Callable[[Masks], Any], name: str = "cost") -> CostFn:
    """Wraps a user cost so a NaN, an infinity or a non-scalar names the culprit."""

    def wrapped(masks: Masks) -> float:
        value = cost(masks)
        try:
            value = float(np.asarray(value))
        except (TypeError, ValueError) as e:
            raise BudgetError(f"{name} must return one number, got {value!r}") from e
        if not math.isfinite(value):
            raise BudgetError(f"{name} returned {value} for these masks; it must be finite")
        return value

    return wrapped


COSTS = ("params", "flops", "latency", "layer_latency")  # the names ``get_cost`` builds
TIMED_COSTS = ("latency", "layer_latency")  # those that time calls: they take ``batch_size``


def _cost_factory(name: str) -> Callable:
    """The function ``"package.module:factory"`` names."""
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise BudgetError(f"cost {name!r}: cannot import the cost factory: {e}") from None
    if not callable(factory):
        raise BudgetError(f"cost {name} must be a function returning cost(masks), got {factory!r}")
    return factory


def check_cost(name: str | Callable) -> None:
    """``BudgetError`` (its message starting with "cost") unless ``get_cost`` can build
    ``name``: a callable, one of ``COSTS`` or an importable ``"package.module:factory"``.
    Cheap: configs are checked with it before any training."""
    if callable(name):
        return
    if isinstance(name, str) and ":" in name:
        _cost_factory(name)
    elif name not in COSTS:
        raise BudgetError(f"cost must be one of {list(COSTS)}, a callable or "
                          f"'package.module:factory'; got the unknown cost {name!r}")


def get_cost(name: str | Callable, *, model=None, variables=None, graph: Graph | None = None,
             input_shape=None, **kwargs) -> CostFn:
    """A cost by name (``COSTS``: "params", "flops", "latency", "layer_latency"), a user
    callable, or, for configs (a ConfigDict holds no callable), ``"package.module:factory"``:
    an importable function called with ``model, variables, graph, input_shape`` that
    returns the cost callable. Always checked."""
    check_cost(name)
    if callable(name):
        return checked(name, getattr(name, "__name__", "cost"))
    if name == "params":
        return checked(params_cost(variables["params"], **kwargs), name)
    if name == "flops":
        return checked(flops_cost(graph, **kwargs), name)
    if name == "latency":
        return checked(latency_cost(model, variables, input_shape, **kwargs), name)
    if name == "layer_latency":
        from purl_jax.constrained import layer_latency_cost  # it imports this module

        return checked(layer_latency_cost(graph, **kwargs), name)
    cost = _cost_factory(name)(model=model, variables=variables, graph=graph,
                               input_shape=input_shape)
    if not callable(cost):
        raise BudgetError(f"{name} must return a callable cost(masks), got {cost!r}")
    return checked(cost, name)
