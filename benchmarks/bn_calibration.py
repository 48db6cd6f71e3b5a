"""Reward-set accuracy of globally magnitude-pruned masks with the dense BatchNorm statistics
and with statistics re-estimated per candidate (``prune.bn_calibration``), no training.

    python benchmarks/bn_calibration.py --config configs/resnet20_fmnist_constrained.py \
        --dense runs/resnet20_fmnist_dense --out benchmarks/results/bn_calibration_resnet20_fmnist.json

Uses the config's reward set and mask policy, and ``search.reward_evaluator``, the
evaluator both searches score with.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import numpy as np

from purl_jax import baselines, train
from purl_jax.data import reward_subset
from purl_jax.masks import MaskPolicy, init_masks
from purl_jax.search import reward_evaluator
from _common import command, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--calibration", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--out", required=True)
    args, overrides = ap.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes

    config = train.load_config(args.config, overrides)
    config.dense_checkpoint = args.dense
    parts = train.setup(config)
    model, _, splits, graph = parts
    variables = train.load_dense(config, tempfile.mkdtemp(), parts=parts)  # the data loaded once
    base = init_masks(variables["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    reward = reward_subset(splits, config.prune.reward_set_size, config.seed)
    rows = []
    for n in [0, *args.calibration]:
        config.prune.bn_calibration = n
        ev = reward_evaluator(config, model, variables, splits, graph, reward)
        masks = [baselines.global_magnitude(variables["params"], base, graph, s) for s in args.sparsities]
        stacked = jax.tree.map(lambda *m: np.stack(m), *masks)
        accuracy = np.asarray(ev.evaluate_stacked(stacked).accuracy)
        rows += [dict(sparsity=s, calibration_images=n, reward_accuracy=float(a))
                 for s, a in zip(args.sparsities, accuracy)]
        print(n, dict(zip(args.sparsities, np.round(accuracy, 3).tolist())), flush=True)
    write_json(args.out, dict(command=command(), reward_set_size=config.prune.reward_set_size, rows=rows))


if __name__ == "__main__":
    main()
