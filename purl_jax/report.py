"""Reports of a search's work directory: a JSON summary, PNG plots, TensorBoard events.

Reads what ``purl-jax prune`` leaves behind (``result.json``, the search's per-episode or
per-iteration ``*.jsonl`` logs, ``curves.json`` with the baselines) and writes:

* ``summary.json``: config, seed, library versions, dense and pruned accuracy, per-layer
  sparsity, parameters, MACs, budget and cost, wall time;
* ``layer_sparsity.png``, ``accuracy_vs_sparsity.png`` (the search's episodes, its result
  and the baselines on the same axes), ``search_curves.png`` (reward, epsilon or nu,
  cost against budget) and, after a constrained budget sweep, ``front.png``;
* ``tensorboard/``: the same scalars as TensorBoard event files (tensorboardX, no TensorFlow).

``purl-jax report --workdir A [--workdir B ...]`` prints the table and regenerates all of it;
with several work directories it also draws them into one comparison plot.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from typing import Any, Sequence

import matplotlib
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from purl_jax import files  # noqa: E402

_VERSIONS = ("purl-jax", "jax", "jaxlib", "flax", "optax", "rlax", "orbax-checkpoint")
# Scalars worth a curve, in the order they are drawn; each log has some of them.
_CURVES = ("final_reward", "best_final_reward", "return", "reward", "accuracy", "sparsity",
           "epsilon", "nu", "cost", "loss")


class ReportError(ValueError):
    """A work directory without the files a report needs."""


def _read_jsonl(path: epath.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search_log(workdir: epath.Path) -> list[dict]:
    """The search's per-episode (PuRL) or per-iteration (constrained) records."""
    for name in ("search/episodes.jsonl", "search/iterations.jsonl", "search/metrics.jsonl"):
        if (workdir / name).exists():
            return _read_jsonl(workdir / name)
    return []


def versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_result(workdir: str | os.PathLike) -> dict:
    path = files.path(workdir) / "result.json"
    if not path.exists():
        raise ReportError(f"{path} not found: run `purl-jax prune --config CONFIG --workdir {workdir}` "
                          "first (CONFIG: a configs/*_purl.py or *_constrained.py file)")
    return json.loads(path.read_text())


def build_summary(workdir: str | os.PathLike) -> dict[str, Any]:
    workdir = files.path(workdir)
    result = load_result(workdir)
    config_path = workdir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    keys = ("model", "dataset", "algorithm", "target_sparsity", "dense_test_accuracy",
            "pruned_test_accuracy", "sparsity", "layer_sparsity", "params", "kept_params",
            "param_reduction", "macs", "kept_macs", "flops_kept", "flop_reduction",
            "budget", "cost", "cost_name", "search_seconds", "seconds")
    summary = {k: result[k] for k in keys if k in result}
    front_path = workdir / "front.json"  # a constrained budget sweep
    if front_path.exists():
        summary["front"] = [dict(method=r.get("method", "constrained"), budget=r["budget"], cost=r["cost"],
                                 cost_name=r.get("cost_name", "cost"), test_accuracy=r["test_accuracy"])
                            for r in json.loads(front_path.read_text())]  # older sweeps: no method
    summary.update(config=config, seed=(config or {}).get("seed"), versions=versions(),
                   workdir=str(workdir))
    return summary


def format_summary(s: dict) -> str:
    rows = [
        ("work directory", s["workdir"]),
        ("model / data", f"{s.get('model')} / {s.get('dataset')}"),
        ("algorithm", s.get("algorithm")),
        ("test accuracy", f"dense {s['dense_test_accuracy']:.4f} -> pruned "
                          f"{s['pruned_test_accuracy']:.4f}"),
        ("sparsity (masked)", f"{s['sparsity']:.4f}"),
        ("parameters", f"{s['params']:,} -> {s['kept_params']:,} "
                       f"({s['param_reduction']:.1f}x fewer)"),
        ("MACs", f"{s['macs']:,} -> {s['kept_macs']:,} ({s['flop_reduction']:.1f}x fewer)"),
    ]
    if "budget" in s:
        rows.append((f"{s.get('cost_name', 'cost')} / budget", f"{s['cost']:.4f} / {s['budget']:.4f}"))
    rows.append(("wall time", f"{s.get('seconds', float('nan')):.0f} s "
                              f"(search {s.get('search_seconds', float('nan')):.0f} s)"))
    for i, r in enumerate(s.get("front", [])):
        rows.append(("front" if i == 0 else "", f"{r['method']:<12} budget {r['budget']:.4f}  "
                     f"cost {r['cost']:.4f}  test accuracy {r['test_accuracy']:.4f}"))
    return "\n".join(f"{a:<20} {b}" for a, b in rows)


# -- plots --------------------------------------------------------------------------------

