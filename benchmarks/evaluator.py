"""Benchmark of purl_jax.evaluator against a Python loop and a naive vmap, in one run.

    python benchmarks/evaluator.py                     # LeNet-5 and ResNet-20, writes JSON + BENCHMARKS.md
    python benchmarks/evaluator.py --models lenet5 --ks 1 4 --reps 1 --no-write   # a quick look

For each model and K: one-layer candidates at every layer (a layer-by-layer search step),
the sum of those steps (one episode), and all-layer candidates. Variants are timed
interleaved, the best of ``--reps`` rounds after a compile call (as ``timeit``: on a shared
machine noise only adds time; the spread of the rounds is reported beside it). Useful FLOPs are the work
that has to be done: for one-layer candidates at layer t, K x cost(layers from t on) +
cost(layers before t); for all-layer candidates, K full passes. "ideal" is the loop's time
over the evaluator's if both ran at the loop's FLOP rate, i.e. K full passes over useful
FLOPs. Peak memory is measured, not XLA's compiled memory analysis (which on CPU leaves
out buffers its thunks allocate, e.g. a conv's output): the growth of the process's peak
resident memory (Linux VmHWM, reset through /proc/self/clear_refs) during one call of a
compiled variant whose inputs (params, data, all K candidate masks) are already resident;
"total" adds those inputs, which every variant, the loop included, holds during the call.
``MALLOC_MMAP_THRESHOLD_`` is fixed (the script re-executes itself with it) so that freed
buffers go back to the system and the next variant's peak starts from the same floor.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purl_jax.evaluator import Evaluator, _stats  # noqa: E402
from purl_jax.graph import analyze  # noqa: E402
from purl_jax.masks import MaskPolicy, apply_masks, init_masks, set_path  # noqa: E402
from purl_jax.models import get_model  # noqa: E402
from _common import command, machine, write_json  # noqa: E402

SHAPES = {"lenet5": (28, 28, 1), "resnet20": (32, 32, 3), "vgg11": (32, 32, 3)}


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


def interleaved(variants: dict, reps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Compiles each variant, then times them in alternating rounds: the best round in seconds,
    and each variant's spread ((slowest - fastest) / median), the timing noise of this run."""
    for fn in variants.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            times[name] += timed(fn, 1)
    best = {name: min(t) for name, t in times.items()}
    return best, {name: (max(t) - min(t)) / statistics.median(t) for name, t in times.items()}


def matmul_ceiling(reps: int) -> float:
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / interleaved({"mm": lambda: f(a, a)}, max(reps, 5))[0]["mm"] / 1e9


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def peak_mib(fn) -> float:
    """MiB the peak resident memory grows by during one call of ``fn`` (compiled already)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    jax.block_until_ready(fn())
    return (_status_kib("VmHWM") - before) / 1024


def setup(name: str, n: int):
    shape = SHAPES[name]
    model = get_model(name, num_classes=10)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *shape)))
    graph = analyze(model, variables, shape)
    images = np.asarray(jax.random.normal(jax.random.key(1), (n, *shape)))
    labels = np.arange(n) % 10
    masks = init_masks(variables["params"], graph, MaskPolicy(exclude_first=False, exclude_last=False))
    return model, variables, graph, images, labels, masks


def baselines(model):
    """The loop's jitted single evaluation and the naive vmap, params and data as arguments."""

    def single(variables, masks, x, y):
        params = apply_masks(variables["params"], masks)
        logits = model.apply({**variables, "params": params}, x, train=False)
        return _stats(logits, y, jnp.ones(y.shape, jnp.float32))

    return jax.jit(single), jax.jit(jax.vmap(single, in_axes=(None, 0, None, None)))


