"""The ``purl-jax`` command: a thin layer over importable functions.

    purl-jax models                                   the model zoo: parameters, MACs, channel groups
    purl-jax train --config configs/X.py --workdir D  train a dense model (resumes from D)
    purl-jax prune --config configs/X.py --workdir D  prune with the config's algorithm
    purl-jax report --workdir D [--workdir E ...]     print results, redraw plots, compare runs
    purl-jax data {prepare,verify} ...                prepare a tfds dataset, check IDX files

``train`` and ``prune`` take Flax-examples-style overrides: ``--config.train.epochs=2``.

Multi-host (a TPU VM slice, several GPU hosts): every host runs the same command with
``--distributed`` (or ``PURL_JAX_DISTRIBUTED=1``), which calls ``jax.distributed.initialize()``
before anything touches a device; on TPU VMs its arguments are detected, elsewhere they come
from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. Training,
fine-tuning and the evaluator then use the devices of all hosts. Only process 0 prints to
stdout and writes the work directory's files; ``--workdir`` must be one place all hosts
see: ``gs://bucket/run`` (needs ``purl-jax[gcs]``), NFS / Filestore or a gcsfuse mount,
where orbax writes (from every process) the checkpoints that any host resumes from.
See ``scripts/tpu_vm_search.sh``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import jax
import jax.numpy as jnp

from purl_jax import files
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
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}\n{_usage('models')}", file=sys.stderr)
        raise SystemExit(2)
    print(f"{'model':<14}{'input':>14}{'params':>13}{'MMACs':>10}{'layers':>8}{'groups':>8}")
    for r in describe_models():
        print(f"{r['model']:<14}{'x'.join(map(str, r['input'])):>14}{r['params']:>13,}"
              f"{r['macs'] / 1e6:>10.1f}{r['layers']:>8}{r['groups']:>8}")


HELP_FLAGS = ("-h", "--help", "-help")


def _command_lines() -> dict[str, tuple[str, str]]:
    """command -> (usage, description), from the table at the top of this docstring."""
    lines = {}
    for line in __doc__.splitlines():
        if line.startswith("    purl-jax "):
            usage, description = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            lines[usage.split()[1]] = (usage, description)
    return lines


def _usage(command: str) -> str:
    usage = _command_lines()[command][0]
    if command in ("train", "prune"):
        usage += " [--config.a.b=VALUE ...] [--distributed]"
    return f"usage: {usage}"


def command_help(command: str) -> str:
    """``purl-jax COMMAND --help``: its usage and the part of this docstring about it."""
    description = _command_lines()[command][1]
    if command not in ("train", "prune"):
        return f"{_usage(command)}\n\n{description}"
    config = ("configs/lenet5_mnist.py" if command == "train"
              else "configs/lenet5_mnist_purl.py (or *_constrained.py)")
    paragraphs = __doc__.split("\n\n")
    return "\n".join([
        _usage(command), "", description, "",
        "  --config FILE         a configs/*.py file, e.g. " + config,
        "  --workdir DIR         checkpoints, metrics and results; rerun with the same DIR to resume",
        "  --config.a.b=VALUE    override one field of the config, e.g. --config.train.epochs=2",
        "  --distributed         multi-host: call jax.distributed.initialize() first (see below)",
        "", "\n\n".join(p.strip() for p in paragraphs[2:])])


def _wants_help(argv: list[str]) -> bool:
    args = argv[: argv.index("--")] if "--" in argv else argv
    return any(a in HELP_FLAGS for a in args)


def _config_file(argv: list[str]) -> str | None:
    """The file of ``--config FILE[:ARG]`` / ``--config=FILE[:ARG]`` in ``argv`` (the last
    one, as absl), None if not given."""
    path = None
    for i, arg in enumerate(argv):
        match = re.fullmatch(r"--?config(=(.*))?", arg)
        if match:
            value = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
            path = None if value is None else value.split(":", 1)[0]
    return path


def parse_config_flags(argv: list[str]):
    """(config, workdir) from ``--config FILE [--config.a.b=v ...] --workdir DIR``.

    A fresh absl ``FlagValues`` per call, so ``run`` can be called repeatedly in-process.
    ``-h`` / ``--help`` print the command's help and exit 0; usage errors (a missing flag or
    config file, an unknown config field) print one message and exit 2.
    """
    from absl import flags
    from ml_collections import config_flags

    if _wants_help(argv[1:]):
        print(command_help(argv[0]))
        raise SystemExit(0)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "a configs/*.py file", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "folder for checkpoints and metrics", flag_values=values)
    try:
        path = _config_file(argv[1:])
        if path is not None and not os.path.isfile(path):
            raise flags.Error(f"config file {path!r} not found"
                              + (" (it is a folder)" if os.path.isdir(path) else ""))
        with warnings.catch_warnings():  # ml_collections loads the config file with load_module()
            warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
            values(argv)
        if values.config is None or not values.workdir:
            raise flags.Error("--config and --workdir are required")
        values.config.get  # noqa: B018 (a config that failed to load raises its OSError on first use)
    except (AttributeError, KeyError) as e:  # --config.<unknown field>
        from purl_jax.train import unknown_field_message  # the error path only: train imports jax

        _usage_error(argv[0], "unknown config field " + unknown_field_message(e), e)
    except (flags.Error, OSError) as e:
        _usage_error(argv[0], str(e), e)
    return values.config, values.workdir


def _usage_error(command: str, message: str, cause: BaseException | None = None):
    print(f"error: {message}\n{_usage(command)}\n(purl-jax {command} --help for more)", file=sys.stderr)
    raise SystemExit(2) from cause


def _train(argv: list[str]) -> None:
    config, workdir = parse_config_flags(argv)
    from purl_jax.train import train_and_evaluate

    train_and_evaluate(config, workdir)


def _prune(argv: list[str]) -> None:
    config, workdir = parse_config_flags(argv)
    if "prune" not in config:
        _usage_error("prune", f"{_config_file(argv[1:])} has no `prune` section: it trains a dense "
                     "model (purl-jax train); prune with a configs/*_purl.py or *_constrained.py "
                     "config, which extends such a dense recipe")
    from purl_jax.search import prune  # imported late: the training CLI does not need it

    prune(config, workdir)


def _report(argv: list[str]) -> None:
    import argparse

    from purl_jax import report

    parser = argparse.ArgumentParser(prog="purl-jax report", description=report.__doc__.split("\n")[0])
    parser.add_argument("--workdir", action="append", required=True,
                        help="a `purl-jax prune` work directory; repeat to compare several")
    parser.add_argument("--compare", default=None,
                        help="where to write the comparison plot (default: FIRST/compare.png)")
    args = parser.parse_args(argv[1:])
    try:
        for workdir in args.workdir:
            print(report.format_summary(report.write_report(workdir)), end="\n\n")
        if len(args.workdir) > 1:
            out = args.compare or f"{args.workdir[0]}/compare.png"
            print(f"comparison plot: {report.compare(args.workdir, out)}")
    except report.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def _data(argv: list[str]) -> None:
    from purl_jax.data import main

    raise SystemExit(main(argv[1:]))


COMMANDS = {"models": _models, "train": _train, "prune": _prune, "report": _report,
            "data": _data}


DISTRIBUTED_FLAG = "--distributed"
DISTRIBUTED_ENV = "PURL_JAX_DISTRIBUTED"


def maybe_initialize_distributed(argv: list[str], environ=os.environ) -> bool:
    """``jax.distributed.initialize()`` when ``--distributed`` is in ``argv`` (removed from it)
    or ``PURL_JAX_DISTRIBUTED`` is 1/true; True when it ran.

    Must run before the first device use. With ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``
    set they are passed on (with ``JAX_COORDINATOR_ADDRESS``, which jax reads itself);
    otherwise jax detects the cluster (TPU VM, Slurm, Open MPI). Processes other than the
    writer (``files.is_writer``) stop printing to stdout (errors and progress bars still go
    to stderr).
    """
    flagged = DISTRIBUTED_FLAG in argv
    while DISTRIBUTED_FLAG in argv:
        argv.remove(DISTRIBUTED_FLAG)
    if not (flagged or environ.get(DISTRIBUTED_ENV, "").lower() in ("1", "true", "yes")):
        return False
    kwargs = {}
    if environ.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(environ["JAX_NUM_PROCESSES"])
    if environ.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    writer = files.is_writer()
    if not writer:
        sys.stdout = open(os.devnull, "w")
    print(f"jax.distributed: {jax.process_count()} processes, {jax.device_count()} devices "
          f"({jax.local_device_count()} local)", file=sys.stdout if writer else sys.stderr)
    return True


def run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if _wants_help(argv[1:]):  # help starts no jax.distributed
        while DISTRIBUTED_FLAG in argv:
            argv.remove(DISTRIBUTED_FLAG)
        if len(argv) < 2 or argv[1] in HELP_FLAGS:
            print(__doc__.strip())
            raise SystemExit(0)
    else:
        maybe_initialize_distributed(argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"usage: purl-jax {{{','.join(COMMANDS)}}} [flags]\n(purl-jax --help for more)",
              file=sys.stderr)
        raise SystemExit(2)
    if argv[1] == "models" and _wants_help(argv[2:]):
        print(command_help("models"))
        raise SystemExit(0)
    COMMANDS[argv[1]](argv[1:])


if __name__ == "__main__":
    run()
