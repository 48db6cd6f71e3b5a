"""Layers, FLOPs and channel groups of any Flax model, read off its jaxpr.

Nothing here is listed per model. ``analyze`` traces ``model.apply`` once and follows the
channel (last) axis of every tensor through the program:

* a convolution or dense layer starts fresh channels, one per output feature (its
  *producer* side), and records which channel feeds each of its input rows (its
  *consumer* side, several rows per channel after a flatten);
* element-wise ops (a residual add, batch norm's scale and shift, a bias) tie the
  channels of their operands together, so a residual stream becomes one group;
* a depthwise convolution ties its output channel to its input channel;
* ops that mix channels in ways a mask cannot follow (an unknown primitive, a transpose
  of the channel axis) and the model's inputs and outputs *taint* what touches them:
  those channels are never pruned.

Channels tied together form one prunable unit; units that share the same producer
layers form a ``ChannelGroup`` (the 64 channels of a ResNet stage, say). ``Graph`` maps
every parameter axis to the group channel it belongs to, which is what structured masks
and compact export need.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

Path = tuple[str, ...]

_ELEMENTWISE = frozenset(
    """abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp conj
    convert_element_type copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor
    ge gt imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or pow real reduce_precision rem round rsqrt select_n sign sin sinh sqrt
    square stop_gradient sub tan tanh xor""".split()
)
_CHANNEL_PRESERVING_REDUCTIONS = frozenset(
    ["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"]
)
_WINDOW_OPS = frozenset(
    ["reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"]
)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A convolution or dense layer, in execution order."""

    name: str  # "stage1_block1/conv1": the module path, one name across code and configs
    path: Path  # the kernel's path in the params tree
    kind: str  # "conv", "depthwise" or "dense"
    index: int
    kernel_shape: tuple[int, ...]
    in_features: int
    out_features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    feature_group_count: int
    input_shape: tuple[int, ...]  # per example, channels last
    output_shape: tuple[int, ...]
    positions: int  # output positions per example; each kernel weight is used this often

    @property
    def params(self) -> int:
        return math.prod(self.kernel_shape)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per example of the dense layer."""
        return self.positions * self.params


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels pruned together: same producers, tied by residual adds or depthwise convs."""

    name: str  # name of the first producer layer
    size: int
    offset: int  # position of channel 0 in the flat channel vector of the graph
    producers: tuple[str, ...]  # layer names whose output channels this group is


@dataclasses.dataclass(frozen=True)
class Graph:
    layers: tuple[Layer, ...]
    groups: tuple[ChannelGroup, ...]
    # For each parameter leaf (path relative to its collection, prefixed by the collection
    # name) the axes a channel mask acts on: (axis, flat channel index per position or -1).
    axis_channels: dict[Path, tuple[tuple[int, np.ndarray], ...]]
    input_shape: tuple[int, ...]

    @property
    def num_channels(self) -> int:
        return sum(g.size for g in self.groups)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def group(self, name: str) -> ChannelGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no channel group named {name!r}; groups: {[g.name for g in self.groups]}")

    @property
    def dense_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            if x >= 0 and y >= 0:
                rx, ry = self.find(x), self.find(y)
                if rx != ry:
                    self.parent[max(rx, ry)] = min(rx, ry)


