"""Scores K candidate masks on held-out data in one jitted call.

Three entry points, one per shape of the question a search asks:

* ``evaluate(masks)``: one mask tree.
* ``evaluate_layer(masks, layer_name, layer_masks)``: K candidates that differ only in one
  layer's kernel (a layer-by-layer search step). Strategy ``"fold"`` vmaps over that
  layer's mask alone, so everything before the layer is computed once for all candidates
  and the layer runs as one wide op; a layout barrier then moves the candidate axis in
  front of the batch, so every later conv or matmul is an ordinary one on K x b rows with
  shared weights instead of a grouped convolution (which XLA:CPU runs badly). Where K
  masked copies of a big kernel would not fit the memory bound, the candidates run in
  groups. ``"map"`` runs the candidates one after another inside the jit; XLA hoists the
  candidate-independent prefix out of that loop, so it shares the prefix too, with one
  masked kernel live at a time.
* ``evaluate_stacked(stacked_masks)``: K candidates that may differ everywhere. Strategy
  ``"map"`` runs them one after another inside the jit (as fast as a Python loop on CPU);
  ``"vmap"`` batches them (the right choice where grouped convs are cheap: GPU, TPU).

``"auto"`` (the default) times the strategies that can win on the backend, each at its
micro-batch (``"map"`` also at all images at once), on the first call for each layer (or all-layer
candidates) and K, and keeps the fastest (``Evaluator.strategy_choices``). Each plan is compiled
without running, then timed (once when every plan takes a second or more), so the first call
costs one evaluation per plan, plus compiling. Folding loses
where there is no prefix to share and the wide op's output is large (the first conv on
CPU), and micro-batching loses on small models whose whole batch fits in cache. A search
asks the same question every episode, so the measurement is paid once.

With ``calibration_images`` every candidate's BatchNorm statistics are re-estimated on them
before it is scored (``recalibrated``): a heavily pruned network is otherwise judged by the
dense network's statistics. The candidates then run with ``"map"`` (or ``"vmap"`` for
all-layer candidates).

Every strategy micro-batches the data (``batch_size`` images at a time) inside the jit,
which bounds memory and, on CPU, keeps activations in cache. With several devices the
candidate axis is sharded over them with ``jax.shard_map``; the same code serves one CPU,
forced CPU devices or a TPU slice. Params and data are always jit arguments, never
constants, so XLA cannot fold the shared prefix away at compile time.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from purl_jax.graph import Graph, Path
from purl_jax.masks import MaskError, Masks, apply_masks, check_masks, get_path, set_path

LAYER_STRATEGIES = ("auto", "fold", "vmap", "map")
STACKED_STRATEGIES = ("auto", "vmap", "map")
# Rows (candidates x images) per micro-batch on CPU: big enough for full vector units,
# small enough that a micro-batch's activations stay in cache.
CPU_ROWS = 256
WEIGHT_REUSE = 2**16
# Bytes a folded candidate holds per weight of the wide layer: measured on XLA:CPU (LeNet-5
# conv2, K = 64), each candidate in a fold group costs about 5.6 f32 copies of its kernel
# (the masked kernel, its layout for the wide op, the wide op's own copy).
FOLD_BYTES_PER_WEIGHT = 24
# Timed runs per strategy when "auto" measures (each plan compiled first, without running);
# the minimum counts. Once every plan takes LONG_CALL_SECONDS, one run each is enough: timer
# noise is small there, and on a reward set of thousands of images each run costs as much
# as a search step.
MEASURE_RUNS = 2
LONG_CALL_SECONDS = 1.0


class Scores(NamedTuple):
    accuracy: jax.Array
    loss: jax.Array


# -- pure pieces --------------------------------------------------------------------------

@custom_vmap
def _candidates_first(y: jax.Array) -> jax.Array:
    """Identity; under vmap it puts the candidate axis first (one explicit transpose).

    Without it the wide layer leaves the candidate axis next to the channels, and XLA
    carries that layout through the suffix, transposing at every later conv.
    """
    return y


@_candidates_first.def_vmap
def _candidates_first_rule(axis_size, in_batched, y):
    del axis_size
    return y, in_batched[0]


def _fold_after(module_path: Path):
    """A flax interceptor that applies ``_candidates_first`` to one module's output."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and tuple(context.module.scope.path) == module_path:
            return _candidates_first(out)
        return out

    return interceptor


