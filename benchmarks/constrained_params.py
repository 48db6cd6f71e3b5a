"""Constrained RL pruning vs global magnitude pruning at the same kept-params budget.

    purl-jax train --config configs/lenet5_mnist_constrained.py --workdir runs/lenet5_dense
    python benchmarks/constrained_params.py --dense runs/lenet5_dense --workdir runs/constrained_bench \
        --budgets 0.1 0.05 --seeds 0 1 2 --iterations 30 --finetune_epochs 1

For every (budget, seed): the constrained search with layer actions and a kept-params cost
(``--config``'s model, data, mask policy and fine-tuning; default
``configs/lenet5_mnist_constrained.py``), and global magnitude pruning of the same layers at the sparsity that
meets the same budget; both fine-tuned identically (``config.finetune`` with
``finetune_epochs``, seed = the seed; ``--config.finetune.rounds=3`` prunes gradually, as
``purl-jax prune`` does) and tested. Writes ``results.json`` (one row per run,
with the measured cost and whether it meets the budget), ``front.png`` (test accuracy
against kept params) and each search's ``training.png`` / ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from purl_jax import baselines, constrained as c, train
from purl_jax.budgets import get_cost, within_budget
from purl_jax.masks import masked_layers
from purl_jax.search import finetune, prune_context

from _common import read_runs, write_runs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist_constrained.py"


def global_sparsity_for(budget: float, params, base, graph) -> float:
    """The masked-weight sparsity whose kept parameters (of all) equal ``budget``."""
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    masked = sum(layer.params for layer in masked_layers(base, graph))
    return min((1.0 - budget) * total / masked + 1e-6, 1.0 - 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(CONFIG), help="a constrained config (its model, data, fine-tuning)")
    ap.add_argument("--dense", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.05])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--finetune_epochs", type=int, default=1)
    args, overrides = ap.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes

    config = train.load_config(args.config, overrides)
    config.dense_checkpoint = args.dense
    config.finetune.epochs = args.finetune_epochs
    config.prune.update(iterations=args.iterations, progress=False)
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    ctx = prune_context(config, root)
    model, variables, splits, graph, base = ctx.model, ctx.variables, ctx.splits, ctx.graph, ctx.base_masks
    reward, ev, params = ctx.reward_set, ctx.evaluator, ctx.variables["params"]
    cost_fn = get_cost("params", variables=variables)
    problem = c.make_problem(params, graph, base, max_fraction=config.prune.max_fraction)
    score = c.score_function(config, model, variables, splits, reward, ev)
    select = c.select_function(config, model, variables, splits, ev)
    dense_test = train.evaluate_dataset(model, variables, splits.test)["accuracy"]

    out = root / "results.json"
    rows = read_runs(out)
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    for budget in args.budgets:
        for seed in args.seeds:
            runs = {}
            if ("constrained", budget, seed) not in done:
                res = c.search(problem, cost_fn, score, c.search_config(config.prune, budget, seed),
                               root / f"search_b{budget:g}_s{seed}", progress=True, select_fn=select)
                runs["constrained"] = (res.masks, dict(fractions=res.fractions, selection=res.selection))
            if ("global_magnitude", budget, seed) not in done:
                s = global_sparsity_for(budget, params, base, graph)
                runs["global_magnitude"] = (baselines.global_magnitude(params, base, graph, s),
                                            dict(sparsity=s))
            for method, (masks, extra) in runs.items():
                cost = cost_fn(masks)
                before = float(ev.evaluate(masks).accuracy)
                config.seed = seed  # the fine-tuning's (the reward set was drawn above)
                tuned, _, masks = finetune(ctx, masks, root / f"finetune_{method}_b{budget:g}_s{seed}")
                test = train.evaluate_dataset(model, tuned, splits.test, masks=masks)["accuracy"]
                meets = bool(within_budget(cost, budget))
                rows.append(dict(method=method, budget=budget, seed=seed, cost=cost,
                                 meets_budget=meets, reward_accuracy_before_finetune=before,
                                 test_accuracy=test, dense_test_accuracy=dense_test, **extra))
                write_runs(out, rows)
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "fractions"}))
    plot(rows, root / "front.png", f"{config.model} / {config.dataset} after fine-tuning")
    summarize(rows)


def plot(rows, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for method, marker in (("constrained", "o"), ("global_magnitude", "s")):
        rs = [r for r in rows if r["method"] == method]
        ax.scatter([100 * r["cost"] for r in rs], [100 * r["test_accuracy"] for r in rs],
                   marker=marker, label=method, alpha=0.7)
    ax.set(xlabel="kept parameters (% of dense)", ylabel="test accuracy (%)",
           title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(rows) -> None:
    print("| budget | method | seeds | kept params (max) | all meet budget | test acc. mean +- std |")
    print("|---|---|---|---|---|---|")
    for budget in sorted({r["budget"] for r in rows}, reverse=True):
        for method in ("constrained", "global_magnitude"):
            rs = [r for r in rows if r["budget"] == budget and r["method"] == method]
            if rs:
                acc = np.array([r["test_accuracy"] for r in rs]) * 100
                print(f"| {budget:g} | {method} | {len(rs)} | {max(r['cost'] for r in rs):.4f} | "
                      f"{all(r['meets_budget'] for r in rs)} | {acc.mean():.2f} +- {acc.std():.2f} |")


if __name__ == "__main__":
    main()