class _Tracer:
    """Walks a jaxpr, giving each value the channel ids of its last axis."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.tainted: set[int] = set()
        # (node, leaf path, axis, position): the node is a channel of that leaf's axis.
        self.attach: list[tuple[int, Path, int, int]] = []
        self.producers: list[tuple[int, str]] = []  # (node, layer name)
        self.layers: dict[Path, dict[str, Any]] = {}

    # -- helpers -------------------------------------------------------------------
    def fresh(self, n: int, taint: bool = False) -> np.ndarray:
        ids = self.uf.new(n)
        if taint:
            self.tainted.update(ids.tolist())
        return ids

    def taint(self, ids: np.ndarray | None) -> None:
        if ids is not None:
            self.tainted.update(int(i) for i in ids if i >= 0)

    @staticmethod
    def neutral(n: int) -> np.ndarray:
        return np.full(n, -1, dtype=np.int64)

    def merge(self, operands: Sequence[np.ndarray | None], size: int) -> np.ndarray:
        """Ties same-position channels of element-wise operands; returns the output ids."""
        out = self.neutral(size)
        for ids in operands:
            if ids is None or len(ids) != size:
                continue  # a scalar or a size-1 axis broadcast across channels
            self.uf.union(out, ids)
            out = np.where(out >= 0, out, ids)
        return out

    # -- the walk --------------------------------------------------------------------
    def run(self, jaxpr: jex_core.Jaxpr, in_ids: list, in_origin: list) -> tuple[list, list]:
        env: dict[Any, tuple[np.ndarray | None, Path | None]] = {}

        def read(v):
            if isinstance(v, jex_core.Literal):
                return None, None
            return env.get(v, (None, None))

        for v, ids, origin in zip(jaxpr.invars, in_ids, in_origin):
            env[v] = (ids, origin)
        for v in jaxpr.constvars:
            shape = getattr(v.aval, "shape", ())
            env[v] = (self.neutral(shape[-1]) if shape else None, None)
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.equation(eqn, [i for i, _ in ins], [o for _, o in ins])
            for v, out in zip(eqn.outvars, outs):
                env[v] = out
        results = [read(v) for v in jaxpr.outvars]
        return [r[0] for r in results], [r[1] for r in results]

    def equation(self, eqn, ids: list, origins: list) -> list:
        name = eqn.primitive.name
        out_avals = [v.aval for v in eqn.outvars]
        shape = tuple(out_avals[0].shape) if hasattr(out_avals[0], "shape") else ()
        size = shape[-1] if shape else 0
        in_shapes = [tuple(getattr(v.aval, "shape", ())) for v in eqn.invars]

        sub = _subjaxpr(eqn)
        if sub is not None:
            jaxpr, consts = sub
            n_in = len(jaxpr.invars)
            outs = self.run(jaxpr, ids[-n_in:], origins[-n_in:]) if n_in <= len(ids) else None
            if outs is not None:
                return list(zip(*outs))
        if name == "conv_general_dilated":
            return [self.conv(eqn, ids, origins, in_shapes, shape)]
        if name == "dot_general":
            return [self.dot(eqn, ids, origins, in_shapes, shape)]
        if name in _ELEMENTWISE:
            origin = origins[0] if name in ("convert_element_type", "copy", "copy_p") else None
            if not shape:
                return [(None, origin)] * len(out_avals)
            return [(self.merge(ids, size), origin)] * len(out_avals)
        if name == "broadcast_in_dim":
            dims = eqn.params["broadcast_dimensions"]
            if in_shapes[0] and dims and dims[-1] == len(shape) - 1 and in_shapes[0][-1] == size:
                return [(ids[0], None)]
            return [(self.neutral(size) if shape else None, None)]
        if name in ("reshape", "squeeze", "expand_dims"):
            return [(self.reshape(ids[0], in_shapes[0], shape), origins[0])]
        if name in _CHANNEL_PRESERVING_REDUCTIONS:
            axes = eqn.params.get("axes", ())
            if len(in_shapes[0]) - 1 in axes:
                self.taint(ids[0])  # mixing channels: a mask could not follow
                return [(self.fresh(size, taint=True) if shape else None, None)]
            return [(ids[0], None)]
        if name in _WINDOW_OPS:
            window = eqn.params.get("window_dimensions", (1,))
            if window[-1] != 1:
                self.taint(ids[0])
                return [(self.fresh(size, taint=True), None)]
            return [(ids[0], None)] * len(out_avals)
        if name == "pad":
            lo, hi, interior = eqn.params["padding_config"][-1]
            if ids[0] is not None and interior == 0 and lo >= 0 and hi >= 0:
                return [(np.concatenate([self.neutral(lo), ids[0], self.neutral(hi)]), None)]
        if name == "slice":
            start = eqn.params["start_indices"][-1]
            limit = eqn.params["limit_indices"][-1]
            step = (eqn.params.get("strides") or (1,) * len(shape))[-1]
            return [(ids[0][start:limit:step] if ids[0] is not None else None, None)]
        if name == "concatenate":
            if eqn.params["dimension"] == len(shape) - 1:
                parts = [i if i is not None else self.neutral(s[-1]) for i, s in zip(ids, in_shapes)]
                return [(np.concatenate(parts), None)]
            return [(self.merge(ids, size), None)]
        if name == "transpose" and eqn.params["permutation"][-1] == len(shape) - 1:
            return [(ids[0], None)]
        if name in ("iota", "rng_bit_generator", "random_bits", "random_seed", "random_wrap",
                    "random_unwrap", "threefry2x32"):
            return [(self.neutral(a.shape[-1]) if getattr(a, "shape", ()) else None, None)
                    for a in out_avals]
        # Anything else: keep it correct by never pruning what it touches.
        for i in ids:
            self.taint(i)
        return [(self.fresh(a.shape[-1], taint=True) if getattr(a, "shape", ()) else None, None)
                for a in out_avals]

    def reshape(self, ids, in_shape, out_shape) -> np.ndarray | None:
        if not out_shape:
            return None
        if ids is None:
            return self.neutral(out_shape[-1])
        if in_shape and in_shape[-1] == out_shape[-1] and (
            math.prod(in_shape[:-1]) == math.prod(out_shape[:-1])
        ):
            return ids
        # Smallest trailing blocks of equal size, e.g. (4, 4, 50) -> (800,) for a flatten.
        for k in range(1, len(in_shape) + 1):
            for m in range(1, len(out_shape) + 1):
                if math.prod(in_shape[-k:]) == math.prod(out_shape[-m:]):
                    full = np.broadcast_to(ids, in_shape[-k:]).reshape(out_shape[-m:])
                    rows = full.reshape(-1, out_shape[-1])
                    if (rows == rows[0]).all():
                        return rows[0].copy()
                    break
        self.taint(ids)
        return self.fresh(out_shape[-1], taint=True)

    def record_layer(self, path: Path, **info) -> str:
        name = "/".join(path[1:-1])
        if path in self.layers:  # a shared kernel: count its work at every use
            self.layers[path]["positions"] += info["positions"]
        else:
            self.layers[path] = dict(name=name, path=path[1:], index=len(self.layers), **info)
        return name

    def conv(self, eqn, ids, origins, in_shapes, out_shape):
        lhs_ids, kernel = ids[0], origins[1]
        dn = eqn.params["dimension_numbers"]
        lhs_shape, rhs_shape = in_shapes[0], in_shapes[1]
        groups = eqn.params["feature_group_count"]
        ndim = len(lhs_shape)
        channels_last = (
            dn.lhs_spec[1] == ndim - 1 and dn.out_spec[1] == ndim - 1
            and tuple(dn.rhs_spec[:2]) == (ndim - 1, ndim - 2)
        )
        size = out_shape[-1]
        c_in = lhs_shape[-1]
        depthwise = groups == c_in and size == c_in and groups > 1
        if kernel is None or not channels_last or eqn.params["batch_group_count"] != 1 or (
            groups not in (1,) and not depthwise
        ):
            self.taint(lhs_ids)
            return self.fresh(size, taint=True), None
        name = self.record_layer(
            kernel,
            kind="depthwise" if depthwise else "conv",
            kernel_shape=rhs_shape,
            in_features=c_in,
            out_features=size,
            kernel_size=tuple(rhs_shape[:-2]),
            strides=tuple(eqn.params["window_strides"]),
            padding=tuple(tuple(p) for p in eqn.params["padding"]),
            feature_group_count=groups,
            input_shape=tuple(lhs_shape[1:]),
            output_shape=tuple(out_shape[1:]),
            positions=math.prod(out_shape[1:-1]),
        )
        out = self.fresh(size)
        for c, node in enumerate(out.tolist()):
            self.attach.append((node, kernel, ndim - 1, c))
            self.producers.append((node, name))
        if depthwise:
            self.uf.union(out, lhs_ids)
        else:
            for c, node in enumerate(lhs_ids.tolist()):
                if node >= 0:
                    self.attach.append((node, kernel, ndim - 2, c))
        return out, None

    def dot(self, eqn, ids, origins, in_shapes, out_shape):
        (lhs_contract, rhs_contract), (lhs_batch, _) = eqn.params["dimension_numbers"]
        lhs_ids, kernel = ids[0], origins[1]
        lhs_shape, rhs_shape = in_shapes[0], in_shapes[1]
        size = out_shape[-1]
        if (
            kernel is None or len(rhs_shape) != 2 or lhs_batch
            or tuple(lhs_contract) != (len(lhs_shape) - 1,) or tuple(rhs_contract) != (0,)
        ):
            self.taint(lhs_ids)
            for i in ids[1:]:
                self.taint(i)
            return self.fresh(size, taint=True), None
        name = self.record_layer(
            kernel,
            kind="dense",
            kernel_shape=rhs_shape,
            in_features=rhs_shape[0],
            out_features=size,
            kernel_size=(),
            strides=(),
            padding=(),
            feature_group_count=1,
            input_shape=tuple(lhs_shape[1:]),
            output_shape=tuple(out_shape[1:]),
            positions=math.prod(out_shape[1:-1]),
        )
        out = self.fresh(size)
        for c, node in enumerate(out.tolist()):
            self.attach.append((node, kernel, 1, c))
            self.producers.append((node, name))
        for r, node in enumerate(lhs_ids.tolist()):
            if node >= 0:
                self.attach.append((node, kernel, 0, r))
        return out, None


def _subjaxpr(eqn) -> tuple[jex_core.Jaxpr, list] | None:
    """The inner program of pjit, custom_jvp_call, remat and friends, if any."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if isinstance(inner, jex_core.ClosedJaxpr):
            return inner.jaxpr, inner.consts
        if isinstance(inner, jex_core.Jaxpr):
            return inner, []
    return None


