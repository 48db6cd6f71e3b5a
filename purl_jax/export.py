"""Compact export: a channel-pruned model rebuilt smaller, so fewer FLOPs mean less time.

Masks alone make nothing faster. ``compact`` slices every parameter and batch statistic
along the channel axes the graph maps (kernels in and out, biases, batch norm), and
rebuilds the same model family with the kept widths, so the result is an ordinary, dense,
smaller Flax model whose logits equal the masked model's.

For unstructured masks, ``sparse_storage`` says what a sparse format would save, and
``save_export`` / ``load_export`` keep the masks beside the params.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from purl_jax import files
from purl_jax.checkpoint import flat_masks, unflat_masks
from purl_jax.graph import Graph
from purl_jax.masks import (
    ChannelMasks, Masks, _flat_keep, _flatten, apply_masks, channel_masks_to_masks,
    get_path, set_path,
)
from purl_jax.models.resnet import ResNetCifar


class ExportError(ValueError):
    """A model or mask that cannot be exported compactly."""


def _kept_positions(flat_keep: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.nonzero(flat_keep[index])[0]


def _slice_leaf(leaf, axes, flat_keep: np.ndarray):
    for axis, index in axes:
        leaf = jnp.take(leaf, _kept_positions(flat_keep, index), axis=axis)
    return leaf


def _option_a_maps(graph: Graph, flat_keep: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Where each kept output channel of a zero-padded shortcut comes from (-1: zero)."""
    maps = {}
    for layer in graph.layers:
        block, _, conv = layer.name.rpartition("/")
        if conv != "conv1" or layer.strides == (1, 1):
            continue
        in_index = dict(graph.axis_channels[("params", *layer.path)])[2]
        out_index = dict(graph.axis_channels[("params", block, "bn2", "scale")])[0]
        lo = (len(out_index) - len(in_index)) // 2
        kept_in = {int(p): j for j, p in enumerate(_kept_positions(flat_keep, in_index))}
        maps[block] = tuple(kept_in.get(int(p) - lo, -1)
                            for p in _kept_positions(flat_keep, out_index))
    return maps


def compact(model: nn.Module, variables: Any, graph: Graph, channel_masks: ChannelMasks,
            masks: Masks | None = None) -> tuple[nn.Module, Any]:
    """The smaller model and its variables.

    ``masks`` (unstructured, optional) are applied first, so a model pruned both ways
    exports its remaining zeros inside the smaller kernels.
    """
    if not hasattr(model, "widths"):
        raise ExportError(
            f"{type(model).__name__} has no `widths` attribute; compact export supports the "
            "zoo's families (LeNet, VGG, ResNet, MobileNet-V2) or models that follow them")
    full = channel_masks_to_masks(variables["params"], graph, channel_masks, base=masks)
    variables = {**variables, "params": apply_masks(variables["params"], full)}
    flat_keep = np.asarray(_flat_keep(graph, channel_masks))
    for path, axes in graph.axis_channels.items():
        variables = set_path(variables, path, _slice_leaf(get_path(variables, path), axes,
                                                          flat_keep))
    widths = {}
    for layer in graph.layers:
        out = dict(graph.axis_channels.get(("params", *layer.path), ())).get(
            len(layer.kernel_shape) - 1)
        if out is not None:
            widths[layer.name] = int(len(_kept_positions(flat_keep, out)))
    extra = {}
    if isinstance(model, ResNetCifar):
        extra["shortcut_maps"] = _option_a_maps(graph, flat_keep)
    small = model.clone(widths=widths, **extra)
    x = jnp.zeros((1, *graph.input_shape))
    expected = jax.eval_shape(small.init, jax.random.key(0), x)
    got = jax.tree.map(lambda a: a.shape, variables)
    if jax.tree.map(lambda a: a.shape, expected) != got:
        raise ExportError(f"{type(model).__name__} rebuilt with widths {widths} does not take "
                          "the sliced parameters; is every pruned width exposed in `widths`?")
    return small, variables


def sparse_storage(params: Any, masks: Masks) -> dict[str, int]:
    """Bytes of the params stored densely, as values + bitmask, and as values + int32 indices."""
    dense = sum(int(np.prod(jnp.shape(p))) * jnp.dtype(p.dtype).itemsize
                for p in jax.tree.leaves(params))
    masked = {path: m for path, m in _flatten(masks)}
    bitmask = coo = 0
    for path, p in _flatten(params):
        size, item = int(np.prod(p.shape)), jnp.dtype(p.dtype).itemsize
        if path not in masked:
            bitmask += size * item
            coo += size * item
            continue
        nnz = int(jnp.sum(masked[path]))
        bitmask += nnz * item + (size + 7) // 8
        coo += nnz * (item + 4)
    return {"dense_bytes": dense, "bitmask_bytes": bitmask, "coo_bytes": coo}


def save_export(directory: str | os.PathLike, variables: Any, masks: Masks | None = None,
                metadata: dict | None = None) -> epath.Path:
    """Saves variables (and masks, ``None`` leaves dropped) with orbax, metadata as JSON.
    In a multi-process run every process must call it (orbax saves together); arrays go
    through host memory, as orbax refuses one process's device arrays there."""
    import orbax.checkpoint as ocp

    directory = files.path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree = {"variables": variables}
    if masks is not None:
        tree["masks"] = flat_masks(masks)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "arrays", jax.device_get(tree), force=True)
    files.write_text(directory / "export.json", json.dumps(metadata or {}, indent=2))
    return directory


def load_export(directory: str | os.PathLike, like: Any) -> tuple[Any, Masks | None, dict]:
    """Restores what ``save_export`` wrote: (variables, mask tree or None, metadata);
    ``like`` is the variables tree (or its shapes)."""
    import orbax.checkpoint as ocp

    directory = files.path(directory)
    with ocp.StandardCheckpointer() as ckpt:
        meta = ckpt.metadata(directory / "arrays")
        tree = getattr(meta, "item_metadata", meta)
        target = {"variables": jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), like)}
        if "masks" in tree:
            target["masks"] = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                               for k, v in tree["masks"].items()}
        restored = ckpt.restore(directory / "arrays", target)
    variables = restored["variables"]
    masks = unflat_masks(restored["masks"], variables["params"]) if "masks" in restored else None
    return variables, masks, json.loads((directory / "export.json").read_text())
