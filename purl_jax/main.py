"""The ``purl-jax`` command: a thin layer over importable functions.

    purl-jax models                                   the model zoo: parameters, MACs, channel groups
    purl-jax train --config configs/X.py --workdir D  train a dense model (resumes from D)
    purl-jax prune --config configs/X.py --workdir D  prune with the config's algorithm

``train`` and ``prune`` take Flax-examples-style overrides: ``--config.train.epochs=2``.
"""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp

from purl_jax.graph import analyze
from purl_jax.models import available_models, get_model

_ZOO_INPUTS = {"lenet_300_100": (28, 28, 1), "lenet5": (28, 28, 1)}


def describe_models() -> list[dict]:
    """Parameters, MACs, layers and channel groups of every registered model."""
    rows = []
    for name in available_models():
        shape = _ZOO_INPUTS.get(name, (224, 224, 3) if name in (
            "resnet18", "resnet34", "resnet50", "mobilenet_v2") else (32, 32, 3))
        classes = 1000 if shape[0] == 224 else 10
        model = get_model(name, num_classes=classes)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
        graph = analyze(model, variables, shape)
        params = sum(x.size for x in jax.tree.leaves(variables["params"]))
        rows.append(dict(model=name, input=shape, classes=classes, params=params,
                         macs=graph.dense_macs, layers=len(graph.layers),
                         groups=len(graph.groups)))
    return rows


def _models(argv: list[str]) -> None:
    print(f"{'model':<14}{'input':>14}{'params':>13}{'MMACs':>10}{'layers':>8}{'groups':>8}")
    for r in describe_models():
        print(f"{r['model']:<14}{'x'.join(map(str, r['input'])):>14}{r['params']:>13,}"
              f"{r['macs'] / 1e6:>10.1f}{r['layers']:>8}{r['groups']:>8}")


def parse_config_flags(argv: list[str]):
    """(config, workdir) from ``--config FILE [--config.a.b=v ...] --workdir DIR``.

    A fresh absl ``FlagValues`` per call, so ``run`` can be called repeatedly in-process.
    """
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "a configs/*.py file", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "folder for checkpoints and metrics", flag_values=values)
    try:
        with warnings.catch_warnings():  # ml_collections loads the config file with load_module()
            warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
            values(argv)
        if values.config is None or not values.workdir:
            raise flags.Error("--config and --workdir are required")
    except (flags.Error, AttributeError) as e:  # AttributeError: --config.<unknown field>
        print(f"error: {e}\nusage: purl-jax {argv[0]} --config configs/X.py --workdir DIR "
              "[--config.train.epochs=N ...]", file=sys.stderr)
        raise SystemExit(2) from e
    return values.config, values.workdir


def _train(argv: list[str]) -> None:
    from purl_jax.train import train_and_evaluate

    train_and_evaluate(*parse_config_flags(argv))


def _prune(argv: list[str]) -> None:
    from purl_jax.search import prune  # imported late: the training CLI does not need it

    prune(*parse_config_flags(argv))


COMMANDS = {"models": _models, "train": _train, "prune": _prune}


def run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"usage: purl-jax {{{','.join(COMMANDS)}}} [flags]", file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[argv[1]](argv[1:])


if __name__ == "__main__":
    run()