def _path_names(path) -> Path:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def analyze(model: nn.Module, variables: Any, input_shape: Sequence[int]) -> Graph:
    """Traces ``model.apply(variables, x, train=False)`` for one example of ``input_shape``.

    ``variables`` may be concrete arrays or ``jax.ShapeDtypeStruct`` leaves (from
    ``jax.eval_shape(model.init, ...)``): nothing is computed, only traced.
    """
    input_shape = tuple(int(d) for d in input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                            variables)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(abstract, x)
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [_path_names(p) for p, _ in leaves_with_path]

    tracer = _Tracer()
    in_ids, in_origin = [], []
    for path, leaf in zip(paths, (leaf for _, leaf in leaves_with_path)):
        shape = leaf.shape
        in_origin.append(path)
        if len(shape) == 1:  # a per-channel vector (bias, batch-norm scale, statistics)
            ids = tracer.fresh(shape[0])
            for i, node in enumerate(ids.tolist()):
                tracer.attach.append((node, path, 0, i))
            in_ids.append(ids)
        else:
            in_ids.append(None)
    in_ids.append(tracer.fresh(input_shape[-1], taint=True))  # the data: never pruned
    in_origin.append(None)
    out_ids, _ = tracer.run(closed.jaxpr, in_ids, in_origin)
    for ids in out_ids:
        tracer.taint(ids)
    leaf_shapes = {path: tuple(leaf.shape) for path, (_, leaf) in zip(paths, leaves_with_path)}
    return _build_graph(tracer, leaf_shapes, input_shape)