def plot_layer_sparsity(result: dict, path: epath.Path) -> epath.Path:
    layers = result["layer_sparsity"]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(layers) + 2), 3.5))
    ax.bar(range(len(layers)), [100 * v for v in layers.values()], color="#4c72b0")
    ax.set_xticks(range(len(layers)), list(layers), rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("pruned weights (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result.get('model')}: {100 * result['sparsity']:.1f}% sparse "
                 f"({result.get('algorithm')})")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path


def plot_accuracy_vs_sparsity(results: Sequence[tuple[str, dict, list[dict], dict]],
                              path: epath.Path) -> epath.Path:
    """Episodes (faint), baselines (lines) and each run's fine-tuned result (star)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn_baselines = False
    for label, result, log, curves in results:
        points = [(r["sparsity"], r["accuracy"]) for r in log if "sparsity" in r and "accuracy" in r]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=8, alpha=0.35, label=f"{label}: search episodes (reward set)")
        if curves and not drawn_baselines:
            for name, curve in curves.get("baselines", {}).items():
                ax.plot(curve["sparsity"], curve["accuracy"], marker=".", label=f"{name} (reward set)")
            drawn_baselines = True
        ax.scatter([result["sparsity"]], [result["pruned_test_accuracy"]], marker="*", s=160,
                   zorder=5, label=f"{label}: fine-tuned (test)")
    ax.set_xlabel("sparsity of the masked layers")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path


def plot_front(rows: Sequence[dict], path: epath.Path, key: str = "test_accuracy",
               dense: float | None = None) -> epath.Path:
    """A constrained budget sweep: accuracy against cost, one line per method (its baselines
    too), the budgets as grey verticals, the dense model's accuracy dashed when given."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    if dense is not None:
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
    for method, marker in zip(dict.fromkeys(r["method"] for r in rows), "osD^v<>"):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["cost"])
        ax.plot([r["cost"] for r in mine], [r[key] for r in mine], marker=marker, label=method)
    for b in {r["budget"] for r in rows}:
        ax.axvline(b, color="0.8", lw=0.8, zorder=0)
    ax.set(xlabel=f"{rows[0].get('cost_name', 'cost')} (relative to dense)",
           ylabel=key.replace("_", " "), title="accuracy vs cost")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.save_figure(fig, files.path(path), dpi=100)
    return path


def plot_search_curves(log: list[dict], path: epath.Path,
                       budget: float | None = None) -> epath.Path | None:
    keys = [k for k in _CURVES if any(isinstance(r.get(k), (int, float)) for r in log)]
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.6 * len(keys) + 0.6), sharex=True)
    axes = [axes] if len(keys) == 1 else axes
    x_key = "episode" if "episode" in log[0] else "iteration"
    for ax, key in zip(axes, keys):
        pts = [(r.get(x_key, i), r[key]) for i, r in enumerate(log)
               if isinstance(r.get(key), (int, float))]
        ax.plot(*zip(*pts), lw=1.2)
        if key == "cost" and budget is not None:
            ax.axhline(budget, color="red", ls="--", lw=1, label="budget")
            ax.legend(fontsize=7)
        ax.set_ylabel(key.replace("_", " "), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(x_key)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    return path


def write_tensorboard(workdir: epath.Path, log: list[dict]) -> epath.Path:
    """Search scalars (and the training logs, if any) as TensorBoard event files."""
    from tensorboardX import SummaryWriter

    out = workdir / "tensorboard"
    with SummaryWriter(str(out / "search")) as writer:
        for i, record in enumerate(log):
            step = record.get("episode", record.get("iteration", i))
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"search/{key}", value, step)
    for phase in ("dense", "finetune"):
        metrics = workdir / phase / "metrics.jsonl"
        if metrics.exists():
            with SummaryWriter(str(out / phase)) as writer:
                for i, record in enumerate(_read_jsonl(metrics)):
                    step = record.get("step", i)
                    for key, value in record.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            writer.add_scalar(f"{phase}/{key}", value, step)
    return out


def write_report(workdir: str | os.PathLike) -> dict[str, Any]:
    """Writes summary.json, the plots and the TensorBoard events of one work directory."""
    workdir = files.path(workdir)
    summary = build_summary(workdir)
    result = load_result(workdir)
    log = search_log(workdir)
    curves_path = workdir / "curves.json"
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    files.write_text(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    plots = [plot_layer_sparsity(result, workdir / "layer_sparsity.png"),
             plot_accuracy_vs_sparsity([(result.get("algorithm", "run"), result, log, curves)],
                                       workdir / "accuracy_vs_sparsity.png")]
    curve = plot_search_curves(log, workdir / "search_curves.png", result.get("budget"))
    plots += [curve] if curve else []
    if "front" in summary:
        plots.append(plot_front(summary["front"], workdir / "front.png", dense=result.get("dense_test_accuracy")))
    write_tensorboard(workdir, log)
    summary["files"] = [str(f) for f in plots]
    return summary


def compare(workdirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> epath.Path:
    """One accuracy-vs-sparsity plot of several work directories."""
    runs = []
    for w in workdirs:
        w = files.path(w)
        curves = json.loads((w / "curves.json").read_text()) if (w / "curves.json").exists() else {}
        runs.append((w.name, load_result(w), search_log(w), curves))
    return plot_accuracy_vs_sparsity(runs, files.path(out))
