"""The evaluator's first call per layer ("auto" choosing a plan): compile, then time, against
a compiling run plus timed runs, in one run.

    python benchmarks/auto_strategy.py --out benchmarks/results/auto_strategy_cpu.json

``Evaluator(strategy="auto")`` measures its plans on the first call for each layer and K.
Until session 12 every plan ran once to compile and then ``MEASURE_RUNS`` (2) times to be
timed: 3 evaluations per plan, 6 for a layer with two plans, when the search needs one. With
``calibration_images`` (BatchNorm re-estimated per candidate) on ResNet-20, one evaluation of
K = 23 candidates is seconds of CPU, so a search's first episode cost several later ones.
Now each plan is compiled without running, then timed once when every plan takes at least
``LONG_CALL_SECONDS``. The old measurement is inlined below as the baseline. For each layer
and variant: ``jax.clear_caches()``, a fresh evaluator, the first call (what a search's
first episode pays), then a second call (the kept choice, as every later episode).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purl_jax import evaluator as E  # noqa: E402
from purl_jax.graph import analyze  # noqa: E402
from purl_jax.masks import init_masks, masked_layers  # noqa: E402
from purl_jax.models import get_model  # noqa: E402
from _common import command, machine, write_json  # noqa: E402


def compiling_run_fastest(runs, compile_plan):
    """``evaluator._fastest`` before session 12: one compiling run, then 2 timed runs, per plan."""
    del compile_plan
    scores = {name: run() for name, run in runs.items()}
    best = {name: float("inf") for name in runs}
    for _ in range(2):
        for name, run in runs.items():
            start = time.perf_counter()
            scores[name] = jax.block_until_ready(run())
            best[name] = min(best[name], time.perf_counter() - start)
    choice = min(best, key=best.get)
    return scores[choice], choice


def first_and_second(make, masks, layer, candidates) -> tuple[float, float, tuple]:
    jax.clear_caches()
    ev = make()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(ev.evaluate_layer(masks, layer, candidates))
        times.append(time.perf_counter() - start)
    return times[0], times[1], ev.strategy_choices.get((layer, candidates.shape[0]))  # None: one plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=500, help="reward-set images")
    parser.add_argument("--calibration", type=int, default=128, help="BatchNorm calibration images")
    parser.add_argument("--k", type=int, default=23, help="candidates per call (PuRL's 23 actions)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 8, 17],
                        help="indices into the masked layers")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shape = (28, 28, 1)  # Fashion-MNIST, as configs/resnet20_fmnist_purl.py
    model = get_model(args.model, num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    graph = analyze(model, variables, shape)
    masks = init_masks(variables["params"], graph)
    layers = [layer.name for layer in masked_layers(masks, graph)]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.images, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, args.images)
    calibration = rng.normal(size=(args.calibration, *shape)).astype(np.float32)
    make = lambda: E.Evaluator(model, variables, images, labels, graph=graph, calibration_images=calibration)
    current = E._fastest
    rows = []
    for i in args.layers:
        name = layers[i]
        kernel = graph.layer(name).kernel_shape
        candidates = jnp.asarray(rng.random((args.k, *kernel)) < 0.5)
        row = dict(model=args.model, layer=name, k=args.k, images=args.images, calibration=args.calibration)
        for variant, fn in (("compiling_run", compiling_run_fastest), ("compile_then_time", current)):
            E._fastest = fn
            try:
                first, second, choice = first_and_second(make, masks, name, candidates)
            finally:
                E._fastest = current
            row.update({f"{variant}_first_s": round(first, 2), f"{variant}_second_s": round(second, 2),
                        f"{variant}_choice": choice and list(choice)})
        row["first_call_speedup"] = round(row["compiling_run_first_s"] / row["compile_then_time_first_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = dict(machine=machine(), command=command(), rows=rows)
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