def _build_graph(
    tracer: _Tracer, leaf_shapes: dict[Path, tuple[int, ...]], input_shape: tuple[int, ...]
) -> Graph:
    find = tracer.uf.find
    tainted = {find(i) for i in tracer.tainted}
    producers: dict[int, list[tuple[str, int]]] = {}
    order: dict[int, int] = {}
    for node, name in tracer.producers:
        root = find(node)
        if name not in [p for p, _ in producers.get(root, [])]:
            producers.setdefault(root, []).append((name, node))
        order.setdefault(root, node)
    signature: dict[tuple[str, ...], list[int]] = {}
    for root, prods in producers.items():
        if root not in tainted:
            signature.setdefault(tuple(sorted(p for p, _ in prods)), []).append(root)

    layers = sorted(tracer.layers.values(), key=lambda d: d["index"])
    layer_rank = {d["name"]: i for i, d in enumerate(layers)}
    groups, channel_of = [], {}
    offset = 0
    for prods, roots in sorted(signature.items(), key=lambda kv: min(layer_rank[p] for p in kv[0])):
        roots.sort(key=lambda r: order[r])
        first = min(prods, key=lambda p: layer_rank[p])
        groups.append(ChannelGroup(first, len(roots), offset, tuple(
            sorted(prods, key=lambda p: layer_rank[p]))))
        for k, root in enumerate(roots):
            channel_of[root] = offset + k
        offset += len(roots)

    maps: dict[tuple[Path, int], dict[int, int]] = {}
    for node, path, axis, pos in tracer.attach:
        channel = channel_of.get(find(node))
        if channel is not None:
            maps.setdefault((path, axis), {})[pos] = channel
    axis_channels: dict[Path, list[tuple[int, np.ndarray]]] = {}
    for (path, axis), positions in sorted(maps.items()):
        index = np.full(leaf_shapes[path][axis], -1, dtype=np.int32)
        for pos, channel in positions.items():
            index[pos] = channel
        axis_channels.setdefault(path, []).append((axis, index))
    return Graph(
        layers=tuple(Layer(**d) for d in layers),
        groups=tuple(groups),
        axis_channels={k: tuple(v) for k, v in axis_channels.items()},
        input_shape=input_shape,
    )
