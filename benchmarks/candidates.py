"""Building one layer's K candidate masks for the PuRL search: one sort against two, in one run.

    python benchmarks/candidates.py --out benchmarks/results/candidates_cpu.json

``sparsity_candidates`` (``prune.action_mode = "sparsity"``) ranks the layer's weights with
one argsort and a scatter, then compares the ranks with K counts. Until session 10 it took
the ranks as a double argsort (``vmap`` hoists it out of the K candidates, so two sorts per
call); that version is timed here as the baseline (inlined), and ``threshold_candidates``
(the default actions, no sort) as the floor. Each
variant is jitted, compiled first, then timed as the best of ``--reps`` rounds of
``--calls`` calls (noise on a shared machine only adds time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purl_jax.env import sparsity_candidates, threshold_candidates  # noqa: E402
from _common import command, machine, write_json  # noqa: E402

# (name, kernel shape): LeNet-300-100 fc1, LeNet-5 fc1, a ResNet-20 stage-3 conv
LAYERS = (("lenet300 fc1", (784, 300)), ("lenet5 fc1", (800, 500)), ("resnet20 conv", (3, 3, 64, 64)))


def double_argsort_candidates(kernel: jax.Array, mask: jax.Array, ratios: jax.Array) -> jax.Array:
    """The pre-session-10 ``sparsity_candidates``: ranks as a double argsort."""
    current = 1.0 - jnp.mean(mask)
    flat = jnp.abs(jnp.where(mask, kernel, 0.0)).reshape(-1)

    def one(ratio):
        k = jnp.round(jnp.maximum(ratio, current) * flat.size).astype(jnp.int32)
        ranks = jnp.argsort(jnp.argsort(flat, stable=True), stable=True)
        return (ranks >= k).reshape(kernel.shape) & mask

    return jax.vmap(one)(ratios)


def best_time(fn, args, calls: int, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    rounds = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        rounds.append((time.perf_counter() - start) / calls)
    return min(rounds)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=23, help="candidates per call (the action grid)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    ratios = jnp.linspace(0.0, 0.99, args.k)
    alphas = jnp.linspace(0.0, 2.2, args.k)
    variants = {"one sort (sparsity_candidates)": (jax.jit(sparsity_candidates), ratios),
                "two sorts (double argsort)": (jax.jit(double_argsort_candidates), ratios),
                "no sort (threshold_candidates)": (jax.jit(threshold_candidates), alphas)}
    rows = []
    for name, shape in LAYERS:
        kernel = jax.random.normal(jax.random.key(0), shape)
        mask = jax.random.bernoulli(jax.random.key(1), 0.7, shape)  # a second visit
        times = {v: best_time(fn, (kernel, mask, grid), args.calls, args.reps)
                 for v, (fn, grid) in variants.items()}
        one, per = times["one sort (sparsity_candidates)"], times["two sorts (double argsort)"]
        rows.append(dict(layer=name, shape=list(shape), k=args.k,
                         ms={v: round(t * 1e3, 3) for v, t in times.items()},
                         speedup=round(per / one, 2)))
        print(f"{name:14s} {str(shape):16s} " + "  ".join(f"{v}: {t * 1e3:.2f} ms" for v, t in times.items())
              + f"  speedup {per / one:.1f}x")
    result = dict(machine=machine(), command=command(), rows=rows)
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
