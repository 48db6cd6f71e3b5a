"""Issue 4's PuRL figures against ONE shared dense checkpoint (no dense retraining per run).

    # PuRL (allocation projected to the target) vs global magnitude, same fine-tuning
    python benchmarks/purl_figures.py compare --config configs/lenet300_mnist_purl.py \
        --dense runs/lenet300_mnist --sparsities 0.9 0.95 0.98 --seeds 0 1 2 \
        --workdir runs/purl_fig_lenet300 --out benchmarks/results/purl_lenet300_compare.json
    # dense per-step vs terminal reward: search only, same seeds
    python benchmarks/purl_figures.py reward-modes --config configs/lenet300_mnist_purl.py \
        --dense runs/lenet300_mnist --seeds 0 1 2 --workdir runs/purl_fig_lenet300_rm \
        --out benchmarks/results/purl_lenet300_reward_modes.json
    # ablation of the MDP and agent choices: each variant changes config.prune fields
    python benchmarks/purl_figures.py ablation --config configs/lenet300_mnist_purl.py \
        --dense runs/lenet300_mnist --sparsities 0.95 --seeds 0 1 2 --workdir runs/purl_ablation \
        --out benchmarks/results/purl_lenet300_ablation.json \
        --variants experience=taken passes=1 "action_mode=sparsity;actions=(0.5,0.9,0.99)"
    # the same variants screened without fine-tuning: reward-set accuracy of the returned
    # masks beside global magnitude pruning's
    python benchmarks/purl_figures.py oneshot ... --variants select=projected

The JSON is rewritten after every run, so a cut-short benchmark keeps what it measured.
Seeds vary ``config.seed`` (search, fine-tuning order, reward set); the validation split
(``config.split_seed``, the dense model's) and the test set are fixed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import ml_collections
import numpy as np

from purl_jax import baselines, train
from purl_jax.masks import summary as mask_summary
from purl_jax.search import prune, prune_context, run_purl
from _common import command, machine, write_json


def load_config(args: argparse.Namespace, seed: int,
                extra: list[str] = ()) -> ml_collections.ConfigDict:
    c = train.load_config(args.config, [*args.overrides, *extra])
    c.seed, c.dense_checkpoint = seed, str(Path(args.dense).resolve())
    c.prune.progress, c.prune.baseline_curves = False, False
    if args.finetune_epochs is not None:
        c.finetune.epochs = args.finetune_epochs
    if args.finetune_rounds is not None:
        c.finetune.rounds = args.finetune_rounds
    if args.episodes is not None:
        c.prune.episodes = args.episodes
    return c


def mean_std(xs: list[float]) -> dict:
    return dict(mean=float(np.mean(xs)), std=float(np.std(xs)), n=len(xs))


def paired(rows: list[dict], a: str = "purl", b: str = "global") -> dict:
    """``a`` minus ``b`` test accuracy at each target sparsity, paired by seed over the seeds
    both ran: mean, standard error, n, and how many seeds are better / worse. On LeNet-300-100
    at 95% one weight fewer moves a seed by up to 0.2 points (BENCHMARKS, PuRL "Session 26"),
    so only this paired mean over several seeds says which allocation is better."""
    acc: dict = {}
    for r in rows:
        acc.setdefault(r["target_sparsity"], {}).setdefault(r["algorithm"], {})[r["seed"]] = \
            r["pruned_test_accuracy"]
    out = {}
    for sparsity, by in acc.items():
        seeds = sorted(set(by.get(a, ())) & set(by.get(b, ())))
        if not seeds:
            continue
        d = np.array([by[a][s] - by[b][s] for s in seeds])
        out[f"{a}-{b}@{sparsity}"] = dict(
            mean=float(d.mean()), se=float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else None,
            n=int(d.size), better=int((d > 0).sum()), worse=int((d < 0).sum()))
    return out


def compare(args: argparse.Namespace) -> None:
    """PuRL and global magnitude at each target sparsity and seed, fine-tuned alike."""
    rows = []
    for sparsity in args.sparsities:
        for seed in args.seeds:
            for algorithm in args.algorithms:
                c = load_config(args, seed)
                c.prune.algorithm, c.prune.target_sparsity = algorithm, sparsity
                r = prune(c, Path(args.workdir) / f"{algorithm}_s{sparsity}_seed{seed}")
                rows.append(dict(
                    algorithm=algorithm, target_sparsity=sparsity, seed=seed,
                    sparsity=r["sparsity"], dense_test_accuracy=r["dense_test_accuracy"],
                    pruned_test_accuracy=r["pruned_test_accuracy"],
                    layer_sparsity=r["layer_sparsity"], search_seconds=r["search_seconds"],
                    seconds=r["seconds"], search_best=r.get("best")))
                summary = {}
                for row in rows:
                    key = f"{row['algorithm']}@{row['target_sparsity']}"
                    summary.setdefault(key, []).append(row["pruned_test_accuracy"])
                write_json(args.out, dict(
                    command=command(), machine=machine(),
                    finetune=c.finetune.to_dict(), prune={k: v for k, v in c.prune.to_dict().items()
                                                          if k != "algorithm"},
                    summary={**{k: mean_std(v) for k, v in summary.items()}, **paired(rows)},
                    runs=rows))


def read_episodes(workdir: Path) -> tuple[list[dict], float, dict]:
    """A search's per-episode log, its best final reward and the episode that first reached it."""
    episodes = [json.loads(l) for l in (workdir / "search" / "episodes.jsonl").read_text().splitlines()]
    final = episodes[-1]["best_final_reward"]
    return episodes, final, next(e for e in episodes if e["best_final_reward"] >= final)


