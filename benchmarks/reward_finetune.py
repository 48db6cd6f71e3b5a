"""Cost of ``prune.reward_finetune`` against the plain reward, and why its steps are not in a loop.

    python benchmarks/reward_finetune.py --config configs/resnet20_fmnist_constrained.py \
        --out benchmarks/results/reward_finetune_resnet20_cpu.json

Two measurements, each the best of ``--reps`` timed calls after a compile call:

1. One masked SGD train step (batch ``reward_finetune.batch_size``), ``--steps`` of them: a
   Python loop of the jitted step (what ``FinetunedScorer`` does) against the same steps in a
   jitted ``lax.scan`` and in a fully unrolled one.
2. One search iteration's scoring of ``--candidates`` masks (global magnitude at sparsities
   spread over 50-90%): ``FinetunedScorer`` at ``--steps`` steps against the plain evaluator
   (the reward without fine-tuning), both with the config's BatchNorm recalibration.

Speed does not depend on the weights, so the model keeps its initial variables (no dense
checkpoint needed). Any ``--config.a.b=value`` override of the config is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from purl_jax import baselines, train
from purl_jax.constrained import score_function
from purl_jax.data import reward_subset
from purl_jax.masks import MaskPolicy, init_masks
from purl_jax.search import reward_evaluator
from _common import command, machine, write_json


def best_time(f, reps: int) -> float:
    jax.block_until_ready(f())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", required=True)
    args, overrides = ap.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes

    config = train.load_config(args.config, overrides)
    model, variables, splits, graph = train.setup(config)
    rf = config.prune.reward_finetune
    rf.steps = args.steps
    base = init_masks(variables["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    masks = [baselines.global_magnitude(variables["params"], base, graph, s)
             for s in np.linspace(0.5, 0.9, args.candidates)]
    stacked = jax.tree.map(lambda *m: np.stack(m), *masks)

    reward = reward_subset(splits, config.prune.reward_set_size, config.seed)
    ev = reward_evaluator(config, model, variables, splits, graph, reward)
    scorer = score_function(config, model, variables, splits, reward, ev)

    # 1. the scorer's own jitted train step: called from Python, or inside a scan
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(splits.train), (args.steps, rf.batch_size))
    images, labels = jnp.asarray(splits.train.images[idx]), jnp.asarray(splits.train.labels[idx])
    state = scorer._init(variables, masks[-1], jax.random.key_data(jax.random.key(0)))
    one = lambda s, x, y: scorer._step(s, masks[-1], x, y)

    def python_loop():
        s = state
        for i in range(args.steps):
            s = one(s, images[i], labels[i])
        return s

    def scanned(unroll):
        body = lambda s, xy: (one(s, *xy), None)
        return jax.jit(lambda s: jax.lax.scan(body, s, (images, labels), unroll=unroll)[0])

    scan, unrolled = scanned(1), scanned(True)
    step_times = dict(python_loop=best_time(python_loop, args.reps),
                      scan=best_time(lambda: scan(state), args.reps),
                      scan_unrolled=best_time(lambda: unrolled(state), args.reps))

    # 2. one iteration's scoring
    plain = lambda: ev.evaluate_stacked(stacked).accuracy
    score_times = dict(plain=best_time(plain, args.reps),
                       finetuned=best_time(lambda: scorer(stacked, 0), args.reps))

    results = dict(
        command=command(),
        machine=machine(),
        load_average=os.getloadavg(), model=config.model, batch_size=rf.batch_size, steps=args.steps,
        candidates=args.candidates, reward_set_size=config.prune.reward_set_size,
        bn_calibration=config.prune.get("bn_calibration", 0),
        train_step_seconds={k: v / args.steps for k, v in step_times.items()},
        train_step_slowdown={k: v / step_times["python_loop"] for k, v in step_times.items()},
        iteration_seconds=score_times,
        finetuned_over_plain=score_times["finetuned"] / score_times["plain"])
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
