"""Training checkpoints with orbax: a state pytree plus JSON metadata, per step.

A checkpoint folder holds ``state`` (params, other model collections, optimizer state,
step, RNG key data, masks) and ``meta`` (the config and the metrics history as JSON).
Masks have ``None`` leaves, which orbax cannot store, so they are saved as a flat dict of
the present leaves keyed by their "/"-joined path and rebuilt against the params.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from purl_jax import files
from purl_jax.masks import Masks, _flatten, get_path, set_path


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the model it is loaded into."""


def flat_masks(masks: Masks) -> dict[str, Any]:
    """``{"a/b/kernel": bool array}`` for the present (non-None) mask leaves."""
    return {"/".join(path): m for path, m in _flatten(masks, keep_none=True) if m is not None}


def unflat_masks(flat: dict[str, Any], params: Any) -> Masks:
    """The inverse of ``flat_masks``: a mask tree like ``params`` with None elsewhere."""
    masks = jax.tree.map(lambda _: None, params)
    for key, m in flat.items():
        path = tuple(key.split("/"))
        try:
            get_path(params, path)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpointed mask {key} has no matching parameter") from e
        masks = set_path(masks, path, m)
    return masks


def manager(directory: str | os.PathLike, *, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager keeping the two newest checkpoints under ``directory`` (local, made
    absolute, or ``gs://``). In a multi-process run every process must call its saves.
    ``read_only`` opens a finished run (a dense checkpoint) without writing to it."""
    if read_only:  # the options orbax would otherwise reset, each with a warning
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, save_interval_steps=0, create=False, read_only=True)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    with _quiet("Given directory is read only"):
        return ocp.CheckpointManager(
            files.path(directory), options=options, item_names=("state", "meta")
        )


@contextlib.contextmanager
def _quiet(prefix: str):
    """Drops absl log records starting with ``prefix`` (orbax's warning on every
    read-only open, which a user loading a dense checkpoint can do nothing about)."""
    drop = lambda record: not str(record.msg).startswith(prefix)
    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def restore(mngr: ocp.CheckpointManager, target: Any) -> tuple[Any, dict] | None:
    """The latest (state, meta), restored into the structure, dtypes and shardings of
    ``target`` (so optax states keep their types); None when there is no checkpoint."""
    step = mngr.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"the checkpoint at step {step} in {mngr.directory} does not fit this run (another "
            f"model, optimizer or set of masked layers?): use another workdir. Cause: {e}"
        ) from e
    return out["state"], out["meta"]


def restore_variables(directory: str | os.PathLike, reference: dict) -> tuple[dict, dict]:
    """Model variables (params and other collections) of the latest checkpoint in
    ``directory``, checked leaf by leaf against ``reference`` (e.g. a fresh ``model.init``).

    Raises ``CheckpointError`` when there is no checkpoint or it was made for another model.
    """
    directory = files.path(directory)
    where = ("config.dense_checkpoint must be a `purl-jax train --workdir` folder or a prune "
             "run's dense/ subfolder")
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint folder {directory}: {where}; the checkpoints are "
                              "read from its checkpoints/train")
    with manager(directory, read_only=True) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {directory}: {where} whose training has saved "
                                  "a checkpoint in its checkpoints/train")
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    state = out["state"]
    variables = {"params": state["params"], **state["model_state"]}
    check_matches(variables, reference, where=str(directory))
    return jax.tree.map(np.asarray, variables), out["meta"]


def check_matches(variables: dict, reference: dict, *, where: str) -> None:
    """Raises ``CheckpointError`` listing missing, unexpected and mis-shaped leaves."""
    got = {"/".join(p): np.shape(x) for p, x in _flatten(variables)}
    want = {"/".join(p): tuple(np.shape(x)) for p, x in _flatten(reference)}
    problems = [f"missing {k} {want[k]}" for k in want if k not in got]
    problems += [f"unexpected {k} {got[k]}" for k in got if k not in want]
    problems += [f"{k} has shape {got[k]}, the model needs {want[k]}"
                 for k in want if k in got and tuple(got[k]) != want[k]]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(
            f"checkpoint {where} does not match the model ({len(problems)} differences: {shown}). "
            "Was it trained with another model, model_kwargs, dataset or pad_to?"
        )