def search_only(config: ml_collections.ConfigDict, workdir: Path) -> tuple[list[dict], float, dict]:
    """The PuRL search of ``prune`` without fine-tuning; ``read_episodes`` of it."""
    run_purl(prune_context(config, workdir))
    return read_episodes(workdir)


def reward_modes(args: argparse.Namespace) -> None:
    """Episodes and seconds until the best final reward of the run is first reached."""
    rows = []
    for seed in args.seeds:
        for mode in ("dense", "terminal"):
            c = load_config(args, seed)
            c.prune.reward_mode = mode
            c.prune.target_sparsity = args.sparsities[0]
            t0 = time.time()
            episodes, final, hit = search_only(c, Path(args.workdir) / f"{mode}_seed{seed}")
            best = next(e for e in episodes if e["final_reward"] >= final)
            rows.append(dict(
                reward_mode=mode, seed=seed, episodes=len(episodes), final_best_reward=final,
                episodes_to_final=hit["episode"] + 1,
                seconds_to_final=sum(e["seconds"] for e in episodes[:hit["episode"] + 1]),
                search_seconds=round(time.time() - t0, 1),
                best_accuracy=best["accuracy"], best_sparsity=best["sparsity"]))
            summary = {}
            for row in rows:
                for k in ("final_best_reward", "episodes_to_final", "seconds_to_final"):
                    summary.setdefault(row["reward_mode"], {}).setdefault(k, []).append(row[k])
            write_json(args.out, dict(
                command=command(), machine=machine(),
                target_sparsity=args.sparsities[0],
                summary={m: {k: mean_std(v) for k, v in d.items()} for m, d in summary.items()},
                runs=rows))


def variant_runs(args: argparse.Namespace) -> Iterator[tuple[str, int, ml_collections.ConfigDict, Path]]:
    """(variant, seed, config, workdir) for every seed and every variant: the config
    unchanged ("config") and each ``--variants`` "key=value;key=value", applied as
    ``--config.prune.key=value`` overrides parsed as the CLI parses them."""
    for seed in args.seeds:
        for name, overrides in variant_overrides(args).items():
            c = load_config(args, seed, overrides)
            c.prune.target_sparsity = args.sparsities[0]
            yield name, seed, c, Path(args.workdir) / f"{name.replace(';', '_')}_seed{seed}"


