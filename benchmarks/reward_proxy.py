"""Do the search's rewards rank masks as fine-tuning does? Global magnitude vs searched masks.

    python benchmarks/reward_proxy.py --config configs/resnet20_fmnist_constrained.py \
        --dense runs/resnet20_fmnist_dense --budget 0.1 --steps 4 \
        --searches runs/fmnist/params/search_b0.1_s{0,1,2} runs/fmnist/params_rf/search_b0.1_s{0,1,2}

Scores global magnitude pruning at the kept-params ``--budget`` and the masks of each
``constrained_params.py`` search directory (its ``search.json`` fractions) with the plain
reward (the evaluator) and with the reward after ``--steps`` masked SGD steps
(``prune.reward_finetune``), on the config's reward set, and with the plain reward on the
validation images outside the reward sets of ``--holdout-seeds`` (the searches' seeds): a
search picks its masks by their score on its reward set, so only images it never saw tell
whether that score carries over. With ``--select-steps N``, also the score ``prune.select =
"finetuned"`` gives (N masked SGD steps, then the whole validation split), on the same
batches as ``constrained_params.py``'s selection when ``--config.seed`` is the same (both
default to the config's), so it compares with the scores in each ``search.json``'s
``selection``. Compare with their test accuracy after full fine-tuning in the searches'
``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from constrained_params import global_sparsity_for  # noqa: E402

from purl_jax import baselines, constrained as c, train  # noqa: E402
from purl_jax.budgets import get_cost  # noqa: E402
from purl_jax.data import reward_indices  # noqa: E402
from purl_jax.evaluator import Evaluator  # noqa: E402
from purl_jax.search import prune_context  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--searches", nargs="+", required=True, help="constrained search directories")
    ap.add_argument("--holdout-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds whose reward sets are left out of the held-out validation images")
    ap.add_argument("--select-steps", type=int, default=0,
                    help="> 0: also score as prune.select='finetuned' with this many steps")
    args, overrides = ap.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes

    config = train.load_config(args.config, [f"--config.dense_checkpoint={args.dense}",
                                             f"--config.prune.reward_finetune.steps={args.steps}", *overrides])
    ctx = prune_context(config, tempfile.mkdtemp())  # the dense model is loaded, not trained
    params, base, graph = ctx.variables["params"], ctx.base_masks, ctx.graph
    problem = c.make_problem(params, graph, base, max_fraction=config.prune.max_fraction)
    names = ["global magnitude"]
    masks = [baselines.global_magnitude(params, base, graph, global_sparsity_for(args.budget, params, base, graph))]
    for directory in args.searches:
        fractions = json.loads((Path(directory) / "search.json").read_text())["fractions"]
        f = jnp.asarray([fractions[n] for n in problem.names], jnp.float32)
        masks.append(problem.build(f, jnp.zeros((problem.num_steps, 1))))
        names.append(directory)
    stacked = jax.tree.map(lambda *m: np.stack([np.asarray(x) for x in m]), *masks)
    plain = np.asarray(ctx.evaluator.evaluate_stacked(stacked).accuracy)
    tuned = c.score_function(config, ctx.model, ctx.variables, ctx.splits, ctx.reward_set, ctx.evaluator)(stacked, 0)
    validation, n = ctx.splits.validation, config.prune.reward_set_size
    seen = np.zeros(len(validation), bool)
    for seed in args.holdout_seeds:
        seen[reward_indices(ctx.splits, n, seed)] = True
    held = Evaluator(ctx.model, ctx.variables, validation.images[~seen], validation.labels[~seen], graph=graph,
                     calibration_images=ctx.evaluator.calibration_images)
    fresh = np.asarray(held.evaluate_stacked(stacked).accuracy)
    cost = get_cost("params", variables=ctx.variables)
    selected = [np.nan] * len(masks)
    if args.select_steps:
        config.prune.update(select="finetuned", select_steps=args.select_steps)
        select = c.select_function(config, ctx.model, ctx.variables, ctx.splits, ctx.evaluator)
        selected = select(stacked)
    print(f"| masks | kept params | plain reward | reward after {args.steps} SGD steps | "
          f"plain, {int((~seen).sum())} held-out images | validation after {args.select_steps} "
          f"steps (prune.select) |\n|---|---:|---:|---:|---:|---:|")
    for name, m, a, b, h, v in zip(names, masks, plain, tuned, fresh, selected):
        print(f"| {name} | {float(cost(m)):.2%} | {a:.1%} | {b:.1%} | {h:.1%} | {v:.2%} |")


if __name__ == "__main__":
    main()
