"""Compact export against the dense model: measured latency and throughput next to MACs.

    python benchmarks/export.py [--models resnet20,vgg11,mobilenet_v2] [--out benchmarks/results/export_cpu.json]

Every group of channels is pruned by L1 norm at the same ratio, the model is rebuilt with
``purl_jax.export.compact``, and both are timed in the same run (median of repeats, after
warm-up) at batch 1 (latency) and batch 256 (throughput). The dense masked model is the
baseline: masks alone leave its time unchanged, which the first row shows.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from purl_jax import budgets, export, graph as G, masks as M
from purl_jax.models import get_model
from _common import command, machine, write_json

INPUTS = {"resnet20": (32, 32, 3), "resnet56": (32, 32, 3), "vgg11": (32, 32, 3),
          "mobilenet_v2": (96, 96, 3), "lenet5": (28, 28, 1)}


def bench(name: str, ratios=(0.0, 0.25, 0.5, 0.75), repeats: int = 10) -> list[dict]:
    shape = INPUTS[name]
    model = get_model(name, num_classes=10)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *shape)))
    graph = G.analyze(model, variables, shape)
    groups = M.init_channel_masks(graph)
    rows = []
    for ratio in ratios:
        cm = M.l1_channel_masks(variables["params"], graph, groups, ratio)
        full = M.channel_masks_to_masks(variables["params"], graph, cm)
        masked_vars = {**variables, "params": M.apply_masks(variables["params"], full)}
        small, small_vars = export.compact(model, variables, graph, cm)
        row = dict(model=name, input=shape, ratio=ratio,
                   macs_kept=float(budgets.flops_cost(graph)(full)),
                   params_kept=float(budgets.params_cost(variables["params"])(full)))
        for batch in (1, 256):
            x = jax.random.normal(jax.random.key(1), (batch, *shape))
            dense_fn = jax.jit(lambda v, x: model.apply(v, x))
            small_fn = jax.jit(lambda v, x: small.apply(v, x))
            # Interleave the two so drift on a shared machine hits both alike.
            t_dense, t_small = [], []
            for _ in range(3):
                t_dense.append(budgets.time_call(dense_fn, masked_vars, x, repeats=repeats))
                t_small.append(budgets.time_call(small_fn, small_vars, x, repeats=repeats))
            d, s = sorted(t_dense)[1], sorted(t_small)[1]
            row[f"masked_ms_b{batch}"] = 1e3 * d
            row[f"compact_ms_b{batch}"] = 1e3 * s
            row[f"speedup_b{batch}"] = d / s
        row["compact_images_per_s_b256"] = 256 / (row["compact_ms_b256"] / 1e3)
        row["masked_images_per_s_b256"] = 256 / (row["masked_ms_b256"] / 1e3)
        rows.append(row)
        print(f"{name:<13} ratio {ratio:.2f}  MACs kept {row['macs_kept']:.3f}  "
              f"speedup b1 {row['speedup_b1']:.2f}x  b256 {row['speedup_b256']:.2f}x  "
              f"({row['masked_images_per_s_b256']:.0f} -> {row['compact_images_per_s_b256']:.0f} img/s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,vgg11,mobilenet_v2")
    parser.add_argument("--out", default="benchmarks/results/export_cpu.json")
    args = parser.parse_args()
    start = time.time()
    rows = [r for name in args.models.split(",") for r in bench(name)]
    write_json(args.out, dict(machine=machine(), command=command(), rows=rows,
                              seconds=round(time.time() - start, 1)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