def variant_overrides(args: argparse.Namespace) -> dict[str, list[str]]:
    return {"config": [], **{v: [f"--config.prune.{kv}" for kv in v.split(";")]
                             for v in args.variants}}


def write_variants(args: argparse.Namespace, rows: list[dict], keys: Sequence[str], **extra) -> None:
    """The rows and, per variant, the mean and std of each of ``keys``."""
    table = {}
    for row in rows:
        for k in keys:
            table.setdefault(row["variant"], {}).setdefault(k, []).append(row[k])
    write_json(args.out, dict(
        command=command(), machine=machine(), target_sparsity=args.sparsities[0],
        variants=variant_overrides(args), **extra,
        summary={v: {k: mean_std(x) for k, x in d.items()} for v, d in table.items()},
        runs=rows))


def ablation(args: argparse.Namespace) -> None:
    """The config's search and each variant of it (config.prune fields changed), each
    projected to the target and fine-tuned alike: what every choice of the MDP and agent
    does to the search and to the test accuracy that follows."""
    rows = []
    for name, seed, c, workdir in variant_runs(args):
        r = prune(c, workdir)
        _, final, hit = read_episodes(workdir)
        rows.append(dict(
            variant=name, seed=seed, pruned_test_accuracy=r["pruned_test_accuracy"],
            dense_test_accuracy=r["dense_test_accuracy"], sparsity=r["sparsity"],
            layer_sparsity=r["layer_sparsity"], final_best_reward=final,
            episodes_to_final=hit["episode"] + 1,
            best_accuracy=r["best"]["accuracy"], best_sparsity=r["best"]["sparsity"],
            search_seconds=r["search_seconds"]))
        write_variants(args, rows, ("pruned_test_accuracy", "final_best_reward", "episodes_to_final",
                                    "best_accuracy", "best_sparsity", "search_seconds"),
                       finetune=c.finetune.to_dict())


def oneshot(args: argparse.Namespace) -> None:
    """The reward-set accuracy of what the search returns (searched, projected to the target,
    not fine-tuned) for the config and each variant, beside global magnitude pruning's on
    the same reward set: a screen of allocations that costs a search, not a fine-tuning."""
    rows = []
    for name, seed, c, workdir in variant_runs(args):
        ctx = prune_context(c, workdir)
        found = run_purl(ctx)
        params = ctx.variables["params"]
        reference = baselines.global_magnitude(params, ctx.base_masks, ctx.graph,
                                               c.prune.target_sparsity)
        layers = mask_summary(params, found["masks"], ctx.graph)["layers"]
        rows.append(dict(
            variant=name, seed=seed,
            accuracy=float(ctx.evaluator.evaluate(found["masks"]).accuracy),
            global_accuracy=float(ctx.evaluator.evaluate(reference).accuracy),
            layer_sparsity={k: v["sparsity"] for k, v in layers.items() if v["masked"]},
            best_episode=found["best"]["episode"], best_accuracy=found["best"]["accuracy"],
            best_sparsity=found["best"]["sparsity"]))
        write_variants(args, rows, ("accuracy", "global_accuracy"))


FIGURES = {"compare": compare, "reward-modes": reward_modes, "ablation": ablation,
           "oneshot": oneshot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("figure", choices=tuple(FIGURES))
    parser.add_argument("--config", required=True)
    parser.add_argument("--dense", required=True, help="a `purl-jax train` workdir")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", default=["purl", "global"])
    parser.add_argument("--finetune-epochs", type=int, default=None, help="per round")
    parser.add_argument("--episodes", type=int, default=None, help="PuRL search episodes (default: the config's)")
    parser.add_argument("--finetune-rounds", type=int, default=None,
                        help="gradual pruning rounds (default: the config's)")
    parser.add_argument("--variants", nargs="+", default=[],
                        help='ablation, oneshot: config.prune changes, each "key=value[;key=value]" '
                             '(dqn.x=... for nested fields)')
    args, overrides = parser.parse_known_args()  # and --config.a.b=value overrides, as `purl-jax prune` takes
    args.overrides = overrides
    FIGURES[args.figure](args)


if __name__ == "__main__":
    main()
