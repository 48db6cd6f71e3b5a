"""PuRL against the magnitude baselines at equal sparsity, same fine-tuning, several seeds.

    python benchmarks/purl_vs_baselines.py --config configs/lenet5_mnist_purl.py \
        --sparsities 0.9 0.95 0.98 --seeds 0 1 2 --workdir runs/purl_vs_baselines

Every run is ``purl_jax.search.prune`` with ``config.prune.algorithm`` and
``target_sparsity`` overridden; the dense model is trained once (``dense_checkpoint``) and
shared. Writes one JSON line per run to benchmarks/results/purl_vs_baselines.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from purl_jax.search import prune
from purl_jax.train import load_config, train_and_evaluate

ALGORITHMS = ("purl", "global", "global_min", "uniform", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "purl_vs_baselines.jsonl"))
    args, overrides = parser.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes
    workdir = Path(args.workdir).resolve()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        config = load_config(args.config, overrides)
        config.seed = seed
        dense_dir = workdir / f"dense_seed{seed}"
        if not config.dense_checkpoint:
            train_and_evaluate(config, dense_dir)
            config.dense_checkpoint = str(dense_dir)
        for sparsity in args.sparsities:
            for algorithm in args.algorithms:
                config.prune.algorithm, config.prune.target_sparsity = algorithm, sparsity
                run_dir = workdir / f"{algorithm}_s{sparsity}_seed{seed}"
                result = prune(config, run_dir)
                row = {k: result[k] for k in (
                    "algorithm", "target_sparsity", "sparsity", "dense_test_accuracy",
                    "pruned_test_accuracy", "flop_reduction", "search_seconds", "seconds")}
                with open(out, "a") as f:
                    f.write(json.dumps(dict(config=args.config, seed=seed, **row)) + "\n")


if __name__ == "__main__":
    main()
