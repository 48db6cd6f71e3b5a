"""Structured (channel) constrained RL pruning vs uniform L1 channel pruning at the same budget.

    purl-jax train --config configs/lenet5_mnist_constrained.py --workdir runs/lenet5_dense
    python benchmarks/constrained_channels.py --dense runs/lenet5_dense --workdir runs/constrained_flops \
        --cost flops --budget 0.5 --config.mask_policy.exclude_first=False --seeds 0 1 2 --iterations 30 \
        --finetune_epochs 1
    python benchmarks/constrained_channels.py --dense runs/lenet5_dense --workdir runs/constrained_latency \
        --cost layer_latency --budget 0.5 --config.mask_policy.exclude_first=False --seeds 0 1 2 --iterations 30 \
        --finetune_epochs 1

``--config``'s model, data and fine-tuning (default ``configs/lenet5_mnist_constrained.py``);
the channel groups of its mask policy (``--config.mask_policy.exclude_first=False`` adds the first
layer: LeNet-5's groups conv1, conv2 and fc1; the classifier's outputs always stay). For every seed: the constrained search with channel
actions (``--action channel_l1``: a pruned fraction per group, by L1 norm; ``channel``: a
keep value per output channel) under ``cost <= budget``, and uniform L1 channel
pruning (``masks.l1_channel_masks``, Li et al. 2017) at the least ratio, on a 0.005 grid,
that meets the same budget; both fine-tuned identically (``config.finetune`` with
``finetune_epochs``, seed = the seed) and tested. ``--cost flops``: MACs relative to
dense; ``--cost layer_latency``: ``constrained.layer_latency_cost`` (the compact conv / dense
layers timed on this device at ``--latency_batch`` images, a per-shape lookup table with
channel counts rounded up to ``--latency_levels`` steps), every
returned solution also re-measured with a fresh table (``fresh_cost``). Writes
``results.json`` (resumable) and each search's ``training.png`` / ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from purl_jax import constrained as c, train
from purl_jax.budgets import get_cost, within_budget
from purl_jax.masks import MaskPolicy, channel_masks_to_masks, l1_channel_masks, prunable_groups
from purl_jax.search import prune_context

from _common import read_runs, write_runs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist_constrained.py"


def make_cost(name: str, graph, latency_batch: int = 1000, levels: int = 8):
    if name == "layer_latency":
        return get_cost(c.layer_latency_cost(graph, batch_size=latency_batch, levels=levels))
    return get_cost(name, graph=graph)


def uniform_l1(params, graph, policy: MaskPolicy, cost_fn, budget: float, step: float = 0.005):
    """The least uniform L1 channel ratio whose masks meet the budget, and the masks."""
    ones = {g.name: jnp.ones(g.size, bool) for g in prunable_groups(graph, policy)}
    for ratio in np.arange(0.0, 1.0, step):
        masks = channel_masks_to_masks(params, graph, l1_channel_masks(params, graph, ones, float(ratio)))
        if within_budget(cost_fn(masks), budget):
            return float(ratio), masks
    raise RuntimeError(f"no uniform ratio meets budget {budget}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(CONFIG), help="a constrained config (its model, data, fine-tuning)")
    ap.add_argument("--dense", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--cost", default="flops", choices=["flops", "layer_latency", "params"])
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--action", default="channel_l1", choices=["channel_l1", "channel"],
                    help="channel_l1: a fraction per group, by L1 norm; channel: a keep value per channel")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--finetune_epochs", type=int, default=1)
    ap.add_argument("--latency_batch", type=int, default=1000,
                    help="images per timed call: LeNet-5's layers are overhead-bound at small batches")
    ap.add_argument("--latency_levels", type=int, default=8,
                    help="channel counts rounded up to n / levels steps in the latency table")
    args, overrides = ap.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes

    config = train.load_config(args.config, overrides)
    config.dense_checkpoint = args.dense
    config.finetune.epochs = args.finetune_epochs
    config.prune.update(iterations=args.iterations, progress=False, action=args.action, cost=args.cost)
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    ctx = prune_context(config, root)
    model, variables, splits, graph = ctx.model, ctx.variables, ctx.splits, ctx.graph
    reward, ev, params = ctx.reward_set, ctx.evaluator, variables["params"]
    cost_fn = make_cost(args.cost, graph, args.latency_batch, args.latency_levels)
    policy = MaskPolicy(**dict(config.mask_policy))
    problem = c.make_problem(params, graph, None, action=args.action, policy=policy,
                             max_fraction=config.prune.max_fraction)
    score = c.score_function(config, model, variables, splits, reward, ev)
    dense_test = train.evaluate_dataset(model, variables, splits.test)["accuracy"]
    kept_params = get_cost("params", variables=variables)
    flops = get_cost("flops", graph=graph)
    model_costs = c.probe_costs(problem, cost_fn)
    print(f"{args.cost}: dense {model_costs.dense:.4g}, floor {model_costs.floor:.4g}, "
          f"per-group reductions {np.round(model_costs.reductions, 4).tolist()}", flush=True)
    c.check_budget(model_costs, args.budget, args.cost)
    ratio, l1_masks = uniform_l1(params, graph, policy, cost_fn, args.budget)

    out = root / "results.json"
    rows = read_runs(out)
    done = {(r["method"], r["seed"]) for r in rows}
    for seed in args.seeds:
        runs = {}
        if ("constrained", seed) not in done:
            res = c.search(problem, cost_fn, score, c.search_config(config.prune, args.budget, seed),
                           root / f"search_s{seed}", progress=True)
            runs["constrained"] = (res.masks, dict(fractions=res.fractions))
        if ("uniform_l1", seed) not in done:
            runs["uniform_l1"] = (l1_masks, dict(ratio=ratio))
        for method, (masks, extra) in runs.items():
            cost = float(cost_fn(masks))
            if args.cost == "layer_latency":  # an independent measurement with a new table
                fresh = make_cost(args.cost, graph, args.latency_batch, args.latency_levels)
                extra["fresh_cost"] = float(fresh(masks))
            before = float(ev.evaluate(masks).accuracy)
            tuned = variables  # --finetune_epochs 0: tested as pruned, without fine-tuning
            if args.finetune_epochs > 0:
                tuned, _ = train.fit(model, variables, splits, config.finetune, masks=masks, seed=seed,
                                     desc=f"finetune {method} s={seed}",
                                     augment=train.get_augment(config))
            test = train.evaluate_dataset(model, tuned, splits.test, masks=masks)["accuracy"]
            rows.append(dict(method=method, action=args.action if method == "constrained" else None,
                             cost_name=args.cost, budget=args.budget, seed=seed,
                             cost=cost, meets_budget=bool(within_budget(cost, args.budget)),
                             flops=float(flops(masks)), kept_params=float(kept_params(masks)),
                             reward_accuracy_before_finetune=before, test_accuracy=float(test),
                             finetune_epochs=args.finetune_epochs,
                             dense_test_accuracy=float(dense_test), **extra))
            write_runs(out, rows)
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "fractions"}), flush=True)
    summarize(rows)


def summarize(rows) -> None:
    print("| method | cost | budget | seeds | cost (max) | all meet budget | FLOPs | test acc. mean +- std |")
    print("|---|---|---|---|---|---|---|---|")
    for method in ("constrained", "uniform_l1"):
        rs = [r for r in rows if r["method"] == method]
        if rs:
            acc = np.array([r["test_accuracy"] for r in rs]) * 100
            print(f"| {method} | {rs[0]['cost_name']} | {rs[0]['budget']:g} | {len(rs)} | "
                  f"{max(r['cost'] for r in rs):.4f} | {all(r['meets_budget'] for r in rs)} | "
                  f"{np.mean([r['flops'] for r in rs]):.4f} | {acc.mean():.2f} +- {acc.std():.2f} |")


if __name__ == "__main__":
    main()
