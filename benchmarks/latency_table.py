"""Does a layer-latency table reproduce? Paired against unpaired timing, steady and drifting.

    python benchmarks/latency_table.py --dense runs/resnet20_fmnist_dense \
        --masks runs/fmnist/latency/results.json --rounds 3 \
        --out benchmarks/results/latency_table_resnet20_cpu.json

``constrained.layer_latency_cost`` times each layer's dense shape once, then every new
pruned shape as a search meets it, minutes later. Unpaired, a change of machine speed in
between shifts every cost; paired (the default), each new shape is timed alternately with
its layer's dense shape and stored as their ratio. For each round and each method this
builds a fresh table twice and costs the same masks (``--masks``: the constrained rows'
``fractions`` and the uniform L1 rows' ``ratio`` of a ``benchmarks/constrained_channels.py``
results file):

* steady: nothing else started by the script;
* drift: a BLAS matrix-product loop (numpy, all cores) runs while the table times its
  dense shapes and is stopped before the masks' shapes are timed, as when a search's table
  is filled after the machine got quieter.

Reports every cost, each method's spread over the steady rounds, and the drift rounds'
error against the steady mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from purl_jax import constrained as c, train
from purl_jax.masks import MaskPolicy, channel_masks_to_masks, l1_channel_masks, prunable_groups
from purl_jax.search import prune_context
from _common import command, machine, read_runs, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "resnet20_fmnist_latency_constrained.py"
BURNER = "import numpy as np\na = np.random.rand(1500, 1500)\nwhile True:\n    a @ a\n"


def load_masks(path: Path, params, graph, problem, policy: MaskPolicy) -> dict:
    """``{label: masks}`` for the rows of a constrained_channels.py results file."""
    out = {}
    ones = {g.name: jnp.ones(g.size, bool) for g in prunable_groups(graph, policy)}
    for row in read_runs(path):
        label = f"{row['method']} s{row['seed']}"
        if "fractions" in row:
            f = jnp.asarray([row["fractions"][n] for n in problem.names], jnp.float32)
            out[label] = problem.build(f, jnp.zeros((problem.num_steps, problem.action_dim)))
        else:
            out[label] = channel_masks_to_masks(params, graph, l1_channel_masks(
                params, graph, ones, float(row["ratio"])))
    return out


def measure(graph, masks: dict, paired: bool, drift: bool, batch: int, levels: int) -> dict:
    burner = subprocess.Popen([sys.executable, "-c", BURNER]) if drift else None
    try:
        if burner is not None:
            time.sleep(2.0)  # let it reach full speed
        t0 = time.time()
        cost = c.layer_latency_cost(graph, batch_size=batch, levels=levels, paired=paired)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
            time.sleep(2.0)
    costs = {label: float(cost(m)) for label, m in masks.items()}
    return dict(method="paired" if paired else "unpaired", condition="drift" if drift else "steady",
                costs=costs, seconds=round(time.time() - t0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--dense", required=True)
    ap.add_argument("--masks", required=True, help="a constrained_channels.py results.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency_batch", type=int, default=128)
    ap.add_argument("--latency_levels", type=int, default=8)
    ap.add_argument("--out", required=True)
    args, overrides = ap.parse_known_args()

    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    config = train.load_config(args.config, overrides)
    config.dense_checkpoint = args.dense
    ctx = prune_context(config, Path("/tmp/latency_table_ctx"))
    params, graph = ctx.variables["params"], ctx.graph
    policy = MaskPolicy(**dict(config.mask_policy))
    problem = c.make_problem(params, graph, None, action="channel_l1", policy=policy)
    masks = load_masks(Path(args.masks), params, graph, problem, policy)
    rows = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for paired in order:
            for drift in (False, True):
                row = dict(round=r, **measure(graph, masks, paired, drift, args.latency_batch,
                                              args.latency_levels))
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for method in ("paired", "unpaired"):
        steady = np.array([[row["costs"][k] for k in masks] for row in rows
                           if row["method"] == method and row["condition"] == "steady"])
        drift = np.array([[row["costs"][k] for k in masks] for row in rows
                          if row["method"] == method and row["condition"] == "drift"])
        summary[method] = dict(
            steady_mean={k: float(v) for k, v in zip(masks, steady.mean(0))},
            steady_spread={k: float(v) for k, v in zip(masks, steady.max(0) - steady.min(0))},
            drift_error_mean_abs=float(np.abs(drift - steady.mean(0)).mean()),
            steady_spread_mean=float((steady.max(0) - steady.min(0)).mean()))
    write_json(args.out, dict(command=command(), machine=f"{machine()}, load average at start {load}",
                              summary=summary, rows=rows))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