def _masked(variables, masks):
    return {**variables, "params": apply_masks(variables["params"], masks)}


def recalibrated(model: nn.Module, variables: dict, images: jax.Array) -> dict:
    """``variables`` with every BatchNorm's statistics re-estimated on ``images`` (one batch).

    Pruning shifts every later layer's activation statistics, so the dense running averages
    misjudge a pruned network: ResNet-20 on Fashion-MNIST with 90% of its weights pruned
    scores 10% with them and 69% with statistics from 128 training images (no training).
    The model runs in train mode (each BatchNorm normalises by its batch's statistics) and
    the statistics are read at every BatchNorm's input, so they hold whatever the model's
    momentum.
    """
    stats = {}

    def capture(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            x = args[0]
            features = {a % x.ndim for a in np.atleast_1d(module.axis)}
            axes = tuple(a for a in range(x.ndim) if a not in features)
            stats[tuple(module.scope.path)] = dict(mean=x.mean(axes), var=x.var(axes))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, images, train=True, mutable=["batch_stats"],
                    rngs={"dropout": jax.random.key(0)})
    batch_stats = variables["batch_stats"]
    for path, leaf in stats.items():
        batch_stats = set_path(batch_stats, path, {**get_path(batch_stats, path), **leaf})
    return {**variables, "batch_stats": batch_stats}


def _prepared(model, variables, calibration):
    return variables if calibration is None else recalibrated(model, variables, calibration)


def _logits(model, variables, images, fold_at: Path | None = None) -> jax.Array:
    apply = lambda: model.apply(variables, images, train=False)
    if fold_at is None:
        return apply()
    with nn.intercept_methods(_fold_after(fold_at)):
        return apply()


