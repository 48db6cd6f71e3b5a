"""Sparsity masks as pytrees shaped like the params.

A mask tree has the params' structure: boolean arrays where a weight may be pruned
(``True`` keeps it), ``None`` where the parameter stays dense. Unstructured masks cover
the kernels of the prunable layers; structured (channel) masks are kept per
``ChannelGroup`` as ``{group name: bool[size]}`` and expanded to a mask tree that also
zeroes the channel's bias, batch-norm scale and shift, and the next layers' inputs, so a
pruned channel contributes exactly zero everywhere it flows.

Every function here is pure and jit-compatible in its array arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purl_jax.graph import ChannelGroup, Graph, Layer, Path

Masks = Any  # a pytree like the params, bool leaves or None
ChannelMasks = dict[str, jax.Array]  # group name -> bool[size]
Ratios = float | Mapping[str, float]  # one value for all layers, or per layer name


class MaskError(ValueError):
    """A mask tree, ratio or channel mask that does not fit the model."""


@dataclasses.dataclass(frozen=True)
class MaskPolicy:
    """Which layers may be pruned.

    The first and last layers are excluded by default (they hold few weights and much of
    the accuracy); ``exclude`` takes regular expressions matched against layer names
    ("stage1_block1/conv1"). Channel groups are prunable when all their producers are.
    """

    exclude_first: bool = True
    exclude_last: bool = True
    exclude: tuple[str, ...] = ()

    def prunable(self, graph: Graph) -> tuple[Layer, ...]:
        layers = list(graph.layers)
        skip = set()
        if self.exclude_first and layers:
            skip.add(layers[0].name)
        if self.exclude_last and layers:
            skip.add(layers[-1].name)
        patterns = [re.compile(p) for p in self.exclude]
        return tuple(
            layer for layer in layers
            if layer.name not in skip and not any(p.search(layer.name) for p in patterns)
        )


# -- tree helpers -----------------------------------------------------------------------

def get_path(tree: Mapping, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: Mapping, path: Path, value: Any) -> dict:
    """A copy of the nested dict ``tree`` with ``value`` at ``path``."""
    head, *rest = path
    new = dict(tree)
    new[head] = set_path(tree[head], tuple(rest), value) if rest else value
    return new


def _is_none(x) -> bool:
    return x is None


def check_masks(params: Any, masks: Masks) -> None:
    """Raises ``MaskError`` naming the first place where ``masks`` does not fit ``params``."""
    p_leaves = dict(_flatten(params))
    for path, mask in _flatten(masks, keep_none=True):
        if mask is None:
            continue
        if path not in p_leaves:
            raise MaskError(f"mask at {'/'.join(path)} has no matching parameter")
        p = p_leaves[path]
        if tuple(jnp.shape(mask)) != tuple(jnp.shape(p)):
            raise MaskError(
                f"mask at {'/'.join(path)} has shape {tuple(jnp.shape(mask))}, "
                f"the parameter has shape {tuple(jnp.shape(p))}"
            )
        if jnp.result_type(mask) != jnp.bool_:
            raise MaskError(f"mask at {'/'.join(path)} has dtype {jnp.result_type(mask)}, need bool")


def _flatten(tree, keep_none: bool = False) -> list[tuple[Path, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none if keep_none else None)
    return [(tuple(str(getattr(k, "key", k)) for k in p), leaf) for p, leaf in leaves]


@jax.jit
def apply_masks(params: Any, masks: Masks) -> Any:
    """Zeroes pruned weights; parameters without a mask pass through.

    Jitted so an eager call is one XLA program, not one compile per leaf shape."""
    return jax.tree.map(
        lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
        masks, params, is_leaf=_is_none,
    )


def init_masks(params: Any, graph: Graph, policy: MaskPolicy = MaskPolicy()) -> Masks:
    """All-true masks on the prunable kernels, ``None`` on every other parameter."""
    masks = jax.tree.map(lambda _: None, params)
    for layer in policy.prunable(graph):
        masks = set_path(masks, layer.path, jnp.ones(get_path(params, layer.path).shape, bool))
    return masks


def masked_layers(masks: Masks, graph: Graph) -> tuple[Layer, ...]:
    """The layers whose kernel carries a mask, in execution order."""
    return tuple(layer for layer in graph.layers if _get_or_none(masks, layer.path) is not None)


def _get_or_none(tree, path):
    try:
        return get_path(tree, path)
    except (KeyError, TypeError):
        return None


# -- masks from magnitudes ------------------------------------------------------------

def _check_ratio(ratio, what: str = "ratio") -> None:
    if isinstance(ratio, (int, float)) and not 0.0 <= ratio <= 1.0:
        raise MaskError(f"{what} must lie in [0, 1], got {ratio}")


def ascending_ranks(values: jax.Array) -> jax.Array:
    """Each entry's rank in ascending order, 0 for the smallest (ties by position), same shape.

    One sort serves every ratio: ``ascending_ranks(|w|) >= k`` keeps all but the ``k`` smallest
    (for one ``k``, ``smallest`` is faster).
    """
    order = jnp.argsort(values.reshape(-1), stable=True)
    ranks = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    return ranks.reshape(values.shape)


def _order_keys(values: jax.Array) -> jax.Array:
    """uint32 keys in the floats' order (-0.0 read as 0.0, as comparisons do; float64 is
    compared as float32, which can only add ties)."""
    values = jnp.where(values == 0, 0.0, values).astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(values, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def smallest(values: jax.Array, k: int | jax.Array) -> jax.Array:
    """True at the ``k`` smallest entries (ties by position): ``ascending_ranks(values) < k``.

    Selection, not a sort: the k-th smallest value is found bit by bit from its float
    bits in 32 counting passes, then, among the entries tied at it, the last position to
    take, from the bits of the index. One ``k`` per call, where ``ascending_ranks`` serves
    many.
    """
    return smallest_each([values], [k])[0]


def smallest_each(values: Sequence[jax.Array], ks: Sequence[int | jax.Array]) -> list[jax.Array]:
    """``smallest`` for several arrays in one loop: one program however many layers.

    Arrays of one size are stacked, so each pass reduces once per distinct size: a
    reduction per layer made the program slow to compile. On CPU, once compiled, 7-24x
    faster than the stable sort it replaces (BENCHMARKS.md, "Magnitude masks by selection").
    """
    if not values:
        return []
    by_size: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        by_size.setdefault(v.size, []).append(i)
    members = list(by_size.values())
    keys = [jnp.stack([_order_keys(values[i].reshape(-1)) for i in m]) for m in members]  # [arrays, size]
    ks = [jnp.stack([jnp.asarray(ks[i], jnp.int32) for i in m]) for m in members]
    index = [jnp.arange(key.shape[1], dtype=jnp.uint32) for key in keys]
    index_bits = max(1, max(key.shape[1] for key in keys) - 1).bit_length()

    # Passes 0-31 build the k-th smallest key from its top bit: the least t with
    # count(key <= t) >= k. The next index_bits passes build, among the entries tied at it,
    # the least position p with count(key < kth or (key == kth and index <= p)) >= k.
    def next_bit(b, state):
        on_value = b < 32
        bit = jnp.uint32(1) << jnp.where(on_value, 31 - b, 31 + index_bits - b).astype(jnp.uint32)
        out = []
        for key, k, idx, (kth, pos) in zip(keys, ks, index, state):
            t = jnp.where(on_value, kth | (bit - 1), kth)[:, None]
            p = jnp.where(on_value, jnp.uint32(0xFFFFFFFF), pos | (bit - 1))[:, None]
            enough = jnp.sum((key < t) | ((key == t) & (idx <= p)), axis=1, dtype=jnp.int32) >= k
            kth = jnp.where(on_value & ~enough, kth | bit, kth)
            pos = jnp.where(~on_value & ~enough, pos | bit, pos)
            out.append((kth, pos))
        return tuple(out)

    zeros = tuple((jnp.zeros_like(k, jnp.uint32),) * 2 for k in ks)
    state = jax.lax.fori_loop(0, 32 + index_bits, next_bit, zeros)
    out = [None] * len(values)
    for m, key, k, idx, (kth, pos) in zip(members, keys, ks, index, state):
        chosen = ((key < kth[:, None]) | ((key == kth[:, None]) & (idx <= pos[:, None]))) & (k[:, None] > 0)
        for row, i in enumerate(m):
            out[i] = chosen[row].reshape(values[i].shape)
    return out


def pruned_count(ratio: float | jax.Array, size: int) -> jax.Array:
    """``round(ratio * size)``: how many weights a ratio prunes (any leading axes of ``ratio``)."""
    return jnp.round(jnp.asarray(ratio, jnp.float32) * size).astype(jnp.int32)


def magnitude_mask(kernel: jax.Array, ratio: float | jax.Array) -> jax.Array:
    """Prunes exactly ``round(ratio * size)`` weights of smallest magnitude."""
    _check_ratio(ratio)
    return ~smallest(jnp.abs(kernel), pruned_count(ratio, kernel.size))


def threshold_mask(kernel: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """PuRL's action: prunes weights with ``|w| < alpha * std(w)``."""
    if isinstance(alpha, (int, float)) and alpha < 0:
        raise MaskError(f"alpha must be non-negative, got {alpha}")
    return jnp.abs(kernel) >= alpha * jnp.std(kernel)


