"""Mask-tree operations called eagerly on deep models: one jitted program against one op per leaf.

    python benchmarks/mask_ops.py --out benchmarks/results/mask_ops_cpu.json

``apply_masks``, ``magnitude_masks``, ``global_magnitude_masks`` and
``channel_masks_to_masks`` run outside ``jit`` when a user (or ``export.compact``, the
gradual fine-tuning rounds, the baselines) calls them on concrete arrays. Until session
11 each one dispatched its ops leaf by leaf, so XLA compiled every op for every distinct
leaf shape; now each is one jitted program. The eager versions are timed here as the
baseline (inlined below, as they were). Each variant is timed twice after
``jax.clear_caches()``: the first call (compiling included, what a script pays once) and
the second call (cached).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purl_jax import masks as M  # noqa: E402
from purl_jax.graph import analyze  # noqa: E402
from purl_jax.models import get_model  # noqa: E402
from _common import command, machine, write_json  # noqa: E402


def eager_apply_masks(params, masks):
    return jax.tree.map(lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
                        masks, params, is_leaf=lambda x: x is None)


def eager_magnitude_masks(params, masks, graph, ratio):
    for layer in M.masked_layers(masks, graph):
        kernel = M.get_path(params, layer.path)
        masks = M.set_path(masks, layer.path, M.ascending_ranks(jnp.abs(kernel))
                           >= M.pruned_count(ratio, kernel.size))
    return masks


def eager_global_magnitude_masks(params, masks, graph, sparsity):
    layers = M.masked_layers(masks, graph)
    kernels = [jnp.abs(M.get_path(params, layer.path)).reshape(-1) for layer in layers]
    keep = M.ascending_ranks(jnp.concatenate(kernels)) >= M.pruned_count(sparsity, sum(k.size for k in kernels))
    start = 0
    for layer, k in zip(layers, kernels):
        shape = M.get_path(params, layer.path).shape
        masks = M.set_path(masks, layer.path, keep[start:start + k.size].reshape(shape))
        start += k.size
    return masks


def eager_channel_masks_to_masks(params, graph, channel_masks):
    parts = [jnp.asarray(channel_masks[g.name], bool) if g.name in channel_masks
             else jnp.ones(g.size, bool) for g in graph.groups]
    flat = jnp.concatenate(parts + [jnp.ones(1, bool)])
    live = np.zeros(graph.num_channels + 1, bool)
    for g in graph.groups:
        if g.name in channel_masks:
            live[g.offset:g.offset + g.size] = True
    masks = jax.tree.map(lambda _: None, params)
    for path, axes in graph.axis_channels.items():
        if path[0] != "params" or not any(live[idx].any() for _, idx in axes):
            continue
        shape = M.get_path(params, path[1:]).shape
        mask = jnp.ones(shape, bool)
        for axis, idx in axes:
            bshape = [1] * len(shape)
            bshape[axis] = shape[axis]
            mask = mask & flat[idx].reshape(bshape)
        masks = M.set_path(masks, path[1:], mask)
    return masks


def first_and_second(fn, *args) -> tuple[float, float]:
    jax.clear_caches()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def timing_row(before, now, args=(), names=("eager", "jitted")) -> dict:
    """First and second call of ``before`` and ``now`` on ``args``, and their ratios."""
    b1, b2 = first_and_second(before, *args)
    n1, n2 = first_and_second(now, *args)
    return {f"{names[0]}_first_s": round(b1, 3), f"{names[1]}_first_s": round(n1, 3),
            "first_call_speedup": round(b1 / n1, 2),
            f"{names[0]}_second_s": round(b2, 4), f"{names[1]}_second_s": round(n2, 4),
            "second_call_speedup": round(b2 / n2, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet50", "mobilenet_v2"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        model = get_model(name, num_classes=10)
        variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        graph = analyze(model, variables, (32, 32, 3))
        params = variables["params"]
        base = M.init_masks(params, graph)
        rng = np.random.default_rng(0)
        channels = {g: rng.random(m.shape) < 0.7 for g, m in M.init_channel_masks(graph).items()}
        masks = M.magnitude_masks(params, base, graph, 0.5)
        ops = {
            "apply_masks": ((eager_apply_masks, M.apply_masks), (params, masks)),
            "magnitude_masks": ((eager_magnitude_masks, M.magnitude_masks), (params, base, graph, 0.5)),
            "global_magnitude_masks": ((eager_global_magnitude_masks, M.global_magnitude_masks),
                                       (params, base, graph, 0.9)),
            "channel_masks_to_masks": ((eager_channel_masks_to_masks, M.channel_masks_to_masks),
                                       (params, graph, channels)),
        }
        for op, ((eager, now), op_args) in ops.items():
            row = dict(model=name, op=op, leaves=len(jax.tree.leaves(params)),
                       **timing_row(eager, now, op_args))
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = dict(machine=machine(), command=command(), rows=rows)
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