def _stats(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted sums of correct predictions and cross-entropy over the last batch axis."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    nll = -(jax.nn.log_softmax(logits) * onehot).sum(-1)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return (correct * weights).sum(-1), (nll * weights).sum(-1)


def _over_chunks(logits_fn, images, labels, weights, chunk: int):
    """Sums the stats of ``logits_fn`` over micro-batches of ``chunk`` images (a sequential map).

    Masks are applied before this loop, never inside it, so they cost once per call.
    """
    stats = lambda x, y, w: _stats(logits_fn(x), y, w)
    n = images.shape[0] // chunk
    if n == 1:
        return stats(images, labels, weights)
    split = lambda a: a.reshape(n, chunk, *a.shape[1:])
    correct, loss = jax.lax.map(lambda c: stats(*c), (split(images), split(labels), split(weights)))
    return correct.sum(0), loss.sum(0)


def _map(fn, xs):
    """``lax.map``, without the loop for a single candidate (the loop's own program then)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], fn(jax.tree.map(lambda a: a[0], xs)))
    return jax.lax.map(fn, xs)


def _score_one(model, chunk, variables, images, labels, weights):
    """Sums over all images for already masked ``variables``."""
    return _over_chunks(lambda x: _logits(model, variables, x), images, labels, weights, chunk)


def _score_stacked(model, strategy, chunk, variables, calibration, images, labels, weights, stacked):
    """Sums over all images for each of the stacked candidates: ([K], [K])."""
    if strategy == "map":
        one = lambda m: _score_one(model, chunk, _prepared(model, _masked(variables, m), calibration),
                                   images, labels, weights)
        return _map(one, stacked)
    each = jax.vmap(lambda m: _prepared(model, _masked(variables, m), calibration))(stacked)
    logits = lambda x: jax.vmap(lambda v: _logits(model, v, x))(each)
    return _over_chunks(logits, images, labels, weights, chunk)


def _score_layer(model, strategy, path, chunk, group, variables, calibration, images, labels, weights,
                 masks, layer_masks):
    """Like ``_score_stacked`` for candidates differing only in the kernel at ``path``.

    ``group``: candidates folded together; with fewer than K, groups run one after another
    so that only ``group`` masked kernels are live at a time.
    """
    base = _masked(variables, masks)
    kernel = get_path(variables["params"], path)
    with_kernel = lambda k: {**base, "params": set_path(base["params"], path, k)}
    if strategy == "map":
        one = lambda m: _score_one(model, chunk, _prepared(model, with_kernel(jnp.where(m, kernel, 0)),
                                                           calibration), images, labels, weights)
        return _map(one, layer_masks)
    fold_at = path[:-1] if strategy == "fold" else None

    def folded(group_masks):
        # vmap's rule for a batched kernel puts the candidate axis just before the output
        # features; laying the (bool) masks out so once keeps that transpose out of the loop.
        kernels = jnp.where(jnp.moveaxis(group_masks, 0, -2), kernel[..., None, :], 0)
        one = lambda k, x: _logits(model, with_kernel(k), x, fold_at)
        logits = lambda x: jax.vmap(one, in_axes=(kernels.ndim - 2, None))(kernels, x)
        return _over_chunks(logits, images, labels, weights, chunk)

    k = layer_masks.shape[0]
    if group >= k:
        return folded(layer_masks)
    correct, loss = jax.lax.map(folded, layer_masks.reshape(k // group, group, *layer_masks.shape[1:]))
    return correct.reshape(k), loss.reshape(k)


def _sharded(fn, mesh: Mesh | None):
    """Splits the candidate axis of the last argument over ``mesh``; the rest is replicated."""
    if mesh is None:
        return fn

    def wrapped(*args):
        specs = (P(),) * (len(args) - 1) + (P("c"),)
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P("c"), check_vma=False)(*args)

    return wrapped


# -- choices ------------------------------------------------------------------------------

def choose_chunk(num_images: int, rows_per_image: int, backend: str, wide_weights: int = 0) -> int:
    """Images per micro-batch: about ``CPU_ROWS`` rows on CPU, all images on accelerators.

    Every micro-batch reads the wide layer's ``wide_weights`` (K kernels) again, so a chunk
    holds at least one image per ``WEIGHT_REUSE`` of them: a big dense layer is
    bandwidth-bound on small chunks.
    """
    if backend != "cpu":
        return num_images
    rows = max(CPU_ROWS // max(1, rows_per_image), -(-wide_weights // WEIGHT_REUSE))
    return max(1, min(num_images, rows))


# -- the evaluator ------------------------------------------------------------------------

class Evaluator:
    """Accuracy and cross-entropy of masked variants of one model on fixed held-out data.

    ``strategy`` ("auto" or a name from ``LAYER_STRATEGIES`` / ``STACKED_STRATEGIES``) is the
    default for every call; each call may override it. ``batch_size`` is the micro-batch
    (images per inner step), ``None`` to pick per backend. ``devices`` (default: all of the
    default backend) are the devices the candidate axis is sharded over.
    """

    def __init__(self, model, variables, images, labels, *, graph: Graph, strategy: str = "auto",
                 batch_size: int | None = None, devices=None, calibration_images=None):
        if "params" not in variables:
            raise ValueError("variables need a 'params' collection")
        self.model, self.graph = model, graph
        self.default_strategy = _check_strategy(strategy, LAYER_STRATEGIES + STACKED_STRATEGIES)
        images, labels = _check_data(images, labels, graph)
        if calibration_images is not None:
            if "batch_stats" not in variables:
                raise ValueError("calibration_images re-estimate BatchNorm statistics, and this model has none")
            calibration_images, _ = _check_data(calibration_images, np.zeros(len(calibration_images), int),
                                                graph, what="calibration_images")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.batch_size = batch_size
        devices = list(devices) if devices is not None else jax.devices()
        self.backend = devices[0].platform
        self.mesh = Mesh(np.array(devices), ("c",)) if len(devices) > 1 else None
        self.num_images = images.shape[0]
        self._params_structure = jax.tree.structure(variables["params"])
        put = (lambda a: jax.device_put(a, NamedSharding(self.mesh, P()))) if self.mesh else (
            lambda a: jax.device_put(a, devices[0]))
        self._variables = jax.tree.map(put, variables)
        self._images, self._labels = images, labels
        self.calibration_images = None if calibration_images is None else put(jnp.asarray(calibration_images))
        self._data: dict[int, tuple] = {}
        self._put = put
        # Memory every call holds anyway: the variables and the data.
        self._held_bytes = sum(x.nbytes for x in jax.tree.leaves(variables)) + images.nbytes
        self._jits: dict[tuple, Any] = {}
        self._lower_only = False
        # (layer name or "all layers", K) -> (strategy, images per micro-batch) that "auto"
        # measured fastest.
        self.strategy_choices: dict[tuple[str, int], tuple[str, int]] = {}

    # -- public ---------------------------------------------------------------------------

    def evaluate(self, masks: Masks) -> Scores:
        """Scores of one mask tree (scalars)."""
        self._check_tree(masks)
        if not jax.tree.leaves(masks):  # an all-true mask is no mask, and gives a candidate axis
            first = self.graph.layers[0]
            masks = set_path(masks, first.path, jnp.ones(first.kernel_shape, bool))
        stacked = jax.tree.map(lambda m: jnp.asarray(m)[None], masks)
        scores = self.evaluate_stacked(stacked, strategy="map")
        return Scores(scores.accuracy[0], scores.loss[0])

    def evaluate_layer(self, masks: Masks, layer_name: str, layer_masks: jax.Array, *,
                       strategy: str | None = None) -> Scores:
        """Scores of K candidates equal to ``masks`` except for ``layer_name``'s kernel mask."""
        try:
            layer = self.graph.layer(layer_name)
        except KeyError as e:
            raise MaskError(str(e.args[0])) from None
        self._check_tree(masks)
        layer_masks = jnp.asarray(layer_masks)
        expect = tuple(layer.kernel_shape)
        if layer_masks.ndim != len(expect) + 1 or tuple(layer_masks.shape[1:]) != expect:
            raise MaskError(f"layer_masks for {layer_name} must have shape (K, {', '.join(map(str, expect))}),"
                            f" got {tuple(layer_masks.shape)}")
        if layer_masks.dtype != jnp.bool_:
            raise MaskError(f"layer_masks must be bool, got {layer_masks.dtype}")
        k = _check_k(layer_masks.shape[0])
        strategy = self._strategy(strategy, LAYER_STRATEGIES)
        masks = set_path(masks, layer.path, None)  # the candidates replace it
        key = lambda s: ("layer", s, layer.path)
        if self.calibration_images is not None and strategy in ("fold", "vmap"):
            raise ValueError(f"strategy {strategy!r} cannot re-estimate BatchNorm statistics per candidate; "
                             "use 'map' or 'auto'")
        plans = ((("map",) if self.calibration_images is not None else ("fold", "map")) if strategy == "auto"
                 else (strategy,))
        return self._auto(layer_name, k, [key(s) for s in plans], (masks, layer_masks), layer.params)

    def evaluate_stacked(self, stacked_masks: Masks, *, strategy: str | None = None) -> Scores:
        """Scores of K candidates; every mask leaf carries a leading K axis."""
        k = self._check_stacked(stacked_masks)
        strategy = self._strategy(strategy, STACKED_STRATEGIES)
        # CPU runs the grouped convs of a vmap badly (4-13x slower, and K x the memory):
        # "auto" never tries it there.
        plans = ((("map",) if self.backend == "cpu" else ("vmap", "map")) if strategy == "auto"
                 else (strategy,))
        return self._auto("all layers", k, [("stacked", s) for s in plans], (stacked_masks,), 0)

    # -- internals ------------------------------------------------------------------------

    def _strategy(self, strategy, allowed) -> str:
        if strategy is None:  # the default may suit only the other entry point
            strategy = self.default_strategy if self.default_strategy in allowed else "auto"
        return _check_strategy(strategy, allowed)

    def _auto(self, name: str, k: int, keys: list[tuple], candidate_args: tuple, wide: int) -> Scores:
        """Runs the one plan there is, or the fastest of several: each key at its own
        micro-batch and, for ``"map"`` unless ``batch_size`` was given, at all images in one
        batch (a loop's single call). The choice is measured once per ``name`` and K and kept."""
        plans = {}
        for key in keys:
            group, k_pad, chunk = self._layout(key, k, wide)
            # One batch only where it holds one candidate's rows: a fold's micro-batch is
            # what bounds its memory (K x the images' activations otherwise).
            whole = [] if self.batch_size or key[1] in ("fold", "vmap") else [self.num_images]
            for c in dict.fromkeys([chunk, *whole]):
                plans[(key[1], c)] = functools.partial(self._run, key, k, k_pad, group, c, candidate_args)
        if len(plans) == 1:
            return next(iter(plans.values()))()
        choice = self.strategy_choices.get((name, k))
        if choice in plans:
            return plans[choice]()
        if self._lower_only:  # ``compiled``: the first plan's program
            return next(iter(plans.values()))()
        scores, self.strategy_choices[(name, k)] = _fastest(plans, self._compile)
        return scores

    def _compile(self, plan: Callable[[], Scores]) -> None:
        """Compiles ``plan``'s program without running it (jit keeps it for the call)."""
        self._lower_only = True
        try:
            plan()
        except _Lowered:
            pass
        finally:
            self._lower_only = False

    def _layout(self, key, k, wide) -> tuple[int, int, int]:
        """Candidates per fold group, K padded to fill every device and group, and the
        default micro-batch."""
        devices = self.mesh.size if self.mesh else 1
        local = -(-k // devices)
        batched = key[1] in ("fold", "vmap")  # candidates share each micro-batch's rows
        group = local
        if key[0] == "layer" and batched:
            group = -(-local // -(-local // self._max_group(local, wide)))
        k_pad = devices * -(-local // group) * group
        rows = group if batched else 1
        chunk = self.batch_size or choose_chunk(self.num_images, rows, self.backend,
                                                group * wide if batched else 0)
        return group, k_pad, min(chunk, self.num_images)

    def _run(self, key, k, k_pad, group, chunk, candidate_args) -> Scores:
        candidates = list(candidate_args)
        candidates[-1] = jax.tree.map(lambda a: _pad_candidates(jnp.asarray(a), k_pad), candidates[-1])
        fn = self._jit(key, chunk, group)
        args = (self._variables, self.calibration_images, *self._padded_data(chunk), *candidates)
        if self._lower_only:
            raise _Lowered(fn.lower(*args).compile())
        accuracy, loss = fn(*args)
        return Scores(accuracy, loss) if k_pad == k else Scores(accuracy[:k], loss[:k])

    def _max_group(self, k: int, wide: int) -> int:
        """Most candidates whose folded kernels (``wide`` weights each) fit in the memory the
        call holds anyway: the K bool candidate masks, the variables and the data. This keeps
        peak memory within about twice a single evaluation's."""
        held = k * wide + self._held_bytes
        return max(1, held // (FOLD_BYTES_PER_WEIGHT * max(wide, 1)))

    def compiled(self, method: str, *args, **kwargs):
        """The compiled XLA program a call would run (for ``memory_analysis``, ``cost_analysis``)."""
        self._lower_only = True
        try:
            getattr(self, method)(*args, **kwargs)
        except _Lowered as done:
            return done.compiled
        finally:
            self._lower_only = False
        raise ValueError(f"{method} runs no compiled program")

    def _jit(self, key, chunk, group):
        full = (*key, chunk, group)
        if full not in self._jits:
            kind, strategy, *path = key
            if kind == "layer":
                body = functools.partial(_score_layer, self.model, strategy, path[0], chunk, group)
            else:
                body = functools.partial(_score_stacked, self.model, strategy, chunk)
            mean = lambda *a, body=body: tuple(x / self.num_images for x in body(*a))
            self._jits[full] = jax.jit(_sharded(mean, self.mesh))
        return self._jits[full]

    def _padded_data(self, chunk: int):
        if chunk not in self._data:
            n = self.num_images
            pad = -n % chunk
            weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
            images = np.concatenate([self._images, np.zeros((pad, *self._images.shape[1:]), self._images.dtype)])
            labels = np.concatenate([self._labels, np.zeros(pad, self._labels.dtype)])
            self._data[chunk] = tuple(self._put(jnp.asarray(a)) for a in (images, labels, weights))
        return self._data[chunk]

    def _check_tree(self, masks: Masks) -> None:
        structure = jax.tree.structure(masks, is_leaf=lambda x: x is None)
        if structure != self._params_structure:
            raise MaskError(f"mask tree does not match the params tree:\n{structure}\nvs\n{self._params_structure}")
        check_masks(self._variables["params"], masks)

    def _check_stacked(self, stacked: Masks) -> int:
        structure = jax.tree.structure(stacked, is_leaf=lambda x: x is None)
        if structure != self._params_structure:
            raise MaskError(f"stacked mask tree does not match the params tree:\n{structure}\n"
                            f"vs\n{self._params_structure}")
        ks = {jnp.shape(m)[0] if jnp.ndim(m) else None for m in jax.tree.leaves(stacked)}
        if not ks:
            raise MaskError("stacked masks have no mask leaves, so no candidate axis")
        if len(ks) != 1 or None in ks:
            raise MaskError(f"every stacked mask leaf needs the same leading K axis, got sizes {sorted(ks, key=str)}")
        k = _check_k(ks.pop())
        # Checked by shape, not on a slice: a slice per leaf is a device op on every call.
        one = jax.tree.map(lambda m: jax.ShapeDtypeStruct(jnp.shape(m)[1:], jnp.result_type(m)), stacked)
        check_masks(self._variables["params"], one)
        return k


class _Lowered(Exception):
    """Carries a compiled program out of ``Evaluator._run`` for ``Evaluator.compiled``."""

    def __init__(self, compiled):
        super().__init__("lowered")
        self.compiled = compiled


def _fastest(runs: dict[tuple[str, int], Any], compile_plan: Callable[[Any], None]
             ) -> tuple[Scores, tuple[str, int]]:
    """Compiles each plan of ``runs`` ((strategy, micro-batch) -> call), then runs each up to
    ``MEASURE_RUNS`` times (once when all are long); the fastest by its best time, with its
    scores. A compiling *run* would cost one more evaluation per plan."""
    for run in runs.values():
        compile_plan(run)
    scores, best = {}, {name: float("inf") for name in runs}
    for _ in range(MEASURE_RUNS):
        for name, run in runs.items():
            start = time.perf_counter()
            scores[name] = jax.block_until_ready(run())
            best[name] = min(best[name], time.perf_counter() - start)
        if min(best.values()) >= LONG_CALL_SECONDS:
            break
    choice = min(best, key=best.get)
    return scores[choice], choice


def _pad_candidates(a: jax.Array, k_pad: int) -> jax.Array:
    """Repeats the last candidate so K divides evenly over devices."""
    extra = k_pad - a.shape[0]
    return a if extra == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])


def _check_k(k: int) -> int:
    if k < 1:
        raise MaskError("no candidates: K must be at least 1")
    return k


def _check_strategy(strategy: str, allowed) -> str:
    if strategy not in allowed:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(set(allowed))}")
    return strategy


def _check_data(images, labels, graph: Graph, what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    want = tuple(graph.input_shape)
    if images.ndim != len(want) + 1 or tuple(images.shape[1:]) != want:
        raise ValueError(f"{what} must have shape (N, {', '.join(map(str, want))}), got {images.shape}")
    if images.shape[0] < 1:
        raise ValueError(f"{what} must hold at least one example")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({images.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    return images.astype(np.float32), labels.astype(np.int32)