def bench_model(name: str, n: int, ks, reps: int, layer_ks, naive_max_k: int, control_max_k: int = 0) -> dict:
    model, variables, graph, images, labels, masks = setup(name, n)
    ev = Evaluator(model, variables, images, labels, graph=graph)
    single, naive = baselines(model)
    x, y = jnp.asarray(images), jnp.asarray(labels, jnp.int32)
    flops = [2 * layer.macs * n for layer in graph.layers]
    full = sum(flops)
    out = {"images": n, "full_pass_gflop": full / 1e9, "layers": [], "stacked": [], "episode": []}
    rng = np.random.default_rng(0)
    for k in ks:
        step_rows = []
        for t, layer in enumerate(graph.layers if k in layer_ks else ()):
            lm = jnp.asarray(rng.random((k, *layer.kernel_shape)) < 0.7)
            cands = [set_path(masks, layer.path, lm[i]) for i in range(k)]
            useful = k * sum(flops[t:]) + sum(flops[:t])
            variants = {
                "evaluator": lambda: ev.evaluate_layer(masks, layer.name, lm),
                "loop": lambda: [single(variables, c, x, y) for c in cands],
            }
            if k <= control_max_k:
                variants["loop_again"] = variants["loop"]
            times, spread = interleaved(variants, reps)
            mem = {v: peak_mib(fn) for v, fn in variants.items() if v != "loop_again"}
            inputs = mib(variables, x, y, masks, lm)
            step_rows.append(row(layer.name, k, useful, k * full, times, mem, inputs, spread))
            step_rows[-1]["strategy"] = plan(ev, layer.name, k)
            print(json.dumps(step_rows[-1]), flush=True)
        out["layers"] += step_rows
        if step_rows:
            ep = {v: sum(r["seconds"][v] for r in step_rows) for v in step_rows[0]["seconds"]}
            useful = sum(r["useful_gflop"] for r in step_rows) * 1e9
            out["episode"].append(row("episode", k, useful, k * full * len(step_rows), ep, {}))
            print(json.dumps(out["episode"][-1]), flush=True)
        stacked = jax.tree.map(lambda m: jnp.asarray(rng.random((k, *m.shape)) < 0.7), masks)
        cands = [jax.tree.map(lambda m: m[i], stacked) for i in range(k)]
        variants = {"evaluator": lambda: ev.evaluate_stacked(stacked),
                    "loop": lambda: [single(variables, c, x, y) for c in cands]}
        if k <= naive_max_k:
            variants["naive_vmap"] = lambda: naive(variables, stacked, x, y)
        if k <= control_max_k:
            variants["loop_again"] = variants["loop"]
        times, spread = interleaved(variants, reps)
        mem = {v: peak_mib(fn) for v, fn in variants.items() if v != "loop_again"}
        inputs = mib(variables, x, y, stacked)
        out["stacked"].append(row("all layers", k, k * full, k * full, times, mem, inputs, spread))
        out["stacked"][-1]["strategy"] = plan(ev, "all layers", k)
        print(json.dumps(out["stacked"][-1]), flush=True)
    return out


def plan(ev: Evaluator, name: str, k: int) -> str:
    """The plan ``auto`` measured fastest, or "one plan" where there was nothing to measure."""
    choice = ev.strategy_choices.get((name, k))
    return "{}, {} img".format(*choice) if choice else "one plan"


def mib(*trees) -> float:
    return sum(a.nbytes for a in jax.tree.leaves(trees)) / 2**20


def row(what: str, k: int, useful: float, dense: float, seconds: dict, mem: dict, inputs: float = 0.0,
        spread: dict | None = None) -> dict:
    loop = seconds["loop"]
    return {
        "what": what, "k": k, "useful_gflop": useful / 1e9, "ideal_speedup": dense / useful,
        "seconds": seconds, "spread": spread or {},
        "candidates_per_s": {v: k / s for v, s in seconds.items()},
        "gflop_per_s": {v: useful / s / 1e9 for v, s in seconds.items()},
        "speedup_vs_loop": {v: loop / s for v, s in seconds.items()},
        "fraction_of_ideal": loop / seconds["evaluator"] / (dense / useful),
        "peak_mib": mem,
        "inputs_mib": inputs,
        "total_vs_loop": {v: (inputs + m) / (inputs + mem["loop"]) for v, m in mem.items()},
    }


