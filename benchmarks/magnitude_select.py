"""Magnitude masks by selection (``masks.smallest``) against the stable sort they replaced.

    python benchmarks/magnitude_select.py --out benchmarks/results/magnitude_select_cpu.json

Exact-count magnitude pruning keeps all but the k smallest |w|, ties by position. Until
session 15 ``magnitude_masks`` and ``global_magnitude_masks`` ranked every weight with a
stable argsort and a scatter (``ascending_ranks``); they now find the k-th value by
counting (``smallest``). The sort versions, as they were, are inlined below as the
baseline, jitted the same way; both are timed after ``jax.clear_caches()`` (first call,
compiling included, and second call) and their masks are checked to be identical.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
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
from mask_ops import timing_row  # noqa: E402


@jax.jit
def sorted_layer_masks(kernels, ratios):
    return [M.ascending_ranks(jnp.abs(k)) >= M.pruned_count(r, k.size) for k, r in zip(kernels, ratios)]


@functools.partial(jax.jit, static_argnames="min_keep_fraction")
def sorted_global_masks(kernels, sparsity, min_keep_fraction):
    total = sum(k.size for k in kernels)
    reserve = int(round(min_keep_fraction * total))
    scores = []
    for k in kernels:
        k = jnp.abs(k).reshape(-1)
        m = min(reserve, k.size)
        if m:
            k = jnp.where(M.ascending_ranks(-k) < m, jnp.inf, k)
        scores.append(k)
    keep = M.ascending_ranks(jnp.concatenate(scores)) >= M.pruned_count(sparsity, total)
    out, start = [], 0
    for k in kernels:
        out.append(keep[start:start + k.size].reshape(k.shape))
        start += k.size
    return out


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
        layers = M.masked_layers(base, graph)
        kernels = [M.get_path(params, layer.path) for layer in layers]
        ratios = [jnp.float32(r) for r in np.linspace(0.3, 0.95, len(layers))]
        ops = {
            "magnitude_masks": (
                lambda: sorted_layer_masks(kernels, ratios),
                lambda: M._magnitude_kernel_masks(kernels, ratios)),
            "global_magnitude_masks": (
                lambda: sorted_global_masks(kernels, jnp.float32(0.9), 0.0),
                lambda: M._global_kernel_masks(kernels, jnp.float32(0.9), 0.0)),
            "global_magnitude_masks, min_keep_fraction 0.002": (
                lambda: sorted_global_masks(kernels, jnp.float32(0.9), 0.002),
                lambda: M._global_kernel_masks(kernels, jnp.float32(0.9), 0.002)),
        }
        for op, (before, now) in ops.items():
            identical = all(np.array_equal(a, b) for a, b in zip(before(), now()))
            row = dict(model=name, op=op, masked_weights=sum(k.size for k in kernels),
                       identical_masks=identical, **timing_row(before, now, names=("sort", "select")))
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = dict(machine=machine(), command=command(), rows=rows)
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
