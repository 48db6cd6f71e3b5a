"""Does fine-tuning reward moving away from global magnitude's per-layer allocation?

    python benchmarks/allocation_shift.py --config configs/resnet20_fmnist_constrained.py \
        --dense runs/resnet20_fmnist_dense --workdir runs/alloc --budget 0.1 \
        --shift stage1 --pay stage3 --sparsities 0.4 0.75 --seeds 0 1 \
        --config.finetune.rounds=3 --config.data_dir=../shared/data/fashion_mnist

Global magnitude pruning at a kept-params budget (or at ``--sparsity`` of the masked
weights, for a PuRL config) gives one sparsity per masked layer. Here
the layers whose name starts with ``--shift`` are set to each of ``--sparsities`` instead,
and the layers starting with ``--pay`` scale their kept fractions alike so that the network
keeps exactly as many weights as global magnitude's. Each allocation is pruned by magnitude
within its layers, fine-tuned as ``constrained_params.py`` fine-tunes (``config.finetune``,
``--finetune_epochs``, seed = the seed) and tested; ``--baseline`` adds global magnitude's own
allocation. The searches' allocations differ from global magnitude's most in the small
early layers and in the last block; this measures what such a move costs or gains after
fine-tuning, with no search in the way, and what the searches' reward makes of it.
Writes ``results.json`` (resumable, one row per run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

from purl_jax import baselines, train
from purl_jax.budgets import get_cost, within_budget
from purl_jax.masks import magnitude_masks, masked_layers, summary
from purl_jax.search import finetune, prune_context

from _common import read_runs, write_runs
from constrained_params import global_sparsity_for


def shifted(sparsity: dict[str, float], sizes: dict[str, int], shift: str, pay: str,
            value: float) -> dict[str, float]:
    """``sparsity`` with the ``shift`` layers at ``value`` and the ``pay`` layers' kept
    fractions scaled so the kept count is unchanged."""
    moved = [n for n in sparsity if n.startswith(shift)]
    payers = [n for n in sparsity if n.startswith(pay)]
    if not moved or not payers or set(moved) & set(payers):
        raise ValueError(f"--shift {shift!r} and --pay {pay!r} must name disjoint, non-empty sets of "
                         f"masked layers: {sorted(sparsity)}")
    kept = lambda names, s: sum(sizes[n] * (1.0 - s[n]) for n in names)
    out = {**sparsity, **{n: value for n in moved}}
    scale = (kept(moved, sparsity) - kept(moved, out) + kept(payers, sparsity)) / kept(payers, sparsity)
    out.update({n: 1.0 - scale * (1.0 - sparsity[n]) for n in payers})
    if not all(0.0 <= out[n] <= 1.0 for n in payers):
        raise ValueError(f"the --pay layers cannot make up for sparsity {value:g} of the --shift layers")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--budget", type=float, default=None, help="kept share of all parameters (default 0.1)")
    ap.add_argument("--sparsity", type=float, default=None,
                    help="instead of --budget: the share of the masked weights global magnitude prunes")
    ap.add_argument("--shift", required=True, help="name prefix of the layers to set")
    ap.add_argument("--pay", required=True, help="name prefix of the layers that keep the count")
    ap.add_argument("--sparsities", type=float, nargs="*", default=[])
    ap.add_argument("--baseline", action="store_true", help="also fine-tune global magnitude's allocation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--finetune_epochs", type=int, default=1)
    args, overrides = ap.parse_known_args()
    if not args.sparsities and not args.baseline:
        ap.error("nothing to run: give --sparsities, --baseline or both")
    if args.budget is not None and args.sparsity is not None:
        ap.error("give --budget or --sparsity, not both")

    config = train.load_config(args.config, overrides)
    config.dense_checkpoint = args.dense
    config.finetune.epochs = args.finetune_epochs
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    ctx = prune_context(config, root)
    params, base, graph = ctx.variables["params"], ctx.base_masks, ctx.graph
    layers = masked_layers(base, graph)
    sizes = {layer.name: layer.params for layer in layers}
    if args.sparsity is not None:  # the budget is what it keeps, unmasked biases and layers included
        target, total = args.sparsity, sum(x.size for x in jax.tree.leaves(params))
        args.budget = (total - round(target * sum(sizes.values()))) / total
    else:
        args.budget = 0.1 if args.budget is None else args.budget
        target = global_sparsity_for(args.budget, params, base, graph)
    global_masks = baselines.global_magnitude(params, base, graph, target)
    glob = {name: layer["sparsity"] for name, layer in summary(params, global_masks, graph)["layers"].items()
            if layer["masked"]}
    cost_fn = get_cost("params", variables=ctx.variables)

    def within(sparsity: dict[str, float]):
        """The allocation's masks and sparsity; rounding to whole weights can keep a weight
        or two more than the budget allows, and those come off the largest ``--pay`` layer."""
        sparsity = dict(sparsity)
        largest = max((n for n in sparsity if n.startswith(args.pay)), key=sizes.get, default=None)
        masks = magnitude_masks(params, base, graph, sparsity)
        while largest and not within_budget(cost_fn(masks), args.budget):
            sparsity[largest] = min(sparsity[largest] + 1.0 / sizes[largest], 1.0)
            masks = magnitude_masks(params, base, graph, sparsity)
        return masks, sparsity

    allocations = {f"{args.shift}={s:g}": shifted(glob, sizes, args.shift, args.pay, s)
                   for s in args.sparsities}
    if args.baseline:
        allocations = {"global_magnitude": glob, **allocations}
    out = root / "results.json"
    rows = read_runs(out)
    done = {(r["allocation"], r["seed"]) for r in rows}
    built = {name: within(sparsity) for name, sparsity in allocations.items()}
    before = {}  # reward-set accuracy before fine-tuning, as the searches score candidates
    for name, (masks, _) in built.items():
        before[name] = float(ctx.evaluator.evaluate(masks).accuracy)
        print(f"{name}: reward-set accuracy before fine-tuning {100 * before[name]:.1f}%")
    for seed in args.seeds:
        for name, (masks, sparsity) in built.items():
            if (name, seed) in done:
                continue
            config.seed = seed  # the fine-tuning's
            tuned, _, masks = finetune(ctx, masks, root / f"finetune_{name}_s{seed}")
            test = train.evaluate_dataset(ctx.model, tuned, ctx.splits.test, masks=masks)["accuracy"]
            cost = float(cost_fn(masks))
            rows.append(dict(allocation=name, seed=seed, budget=args.budget, cost=cost,
                             meets_budget=bool(within_budget(cost, args.budget)),
                             reward_accuracy_before_finetune=before[name],
                             test_accuracy=float(test), sparsity=sparsity))
            write_runs(out, rows)
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "sparsity"}))


if __name__ == "__main__":
    main()