def markdown(results: dict, command: str) -> str:
    lines = [
        "## Evaluator", "",
        f"Command: `{command}`  ",
        f"Machine: {results['machine']}; f32 matmul ceiling {results['matmul_gflops']:.0f} GFLOP/s; "
        "1-minute load average {:.1f} at the start, {:.1f} at the end. ".format(*results["load"])
        + "Variants were timed interleaved in one run (best of the rounds); spread = (slowest - fastest) / median "
        "of the loop's and the evaluator's rounds, the larger of the two: the timing noise of that row, "
        "against which a speedup near 1 is to be read. loop A/A (rows with K <= --control-max-k): the loop "
        "timed a second time as if it were another variant, loop / loop again: what a ratio between two "
        "identical programs looks like in this run.", "",
        "speedup = loop time / variant time; ideal = K full passes / useful FLOPs; "
        "% ideal = evaluator speedup / ideal; GFLOP/s counts useful FLOPs; "
        "working = growth of the peak resident memory during one call, inputs already resident (see the "
        "script's docstring); inputs = params, data and the K candidate masks, held by every variant; "
        "total eval / loop = (inputs + working) of the evaluator over the loop's; one-layer and all-layer rows "
        "name the plan `auto` measured fastest (strategy, images per micro-batch).", "",
    ]
    for model, res in results["models"].items():
        lines += [f"### {model} ({res['images']} images, {res['full_pass_gflop']:.2f} GFLOP per full pass)", "",
                  "| case | K | cand/s eval | cand/s loop | cand/s naive vmap | GFLOP/s eval | GFLOP/s loop "
                  "| speedup | loop A/A | spread | ideal | % ideal | working MiB eval / loop / naive | inputs MiB "
                  "| total eval / loop |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["episode"] + res["stacked"] + res["layers"]:
            c, g, p = r["candidates_per_s"], r["gflop_per_s"], r["peak_mib"]
            lines.append(
                f"| {r['what']}{' (' + r['strategy'] + ')' if 'strategy' in r else ''} | {r['k']} | {c['evaluator']:.1f} | {c['loop']:.1f} | "
                f"{c.get('naive_vmap', float('nan')):.1f} | {g['evaluator']:.0f} | {g['loop']:.0f} | "
                f"{r['speedup_vs_loop']['evaluator']:.2f} | "
                + (f"{r['speedup_vs_loop']['loop_again']:.2f} | " if "loop_again" in r["seconds"] else "- | ")
                + (f"{100 * max(r['spread'].get(v, 0) for v in ('evaluator', 'loop')):.0f}%" if r.get("spread") else "-")
                + f" | {r['ideal_speedup']:.2f} | "
                f"{100 * r['fraction_of_ideal']:.0f}% | "
                + " / ".join(f"{p[v]:.0f}" if v in p else "-" for v in ("evaluator", "loop", "naive_vmap"))
                + (f" | {r['inputs_mib']:.0f} | {r['total_vs_loop']['evaluator']:.2f}x |" if p else " | - | - |"))
        lines.append("")
    lines += results.get("notes", [])
    return "\n".join(lines) + "\n"


GENERATED_END = "<!-- evaluator.py writes the lines above; the notes below are kept -->\n"


def write_section(path: Path, section: str) -> None:
    """Replaces (or appends) the generated part of the ``## Evaluator`` section: up to
    ``GENERATED_END``, or to the next section. Other sections and the notes stay."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find("## Evaluator")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + GENERATED_END
    else:
        end = text.find(GENERATED_END, start)
        if end >= 0:
            end += len(GENERATED_END)
        else:
            end = text.find("\n## ", start + 1)
            end = len(text) if end < 0 else end + 1
        text = text[:start] + section + GENERATED_END + text[end:]
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet20"])
    p.add_argument("--images", nargs="+", type=int, default=[1024, 128], help="per model")
    p.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--layer-ks", nargs="+", type=int, default=None,
                   help="per model, the largest K for one-layer candidates (default: all)")
    p.add_argument("--naive-max-k", type=int, default=16, help="skip the naive vmap above this K (memory)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--control-max-k", type=int, default=0,
                   help="time the loop twice (an A/A control of the timing noise) for K up to this")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--out", default=None, help="write the JSON here and leave BENCHMARKS.md alone")
    args = p.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # see the docstring: peak memory
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    results = {
        "machine": machine(),
        "matmul_gflops": matmul_ceiling(args.reps),
        "load": [os.getloadavg()[0]],
        "models": {},
        "notes": [],
    }
    print("matmul GFLOP/s", results["matmul_gflops"], flush=True)
    for i, name in enumerate(args.models):
        max_k = args.layer_ks[i] if args.layer_ks else max(args.ks)
        layer_ks = [k for k in args.ks if k <= max_k]
        if max_k < max(args.ks):
            results["notes"].append(f"- {name}: one-layer candidates measured for K <= {max_k} only "
                                    "(the loop baseline at larger K takes too long on this shared CPU).")
        results["models"][name] = bench_model(name, args.images[i], args.ks, args.reps, layer_ks,
                                              args.naive_max_k, args.control_max_k)
    results["load"].append(os.getloadavg()[0])
    results["notes"].append(f"- naive vmap measured for K <= {args.naive_max_k} only (its memory grows fast).")
    cmd = command()
    print(markdown(results, cmd))
    if args.out:
        write_json(args.out, {**results, "command": cmd})
    elif not args.no_write:
        write_json(ROOT / "benchmarks" / "results" / f"evaluator_{jax.devices()[0].platform}.json", results)
        write_section(ROOT / "BENCHMARKS.md", markdown(results, cmd))


if __name__ == "__main__":
    main()