def _per_layer(values: Ratios, layers: Sequence[Layer], what: str) -> dict[str, Any]:
    if isinstance(values, Mapping):
        unknown = set(values) - {layer.name for layer in layers}
        if unknown:
            raise MaskError(
                f"{what} given for layers that are not masked: {sorted(unknown)}; "
                f"masked layers: {[layer.name for layer in layers]}"
            )
        out = {layer.name: values[layer.name] for layer in layers if layer.name in values}
    else:
        out = {layer.name: values for layer in layers}
    for name, value in out.items():
        _check_ratio(value, f"{what} of {name}")
    return out


@jax.jit
def _magnitude_kernel_masks(kernels: list[jax.Array], ratios: list[jax.Array]) -> list[jax.Array]:
    # One program for all layers: eagerly, each kernel shape would compile its own selection.
    return [~m for m in smallest_each([jnp.abs(k) for k in kernels],
                                      [pruned_count(r, k.size) for k, r in zip(kernels, ratios)])]


def magnitude_masks(params: Any, masks: Masks, graph: Graph, ratios: Ratios) -> Masks:
    """Per-layer magnitude pruning of the masked layers (uniform when ``ratios`` is a float)."""
    layers = masked_layers(masks, graph)
    per_layer = _per_layer(ratios, layers, "ratio")
    paths = [graph.layer(name).path for name in per_layer]
    kept = _magnitude_kernel_masks([get_path(params, p) for p in paths],
                                   [jnp.asarray(r, jnp.float32) for r in per_layer.values()])
    for path, mask in zip(paths, kept):
        masks = set_path(masks, path, mask)
    return masks


