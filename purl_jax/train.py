"""Dense training and masked fine-tuning, data parallel over all devices of all processes.

One jitted step serves both: with ``masks`` the gradients going into the optimizer and
the updates coming out are masked (``masked``), and the params are masked again after the
update, so pruned weights stay exactly zero whatever momentum or weight decay do. The
batch is sharded over a 'data' mesh axis, params and optimizer state are replicated; on
one device this is plain single-device training. In a multi-process run (a TPU VM slice,
``jax.distributed``) the mesh spans every process's devices and each process feeds the
rows of the global batch that its own devices hold. With a ``workdir`` (local or
``gs://``) the run writes ``metrics.jsonl`` (process 0) and orbax checkpoints (all
processes) in ``workdir/checkpoints/<checkpoint_name>`` and resumes from them (mid-epoch too:
batches are deterministic per (seed, epoch)). Datasets too large for memory (ImageNet) are
``StreamedDataset``s: training and evaluation read them batch by batch, the same way.
"""

from __future__ import annotations

import importlib.util

import functools
import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from purl_jax import checkpoint as ckpt
from purl_jax import files
from purl_jax.data import (Augment, Dataset, Splits, StreamedDataset, default_augment, iterate_batches,
                           load_dataset)
from purl_jax.graph import Graph, analyze
from purl_jax.masks import Masks, apply_masks, check_masks
from purl_jax.models import get_model


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, so a search config can extend its dense recipe.

    ``overrides`` are ``--config.a.b=value`` strings, parsed as ``purl-jax train/prune`` parse
    them, so a benchmark script takes the same overrides as the command line.
    """
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if not overrides:
        return config
    from absl import flags
    from ml_collections import config_flags

    argv = ["load_config", *overrides]
    values = flags.FlagValues()
    try:
        if not all(o.startswith("--config.") for o in overrides):
            raise flags.Error("expected --config.<field>=<value>")
        config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
        values(argv)
    except (AttributeError, KeyError) as e:
        raise ValueError(f"bad config override in {list(overrides)}: unknown field "
                         f"{unknown_field_message(e)}") from None
    except flags.Error as e:
        raise ValueError(f"bad config override in {list(overrides)}: {e}") from None
    return values.config


def unknown_field_message(e: BaseException) -> str:
    """The readable text of an unknown ``--config.<field>`` override: ml_collections raises
    an AttributeError around a KeyError whose message (repr'd by ``str``) is the text."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    return ". ".join(line.strip() for line in text.splitlines() if line.strip())


def base_config(augment: bool | dict = False) -> ml_collections.ConfigDict:
    """The full config schema with defaults; ``configs/*.py`` start from it.

    ``augment`` is set here because a ConfigDict field keeps its first type: False/True
    (the dataset's default augmentation) or dict(crop_padding=, flip=).
    """
    c = ml_collections.ConfigDict()
    c.model = "lenet5"
    c.model_kwargs = {}
    c.dataset = "mnist"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.data_source = "auto"  # load_dataset's source: "auto", "idx" (*-ubyte.gz files) or "tfds"
    c.validation_size = 5000
    c.pad_to = ml_collections.FieldReference(None, field_type=int)
    c.image_size = 224  # crop size of streamed datasets (those too large for memory: ImageNet)
    c.augment = augment
    c.seed = 0
    # holds the validation split out of train; apart from ``seed`` so that a search with any
    # seed draws its reward set from images its dense model was not trained on
    c.split_seed = 0
    c.mask_policy = dict(exclude_first=True, exclude_last=True, exclude=())
    c.train = ml_collections.ConfigDict(dict(
        optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=0, epochs=10, batch_size=128, label_smoothing=0.0,
        eval_batch_size=1000, checkpoint_every_steps=1000))
    c.finetune = ml_collections.ConfigDict(c.train.to_dict())
    # > 0: that share of the loss is distillation from the dense model (``distillation_loss``)
    c.finetune.distill = 0.0
    c.finetune.distill_temperature = 4.0
    c.finetune.rounds = 1  # > 1: gradual pruning over that many rounds (search.finetune)
    c.finetune.final_epochs = 0  # > 0: the last round's epochs (others: finetune.epochs)
    c.dense_checkpoint = ""
    return c


# -- optimizer --------------------------------------------------------------------------

def masked(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``inner`` that keeps pruned weights frozen: ``update(..., masks=masks)`` masks the
    gradients going in (so momentum and Adam moments of pruned weights stay zero) and the
    updates coming out (so weight decay cannot move them). ``masks=None``: dense."""
    inner = optax.with_extra_args_support(inner)

    def update(updates, state, params=None, *, masks: Masks = None, **extra):
        if masks is None:
            return inner.update(updates, state, params, **extra)
        updates, state = inner.update(apply_masks(updates, masks), state, params, **extra)
        return apply_masks(updates, masks), state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def _kernels_only(params: Any) -> Any:
    return jax.tree.map(lambda p: p.ndim > 1, params)


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """Linear warmup over ``warmup_epochs``, then cosine decay to 0 or a constant rate."""
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.learning_rate, max(1, total - warmup))
    elif cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.learning_rate)
    else:
        raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """SGD (momentum, Nesterov, L2 weight decay) or AdamW, with weight decay on kernels only."""
    lr = learning_rate_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay, mask=_kernels_only),
            optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
        )
    elif cfg.optimizer == "adam":
        tx = optax.adamw(lr, weight_decay=cfg.weight_decay, mask=_kernels_only)
    else:
        raise ValueError(f"train.optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    return masked(tx)


# -- steps ------------------------------------------------------------------------------

def _split(variables: Mapping) -> tuple[Any, dict]:
    if "params" not in variables:
        raise ValueError(f"variables need a 'params' collection, got {sorted(variables)}")
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def distillation_loss(logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
    """Mean KL(teacher || student) of the temperature-softened outputs, times T^2 so its
    gradient keeps the scale of the cross-entropy's as T changes (Hinton et al. 2015)."""
    log_p = jax.nn.log_softmax(logits / temperature)
    log_q = jax.nn.log_softmax(teacher_logits / temperature)
    return temperature ** 2 * optax.losses.kl_divergence_with_log_targets(log_p, log_q).mean()


def init_state(tx: optax.GradientTransformation, variables: Mapping, masks: Masks | None,
               rng: jax.Array) -> dict:
    """The state ``masked_train_step`` advances: ``variables``' params (masked), their
    optimiser state, the other collections, step 0 and ``rng`` (PRNG key data)."""
    params, model_state = _split(variables)
    if masks is not None:
        params = apply_masks(params, masks)
    return dict(params=params, model_state=dict(model_state), opt_state=tx.init(params),
                step=jnp.zeros((), jnp.int32), rng=rng)


def masked_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs,
                      label_smoothing: float, state: dict, masks: Masks,
                      images: jax.Array, labels: jax.Array, teacher: dict | None = None,
                      distill: tuple[float, float] = (0.0, 1.0)) -> tuple[dict, dict]:
    """One masked step (``fit``'s, and the reward fine-tuning's). With ``teacher`` variables, ``distill = (share, temperature)``
    mixes ``distillation_loss`` from the teacher's logits into the cross-entropy."""
    rng, dropout = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    teacher_logits = None if teacher is None else jax.lax.stop_gradient(
        model.apply(teacher, images, train=False))

    def loss_fn(params):
        logits, new_model_state = model.apply(
            {"params": params, **state["model_state"]}, images, train=True,
            mutable=list(state["model_state"]), rngs={"dropout": dropout})
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        if teacher_logits is not None:
            share, temperature = distill
            loss = (1 - share) * loss + share * distillation_loss(logits, teacher_logits, temperature)
        return loss, (logits, new_model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"], masks=masks)
    params = optax.apply_updates(state["params"], updates)
    if masks is not None:
        params = apply_masks(params, masks)
    new = dict(params=params, model_state=dict(model_state), opt_state=opt_state,
               step=state["step"] + 1, rng=jax.random.key_data(rng))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new, dict(loss=loss, accuracy=accuracy)


def _eval_step(model: nn.Module, variables: dict, masks: Masks, images: jax.Array,
               labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Summed loss and correct count over the examples with weight 1 (the rest is padding)."""
    params, rest = _split(variables)
    if masks is not None:
        params = apply_masks(params, masks)
    logits = model.apply({"params": params, **rest}, images, train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return jnp.stack([jnp.sum(loss * weights), jnp.sum(correct * weights)])


# -- sharding ---------------------------------------------------------------------------

def data_mesh() -> Mesh:
    """All devices, of every process, on one 'data' axis."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def _shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def _put_batch(batch: tuple[np.ndarray, ...], sharded: NamedSharding) -> tuple[jax.Array, ...]:
    """A global batch as arrays sharded over 'data'. Every process builds the same global
    batch (deterministic per seed and epoch) and transfers only the rows its own devices
    hold; in one process that is all of it, a plain ``device_put``."""
    n = len(batch[0])
    rows = n // sharded.mesh.size
    starts = sorted({index[0].start or 0
                     for index in sharded.addressable_devices_indices_map((n,)).values()})
    if len(starts) * rows == n:
        return jax.device_put(batch, sharded)
    take = np.concatenate([np.arange(s, s + rows) for s in starts])  # in mesh order
    return tuple(jax.make_array_from_process_local_data(sharded, x[take], (n, *x.shape[1:]))
                 for x in batch)


def _replicate(tree: Any, replicated: NamedSharding) -> Any:
    """``tree`` on every device of the mesh. Onto other processes' devices it goes from host
    memory: ``device_put`` of a device array there makes arrays whose shards cannot be read
    back (orbax fails to save them, jax 0.10)."""
    if not replicated.is_fully_addressable:
        tree = jax.tree.map(np.asarray, tree)
    return jax.device_put(tree, replicated)


# -- batches ----------------------------------------------------------------------------

def _batches(dataset: Dataset | StreamedDataset, batch_size: int, *, train: bool, seed: int = 0,
             epoch: int = 0, start: int = 0,
             augment: Augment | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of an in-memory or streamed dataset from batch ``start`` on: ``train``
    shuffled and augmented, whole batches only; otherwise in order, every example."""
    if isinstance(dataset, StreamedDataset):
        if augment is not None:
            raise ValueError(f"{dataset.name} is streamed with its own augmentation (random-resized "
                             "crop and flip): set config.augment = False")
        return dataset.batches(batch_size, train=train, seed=seed, epoch=epoch, start=start)
    if train:  # the skipped batches are drawn too, to leave the augmentation's rng where it was
        return itertools.islice(iterate_batches(dataset.images, dataset.labels, batch_size,
                                                rng_seed=seed, epoch=epoch, augment=augment), start, None)
    return iterate_batches(dataset.images, dataset.labels, batch_size, rng_seed=0, shuffle=False,
                           drop_remainder=False)


# -- evaluation -------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _jitted_eval(model: nn.Module):
    # Cached per model so repeated evaluations (every epoch) reuse the compiled step.
    return jax.jit(partial(_eval_step, model))


def evaluate_dataset(model: nn.Module, variables: Mapping, dataset: Dataset | StreamedDataset, *,
                     masks: Masks = None, batch_size: int = 1000) -> dict:
    """Accuracy and mean cross-entropy over all of ``dataset`` (masks applied to params)."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate an empty dataset")
    mesh = data_mesh()
    replicated, sharded = _shardings(mesh)
    batch_size = -(-min(batch_size, len(dataset)) // mesh.size) * mesh.size
    variables = _replicate(dict(variables), replicated)
    masks = None if masks is None else _replicate(masks, replicated)
    step = _jitted_eval(model)
    totals = jnp.zeros(2)
    for images, labels in _batches(dataset, batch_size, train=False):
        n = len(labels)
        weights = np.zeros(batch_size, np.float32)
        weights[:n] = 1
        pad = ((0, batch_size - n),)
        batch = (np.pad(images, pad + ((0, 0),) * (images.ndim - 1)), np.pad(labels, pad), weights)
        totals = totals + step(variables, masks, *_put_batch(batch, sharded))
    loss, correct = np.asarray(totals) / len(dataset)
    return dict(accuracy=float(correct), loss=float(loss))


# -- fit --------------------------------------------------------------------------------

def _log(workdir: epath.Path | None, record: dict) -> None:
    if workdir is not None:
        files.append_line(workdir / "metrics.jsonl", json.dumps(record))


def fit(model: nn.Module, variables: Mapping, data: Splits, cfg: ml_collections.ConfigDict, *,
        masks: Masks = None, workdir: str | os.PathLike | None = None, seed: int = 0,
        desc: str = "train", augment: Augment | None = None,
        teacher: Mapping | None = None, checkpoint_name: str = "train") -> tuple[dict, list[dict]]:
    """Trains ``variables`` for ``cfg.epochs`` on ``data.train``; returns the final variables
    (masked when ``masks`` is given) and one metrics dict per epoch (with validation).

    ``cfg.distill`` > 0 (a fine-tuning recipe's option) distils from ``teacher``, by
    default the unmasked ``variables`` given: for fine-tuning, the dense model.

    With ``workdir``, checkpoints go to ``workdir/checkpoints/<checkpoint_name>`` (a plain
    folder name: no path separator or whitespace) and a run that finds one there resumes from
    it; epoch metrics are appended to ``workdir/metrics.jsonl``. ``desc`` only labels the
    progress bar and the metrics records.
    """
    if checkpoint_name in ("", ".", "..") or any(c in "/\\" or c.isspace() for c in checkpoint_name):
        raise ValueError(f"checkpoint_name must be a plain folder name, got {checkpoint_name!r}")
    share = cfg.get("distill", 0.0)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"distill must be in [0, 1], got {share}")
    teacher = (variables if teacher is None else teacher) if share > 0 else None
    if masks is not None:
        check_masks(_split(variables)[0], masks)
    n_train = len(data.train)
    steps_per_epoch = n_train // cfg.batch_size
    mesh = data_mesh()
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {n_train} training examples")
    if cfg.batch_size % mesh.size:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {mesh.size} devices")
    total_steps = cfg.epochs * steps_per_epoch
    tx = make_optimizer(cfg, steps_per_epoch)
    replicated, sharded = _shardings(mesh)
    state = init_state(tx, variables, masks, jax.random.key_data(jax.random.key(seed)))
    # Copied first: the step donates the state, which must not delete the caller's arrays.
    state = _replicate(jax.tree.map(jnp.array, state), replicated)
    masks = None if masks is None else _replicate(masks, replicated)
    teacher = None if teacher is None else _replicate(teacher, replicated)
    history: list[dict] = []

    workdir = None if workdir is None else files.path(workdir)
    mngr = None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        mngr = ckpt.manager(workdir / "checkpoints" / checkpoint_name)
        restored = ckpt.restore(mngr, dict(state, masks=ckpt.flat_masks(masks)))
        if restored is not None:
            state, meta = restored
            saved_masks = state.pop("masks")
            if masks is not None and not all(  # same layers, else restore has raised
                    np.array_equal(saved_masks[k], v) for k, v in ckpt.flat_masks(masks).items()):
                raise ckpt.CheckpointError(
                    f"{workdir / 'checkpoints' / checkpoint_name} was made with other masks; "
                    "use another workdir")
            history = meta["history"]
    meta_config = json.loads(cfg.to_json_best_effort())

    def save(step: int) -> None:
        if mngr is not None:
            ckpt.save(mngr, step, dict(state, masks=ckpt.flat_masks(masks)),
                      dict(config=meta_config, history=history, finished=step >= total_steps))

    train_step = jax.jit(partial(masked_train_step, model, tx, cfg.label_smoothing,
                                 distill=(share, cfg.get("distill_temperature", 4.0))),
                         donate_argnums=0, out_shardings=replicated)
    lr = learning_rate_schedule(cfg, steps_per_epoch)
    step = int(state["step"])
    try:
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            start, sums = time.time(), jnp.zeros(2)
            batches = _batches(data.train, cfg.batch_size, train=True, seed=seed, epoch=epoch,
                               start=skip, augment=augment)
            bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", mininterval=2.0, leave=False)
            for i, batch in enumerate(batches, skip):
                state, metrics = train_step(state, masks, *_put_batch(batch, sharded), teacher)
                sums = sums + jnp.stack([metrics["loss"], metrics["accuracy"]])
                step += 1
                bar.update()
                if (i + 1) % 50 == 0:
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
                last_of_epoch = i + 1 == steps_per_epoch  # saved below, with the epoch's metrics
                if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and not last_of_epoch:
                    save(step)
            bar.close()
            train_loss, train_acc = np.asarray(sums) / (steps_per_epoch - skip)
            val = (evaluate_dataset(model, _variables(state), data.validation, masks=masks,
                                    batch_size=cfg.eval_batch_size) if len(data.validation) else {})
            record = dict(desc=desc, epoch=epoch + 1, step=step, lr=float(lr(step - 1)),
                          train_loss=float(train_loss), train_accuracy=float(train_acc),
                          **{f"val_{k}": v for k, v in val.items()},
                          seconds=round(time.time() - start, 2))
            history.append(record)
            _log(workdir, record)
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in record.items()))
            save(step)
    finally:
        if mngr is not None:
            mngr.close()
    return jax.tree.map(np.asarray, _variables(state)), history


def _variables(state: dict) -> dict:
    return {"params": state["params"], **state["model_state"]}


# -- configs to runs --------------------------------------------------------------------

def get_augment(config: ml_collections.ConfigDict) -> Augment | None:
    """``config.augment``: False/None = none, True = the dataset's default, a dict = Augment(**it)."""
    aug = config.augment
    if aug is None or aug is False:
        return None
    if aug is True:
        default = default_augment(config.dataset)
        if default is None:
            raise ValueError(f"{config.dataset} has no default augmentation: give "
                             "config.augment = dict(crop_padding=..., flip=...)")
        return default
    if isinstance(aug, ml_collections.ConfigDict):
        return Augment(**aug.to_dict())
    if isinstance(aug, Mapping):
        return Augment(**aug)
    raise ValueError(f"config.augment must be a bool or a dict, got {aug!r}")


def setup(config: ml_collections.ConfigDict) -> tuple[nn.Module, dict, Splits, Graph]:
    """The model, its initial variables (from ``config.seed``), the data and the graph."""
    splits = load_dataset(config.dataset, data_dir=config.data_dir, source=config.data_source,
                          validation_size=config.validation_size, split_seed=config.split_seed,
                          pad_to=config.pad_to, image_size=config.image_size)
    model = get_model(config.model, num_classes=splits.num_classes, **dict(config.model_kwargs))
    variables = jax.jit(model.init)(jax.random.key(config.seed), jnp.zeros((1, *splits.input_shape)))
    graph = analyze(model, variables, splits.input_shape)
    return model, variables, splits, graph


def _train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
           parts: tuple | None = None) -> tuple[dict, dict]:
    model, variables, splits, _ = parts or setup(config)
    workdir = files.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files.write_text(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
    start = time.time()
    variables, history = fit(model, variables, splits, config.train, workdir=workdir,
                             seed=config.seed, desc="train", augment=get_augment(config),
                             checkpoint_name="train")
    test = evaluate_dataset(model, variables, splits.test, batch_size=config.train.eval_batch_size)
    result = dict(model=config.model, dataset=config.dataset, epochs=config.train.epochs,
                  test_accuracy=test["accuracy"], test_loss=test["loss"],
                  val_accuracy=history[-1].get("val_accuracy") if history else None,
                  seconds_this_run=round(time.time() - start, 1), devices=jax.device_count())
    _log(workdir, dict(desc="test", **result))
    print(f"test accuracy {test['accuracy']:.4f}  loss {test['loss']:.4f}")
    return variables, result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """``purl-jax train``: trains the dense model of ``config`` in ``workdir`` (resuming
    from its checkpoints) and returns the final metrics, test accuracy included."""
    return _train(config, workdir)[1]


def check_dense_split(config: ml_collections.ConfigDict, dense_dir: str | os.PathLike) -> None:
    """Raises ``CheckpointError`` when the dense run in ``dense_dir`` was trained on images
    that ``config`` holds out for validation (another dataset, split seed, or a smaller
    validation split): the reward set comes from there, so the search would score masks on
    training images. A directory without a ``config.json`` is not checked."""
    path = files.path(dense_dir) / "config.json"
    if not path.exists():
        return
    dense = json.loads(path.read_text())
    dense_split = dense.get("split_seed", dense.get("seed", 0))  # older runs split by seed
    problems = []
    if dense.get("dataset", config.dataset) != config.dataset:
        problems.append(f"dataset {dense['dataset']!r}, not {config.dataset!r}")
    if dense_split != config.split_seed:
        problems.append(f"split_seed {dense_split}, not {config.split_seed}")
    if dense.get("validation_size", config.validation_size) < config.validation_size:
        problems.append(f"validation_size {dense['validation_size']}, smaller than {config.validation_size}")
    if problems:
        raise ckpt.CheckpointError(
            f"dense run {dense_dir} was trained with {', '.join(problems)}: "
            "part of this run's validation split (where the reward set comes from) was in its "
            "training data. Use the dense run's dataset, split_seed and validation_size.")


def load_dense(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
               parts: tuple | None = None) -> dict:
    """The trained dense variables: from ``config.dense_checkpoint`` (a ``purl-jax train``
    workdir) when set, otherwise trained now in ``workdir/dense`` (resumable).

    ``parts``: what ``setup(config)`` returned (model, initial variables, splits, graph),
    when the caller has it already, so the data is not loaded a second time; without it
    ``setup(config)`` is called here."""
    check_dense_split(config, config.dense_checkpoint or files.path(workdir) / "dense")
    parts = parts or setup(config)
    if config.dense_checkpoint:
        where = files.path(config.dense_checkpoint) / "checkpoints" / "train"
        variables, meta = ckpt.restore_variables(where, parts[1])
        if not meta.get("finished"):
            print(f"warning: {where} holds an unfinished run ({len(meta['history'])} epochs)")
        return variables
    return _train(config, files.path(workdir) / "dense", parts)[0]