def gradual_ratios(ratios: Mapping[str, float], rounds: int) -> list[dict[str, float]]:
    """Per-layer ratios for ``rounds`` prune-and-fine-tune rounds that end at ``ratios``.

    Zhu & Gupta's cubic ramp, s_r = s (1 - (1 - r / R)^3): most of the pruning happens in
    the first rounds, while the network still has the capacity to recover.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise MaskError(f"rounds must be a positive integer, got {rounds!r}")
    return [{name: float(s) * (1.0 - (1.0 - r / rounds) ** 3) for name, s in ratios.items()}
            for r in range(1, rounds + 1)]


def global_magnitude_masks(
    params: Any, masks: Masks, graph: Graph, sparsity: float | jax.Array,
    min_keep_fraction: float = 0.0,
) -> Masks:
    """One magnitude threshold over all masked layers, pruning ``sparsity`` of their weights.

    ``min_keep_fraction`` > 0 is the minimum-threshold variant: each layer keeps at least
    that share of the masked weights of the whole network (its largest ones), so no
    layer collapses; the global threshold then allocates the rest.
    """
    _check_ratio(sparsity, "sparsity")
    layers = masked_layers(masks, graph)
    if not layers:
        raise MaskError("no masked layers to prune")
    kept = _global_kernel_masks([get_path(params, layer.path) for layer in layers],
                                jnp.asarray(sparsity, jnp.float32), min_keep_fraction)
    for layer, mask in zip(layers, kept):
        masks = set_path(masks, layer.path, mask)
    return masks


@functools.partial(jax.jit, static_argnames="min_keep_fraction")
def _global_kernel_masks(kernels: list[jax.Array], sparsity: jax.Array,
                         min_keep_fraction: float) -> list[jax.Array]:
    total = sum(k.size for k in kernels)
    reserve = int(round(min_keep_fraction * total))
    scores = [jnp.abs(k).reshape(-1) for k in kernels]
    if reserve:  # the largest min(reserve, size) weights of each layer are always kept
        top = smallest_each([-k for k in scores], [min(reserve, k.size) for k in scores])
        scores = [jnp.where(t, jnp.inf, k) for t, k in zip(top, scores)]
    keep = ~smallest(jnp.concatenate(scores), pruned_count(sparsity, total))
    out, start = [], 0
    for k in kernels:
        out.append(keep[start:start + k.size].reshape(k.shape))
        start += k.size
    return out


def global_cut(kernels: Sequence[jax.Array], sparsity: float) -> float:
    """The smallest magnitude that global magnitude pruning at ``sparsity`` keeps: its mask
    is ``|w| >= cut`` in every layer (up to exact ties at the cut)."""
    kept = _global_kernel_masks(list(kernels), jnp.asarray(sparsity, jnp.float32), 0.0)
    return float(min(jnp.min(jnp.where(m, jnp.abs(k), jnp.inf)) for k, m in zip(kernels, kept)))


def global_kept_shares(kernels: Sequence[jax.Array], sparsity: float) -> jax.Array:
    """The share of each kernel that global magnitude pruning at ``sparsity`` keeps, [L]."""
    kept = _global_kernel_masks(list(kernels), jnp.asarray(sparsity, jnp.float32), 0.0)
    return jnp.stack([jnp.mean(m) for m in kept])


# -- structured (channel) masks ---------------------------------------------------------

def prunable_groups(graph: Graph, policy: MaskPolicy = MaskPolicy()) -> tuple[ChannelGroup, ...]:
    """The channel groups whose producer layers ``policy`` all lets be pruned: a group
    shared through a residual add is pruned together or not at all."""
    names = {layer.name for layer in policy.prunable(graph)}
    return tuple(g for g in graph.groups if all(p in names for p in g.producers))


def init_channel_masks(graph: Graph, policy: MaskPolicy = MaskPolicy()) -> ChannelMasks:
    """All channels kept, for every group whose producer layers are all prunable."""
    return {g.name: jnp.ones(g.size, bool) for g in prunable_groups(graph, policy)}


def _group_keeps(graph: Graph, channel_masks: ChannelMasks) -> list[jax.Array | None]:
    """``channel_masks`` checked and listed in ``graph.groups`` order (None: all kept)."""
    known = {g.name for g in graph.groups}
    unknown = set(channel_masks) - known
    if unknown:
        raise MaskError(f"no channel groups named {sorted(unknown)}; groups: {sorted(known)}")
    keeps = []
    for g in graph.groups:
        m = channel_masks.get(g.name)
        if m is not None and jnp.shape(m) != (g.size,):
            raise MaskError(f"channel mask for {g.name} has shape {jnp.shape(m)}, need ({g.size},)")
        keeps.append(None if m is None else jnp.asarray(m, bool))
    return keeps


@functools.partial(jax.jit, static_argnames="sizes")
def _concat_keeps(keeps: list, sizes: tuple[int, ...]) -> jax.Array:
    parts = [jnp.ones(n, bool) if m is None else m for m, n in zip(keeps, sizes)]
    return jnp.concatenate(parts + [jnp.ones(1, bool)])  # index -1: outside any group, kept


def _flat_keep(graph: Graph, channel_masks: ChannelMasks) -> jax.Array:
    """One keep flag per flat channel index of ``graph`` (and a last, always-kept one)."""
    return _concat_keeps(_group_keeps(graph, channel_masks), sizes=tuple(g.size for g in graph.groups))


@functools.partial(jax.jit, static_argnames=("sizes", "layout"))
def _expand_channels(keeps: list, indices: list, olds: list, sizes: tuple[int, ...],
                     layout: tuple) -> list[jax.Array]:
    """The leaf masks of ``channel_masks_to_masks`` in one program: leaf i has shape
    ``layout[i][0]`` and keeps position j on axis ``layout[i][1][k]`` where
    ``flat[indices[i][k][j]]``; ANDed with ``olds[i]`` unless that is None."""
    flat = _concat_keeps(keeps, sizes)
    out = []
    for (shape, axes), idx, old in zip(layout, indices, olds):
        mask = jnp.ones(shape, bool)
        for axis, ix in zip(axes, idx):
            bshape = [1] * len(shape)
            bshape[axis] = shape[axis]
            mask = mask & flat[ix].reshape(bshape)
        out.append(mask if old is None else old & mask)
    return out


def channel_masks_to_masks(
    params: Any, graph: Graph, channel_masks: ChannelMasks, base: Masks | None = None
) -> Masks:
    """Expands channel masks to a mask tree over kernels, biases and batch-norm params.

    ``base`` (an unstructured mask tree) is combined with the result, so a layer can
    be pruned both ways.
    """
    keeps = _group_keeps(graph, channel_masks)
    live = np.zeros(graph.num_channels + 1, bool)
    for g, m in zip(graph.groups, keeps):
        if m is not None:
            live[g.offset:g.offset + g.size] = True
    masks = base if base is not None else jax.tree.map(lambda _: None, params)
    paths, layout, indices, olds = [], [], [], []
    for path, axes in graph.axis_channels.items():
        if path[0] != "params" or not any(live[idx].any() for _, idx in axes):
            continue
        paths.append(path[1:])
        layout.append((tuple(get_path(params, path[1:]).shape), tuple(a for a, _ in axes)))
        indices.append([np.asarray(idx, np.int32) for _, idx in axes])
        olds.append(_get_or_none(masks, path[1:]))
    leaves = _expand_channels(keeps, indices, olds, sizes=tuple(g.size for g in graph.groups),
                              layout=tuple(layout))
    for path, mask in zip(paths, leaves):
        masks = set_path(masks, path, mask)
    return masks


def channel_masks_from_masks(params: Any, graph: Graph, masks: Masks) -> ChannelMasks:
    """The channels a mask tree has removed entirely: the inverse of
    ``channel_masks_to_masks``.

    A channel counts as pruned only when every producer-side entry of it (kernel output
    slices, biases, batch-norm scale and shift) is masked out, so its activation is
    exactly zero; unstructured masks, which leave biases alone, remove no channel.
    """
    alive = np.zeros(graph.num_channels + 1, bool)
    for path, axes in graph.axis_channels.items():
        if path[0] != "params":
            continue
        mask = _get_or_none(masks, path[1:])
        ndim = get_path(params, path[1:]).ndim
        for axis, index in axes:
            if axis != ndim - 1:
                continue  # a consumer axis: what the channel feeds, not what makes it
            if mask is None:
                alive[index] = True
            else:
                other = tuple(a for a in range(mask.ndim) if a != axis)
                alive[index] |= np.asarray(mask).any(axis=other)
    return {g.name: jnp.asarray(alive[g.offset:g.offset + g.size]) for g in graph.groups
            if not alive[g.offset:g.offset + g.size].all()}


def channel_scores(params: Any, graph: Graph, group_name: str) -> jax.Array:
    """L1 norm of each channel's producer weights, summed over the group's producers."""
    group = graph.group(group_name)
    score = jnp.zeros(group.size)
    for name in group.producers:
        layer = graph.layer(name)
        kernel = jnp.abs(get_path(params, layer.path))
        per_out = kernel.reshape(-1, kernel.shape[-1]).sum(0)
        (axis, idx), = [(a, i) for a, i in graph.axis_channels[("params", *layer.path)]
                        if a == kernel.ndim - 1]
        sel = idx - group.offset
        inside = (sel >= 0) & (sel < group.size)
        score = score.at[np.where(inside, sel, group.size)].add(per_out, mode="drop")
    return score


def l1_channel_masks(
    params: Any, graph: Graph, channel_masks: ChannelMasks, ratios: Ratios
) -> ChannelMasks:
    """Prunes the ``ratio`` share of each group's channels with the smallest L1 norm
    (Li et al. 2017); at least one channel per group survives."""
    out = {}
    if isinstance(ratios, Mapping):
        unknown = set(ratios) - set(channel_masks)
        if unknown:
            raise MaskError(f"ratios given for unknown channel groups {sorted(unknown)}")
    for name in channel_masks:
        ratio = ratios.get(name, 0.0) if isinstance(ratios, Mapping) else ratios
        _check_ratio(ratio, f"ratio of {name}")
        score = channel_scores(params, graph, name)
        out[name] = ascending_ranks(score) >= jnp.minimum(pruned_count(ratio, score.size), score.size - 1)
    return out


# -- summaries ---------------------------------------------------------------------------

def summary(params: Any, masks: Masks, graph: Graph) -> dict[str, Any]:
    """Per-layer and global sparsity, kept parameters and MACs (plain Python numbers)."""
    check_masks(params, masks)
    layers = {}
    pruned_total = masked_total = 0
    kept_macs = 0
    for layer in graph.layers:
        mask = _get_or_none(masks, layer.path)
        kept = layer.params if mask is None else int(jnp.sum(mask))
        if mask is not None:
            masked_total += layer.params
            pruned_total += layer.params - kept
        kept_macs += layer.positions * kept
        layers[layer.name] = {
            "params": layer.params, "kept": kept, "sparsity": 1.0 - kept / layer.params,
            "masked": mask is not None,
        }
    total = sum(int(np.prod(jnp.shape(p))) for p in jax.tree.leaves(params))
    kept_params = total - sum(
        int(np.prod(jnp.shape(m))) - int(jnp.sum(m)) for m in jax.tree.leaves(masks)
    )
    return {
        "layers": layers,
        "sparsity": pruned_total / masked_total if masked_total else 0.0,
        "params": total,
        "kept_params": kept_params,
        "macs": graph.dense_macs,
        "kept_macs": kept_macs,
    }

