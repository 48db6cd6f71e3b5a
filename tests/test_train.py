"""Training: masked fine-tuning keeps zeros, batch stats, resume, CLI, checkpoints, data parallel."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import forced_cpu_devices_env
from purl_jax import train as train_lib
from purl_jax.checkpoint import CheckpointError, restore_variables
from purl_jax.data import Augment, DataError, Dataset, Splits
from purl_jax.graph import analyze
from purl_jax.main import run
from purl_jax.masks import init_masks, magnitude_masks
from purl_jax.models import ResNetCifar, get_model

REPO = Path(__file__).resolve().parents[1]


def tiny_splits(n: int = 64, shape=(8, 8, 1), seed: int = 0) -> Splits:
    """Random images whose label is the sign pattern of two pixels: learnable, 4 classes."""
    rng = np.random.default_rng(seed)

    def make(m):
        x = rng.normal(size=(m, *shape)).astype(np.float32)
        y = ((x[:, 0, 0, 0] > 0) * 2 + (x[:, 1, 1, 0] > 0)).astype(np.int32)
        return Dataset(x, y)

    return Splits("tiny", make(n), make(16), make(16), 4, (0.0,), (1.0,))


def tiny_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = train_lib.base_config().train
    cfg.update(dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.05,
                    epochs=2, batch_size=16, eval_batch_size=16, checkpoint_every_steps=0))
    cfg.update(overrides)
    return cfg


def tiny_mlp():
    model = get_model("lenet_300_100", num_classes=4, features=(16, 8))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return model, variables, analyze(model, variables, (8, 8, 1))


def tiny_resnet():
    model = ResNetCifar(depth=8, num_classes=4, width=4)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return model, variables, analyze(model, variables, (8, 8, 1))


@pytest.mark.parametrize("optimizer,build", [("sgd", tiny_resnet), ("adam", tiny_mlp)])
def test_masked_weights_stay_exactly_zero(optimizer, build):
    model, variables, graph = build()
    masks = magnitude_masks(variables["params"], init_masks(variables["params"], graph), graph, 0.5)
    cfg = tiny_cfg(optimizer=optimizer, learning_rate=0.05 if optimizer == "sgd" else 1e-2,
                   weight_decay=0.1)
    out, history = train_lib.fit(model, variables, tiny_splits(), cfg, masks=masks)
    assert len(history) == 2 and "val_accuracy" in history[-1]
    checked = 0
    for layer in graph.layers:
        mask = masks
        for key in layer.path:
            mask = mask[key]
        if mask is None:
            continue
        before = np.asarray(_get(variables["params"], layer.path))
        after = np.asarray(_get(out["params"], layer.path))
        mask = np.asarray(mask)
        assert np.all(after[~mask] == 0.0), layer.name  # exactly zero, not just small
        assert not np.allclose(after[mask], before[mask]), layer.name  # the rest trained
        checked += 1
    assert checked >= 1
    if "batch_stats" not in variables:
        return
    # Batch-norm statistics are updated in training (mutable batch_stats, train=True).
    before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(out["batch_stats"])
    assert len(after) == len(before) > 0
    assert all(not np.allclose(a, b) for a, b in zip(after, before))


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def test_distillation_loss_is_scaled_kl():
    s, t = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.0, 3.0, -1.0]])
    assert float(train_lib.distillation_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    p, q = jax.nn.softmax(s / 2.0), jax.nn.softmax(t / 2.0)
    kl = float(jnp.sum(q * (jnp.log(q) - jnp.log(p))))
    assert float(train_lib.distillation_loss(s, t, 2.0)) == pytest.approx(4.0 * kl, rel=1e-5)


def test_fine_tuning_with_distill_follows_the_teacher_not_the_labels():
    """A teacher trained on shifted labels ((y + 1) mod 4): with ``distill = 1`` the student
    learns the teacher's answers, with 0 the labels'."""
    model, variables, graph = tiny_mlp()
    data = tiny_splits(n=256)
    shifted = lambda d: Dataset(d.images, (d.labels + 1) % 4)
    wrong = Splits("tiny", shifted(data.train), shifted(data.validation), shifted(data.test), 4,
                   (0.0,), (1.0,))
    teacher, _ = train_lib.fit(model, variables, wrong, tiny_cfg(epochs=8))
    masks = magnitude_masks(variables["params"], init_masks(variables["params"], graph), graph, 0.3)
    agree = {}
    for share in (0.0, 1.0):
        out, _ = train_lib.fit(model, variables, data, tiny_cfg(epochs=8, distill=share, distill_temperature=1.0),
                               masks=masks, teacher=teacher)
        agree[share] = train_lib.evaluate_dataset(model, out, wrong.train, masks=masks)["accuracy"]
    assert train_lib.evaluate_dataset(model, teacher, wrong.train)["accuracy"] > 0.7
    assert agree[1.0] > 0.7 and agree[0.0] < 0.3, agree
    with pytest.raises(ValueError, match="distill"):
        train_lib.fit(model, variables, data, tiny_cfg(distill=1.5))


def test_optimizer_and_schedule_reject_unknown_names():
    with pytest.raises(ValueError, match="optimizer"):
        train_lib.make_optimizer(tiny_cfg(optimizer="rmsprop"), 10)
    with pytest.raises(ValueError, match="schedule"):
        train_lib.make_optimizer(tiny_cfg(schedule="step"), 10)
    sched = train_lib.learning_rate_schedule(tiny_cfg(warmup_epochs=1, epochs=3), 10)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(0.05)
    assert float(sched(30)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("build, augment", [(tiny_mlp, None),  # and BatchNorm state, augmentation:
                                             (tiny_resnet, Augment(crop_padding=2, flip=True))])
def test_kill_and_resume_matches_uninterrupted(tmp_path, monkeypatch, build, augment):
    model, variables, graph = build()
    masks = magnitude_masks(variables["params"], init_masks(variables["params"], graph), graph, 0.3)
    data = tiny_splits()
    cfg = tiny_cfg(epochs=3, checkpoint_every_steps=3, nesterov=True)  # 4 steps per epoch, 12 in all
    fit = functools.partial(train_lib.fit, augment=augment)
    reference, ref_history = fit(model, variables, data, cfg, masks=masks, seed=3)

    real = train_lib.iterate_batches
    seen = {"train": 0}

    def killed_after_seven(*args, **kwargs):  # dies mid-epoch 2, after the step-6 checkpoint
        for batch in real(*args, **kwargs):
            if kwargs.get("shuffle", True):
                if seen["train"] == 7:
                    raise KeyboardInterrupt
                seen["train"] += 1
            yield batch

    monkeypatch.setattr(train_lib, "iterate_batches", killed_after_seven)
    with pytest.raises(KeyboardInterrupt):
        fit(model, variables, data, cfg, masks=masks, seed=3, workdir=tmp_path)
    monkeypatch.setattr(train_lib, "iterate_batches", real)
    assert (tmp_path / "checkpoints" / "train" / "6").is_dir()

    resumed, history = fit(model, variables, data, cfg, masks=masks, seed=3, workdir=tmp_path)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] == pytest.approx(ref_history[-1]["val_accuracy"])
    # A finished run in the same workdir trains no further.
    again, history = fit(model, variables, data, cfg, masks=masks, seed=3, workdir=tmp_path)
    assert len(history) == 3
    np.testing.assert_array_equal(jax.tree.leaves(again)[0], jax.tree.leaves(resumed)[0])


def test_resume_with_other_masks_is_refused(tmp_path):
    model, variables, graph = tiny_mlp()
    full = init_masks(variables["params"], graph)
    cfg = tiny_cfg(epochs=1)
    train_lib.fit(model, variables, tiny_splits(), cfg, masks=full, workdir=tmp_path)
    other = magnitude_masks(variables["params"], full, graph, 0.5)
    assert not all(bool(np.all(m)) for m in jax.tree.leaves(other))
    with pytest.raises(CheckpointError, match="other masks"):
        train_lib.fit(model, variables, tiny_splits(), cfg, masks=other, workdir=tmp_path)
    with pytest.raises(CheckpointError, match="does not fit this run"):  # dense run, same workdir
        train_lib.fit(model, variables, tiny_splits(), cfg, workdir=tmp_path)


def test_mismatched_checkpoint_gives_clear_error(tmp_path):
    small = get_model("lenet_300_100", num_classes=4, features=(8,))
    variables = small.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    train_lib.fit(small, variables, tiny_splits(), tiny_cfg(epochs=1), workdir=tmp_path)
    where = tmp_path / "checkpoints" / "train"
    restored, meta = restore_variables(where, variables)
    assert meta["finished"] and len(meta["history"]) == 1
    other = get_model("lenet_300_100", num_classes=4, features=(16,))
    reference = other.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(CheckpointError, match=r"does not match the model.*fc1/kernel has shape \(64, 8\)"):
        restore_variables(where, reference)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        restore_variables(tmp_path / "nothing", reference)


def test_loading_a_dense_checkpoint_logs_no_orbax_warnings(tmp_path, caplog):
    model, variables, _ = tiny_mlp()
    train_lib.fit(model, variables, tiny_splits(), tiny_cfg(epochs=1), workdir=tmp_path)
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with caplog.at_level(logging.INFO):
        restore_variables(tmp_path / "checkpoints" / "train", variables)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before  # read only
    with caplog.at_level(logging.WARNING, logger="absl"):  # the filter is gone afterwards
        logging.getLogger("absl").warning("Given directory is read only=elsewhere")
    assert any("elsewhere" in r.getMessage() for r in caplog.records)


def test_cli_train_on_embedded_mnist_then_load_dense(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["purl-jax", "train", "--config", str(REPO / "configs" / "lenet300_mnist.py"),
            "--workdir", str(workdir), "--config.train.epochs=2", "--config.validation_size=58000",
            "--config.train.batch_size=100", "--config.train.learning_rate=0.1"]
    run(argv)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["desc"] for r in records] == ["train", "train", "test"]
    assert records[-1]["test_accuracy"] > 0.8  # 2000 examples, 40 steps; chance is 0.1
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 2
    assert "test accuracy" in capsys.readouterr().out

    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    config.dense_checkpoint = str(workdir)
    variables = train_lib.load_dense(config, tmp_path / "unused")
    assert variables["params"]["fc1"]["kernel"].shape == (784, 300)
    assert json.loads((workdir / "config.json").read_text())["split_seed"] == 0
    config.seed = 3  # another search seed holds out the same validation split
    train_lib.load_dense(config, tmp_path / "unused")
    for field, value, message in (("split_seed", 1, "split_seed 0, not 1"),
                                  ("validation_size", 58001, "validation_size 58000, smaller than 58001"),
                                  ("dataset", "fashion_mnist", "dataset 'mnist', not 'fashion_mnist'")):
        other = ml_collections.ConfigDict(config.to_dict())
        other[field] = value
        with pytest.raises(CheckpointError, match=f"trained with {message}: part of this run's validation"):
            train_lib.load_dense(other, tmp_path / "unused")
    # a prune run resumed over the dense model it trained itself, written before split_seed
    # existed (its split followed its seed), is checked the same way
    old = tmp_path / "old_prune_run"
    (old / "dense").mkdir(parents=True)
    (old / "dense" / "config.json").write_text(json.dumps(dict(dataset="mnist", validation_size=58000, seed=1)))
    resumed = ml_collections.ConfigDict(config.to_dict())
    resumed.dense_checkpoint = ""
    with pytest.raises(CheckpointError, match="dense run .*old_prune_run/dense was trained with split_seed 1, not 0"):
        train_lib.load_dense(resumed, old)
    config.model = "lenet5"
    with pytest.raises(CheckpointError, match="does not match the model"):
        train_lib.load_dense(config, tmp_path / "unused")


def test_cli_rejects_missing_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(["purl-jax", "train", "--config", str(REPO / "configs" / "lenet5_mnist.py")])
    assert e.value.code == 2 and "--workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["purl-jax", "train", "--config", str(REPO / "configs" / "lenet5_mnist.py"),
             "--workdir", str(tmp_path), "--config.train.no_such_field=1"])
    assert "no_such_field" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["purl-jax", "nosuchcommand"])
    usage = capsys.readouterr().err
    assert usage.startswith("usage: purl-jax {") and all(
        command in usage for command in ("models", "train", "prune", "report", "data"))


def test_validation_split_follows_split_seed_not_seed():
    config = train_lib.load_config(REPO / "configs" / "lenet300_mnist.py", ["--config.validation_size=500"])
    held_out = train_lib.setup(config)[2].validation.labels
    config.seed = 7
    assert np.array_equal(train_lib.setup(config)[2].validation.labels, held_out)
    config.split_seed = 1
    assert not np.array_equal(train_lib.setup(config)[2].validation.labels, held_out)


def test_config_data_source_reaches_the_loader():
    """``--config.data_source`` picks load_dataset's source, and without data_dir a dataset
    that is not embedded names both config fields that fix it."""
    config = train_lib.load_config(REPO / "configs" / "resnet20_fmnist.py")
    assert config.data_dir is None  # no machine's folder baked into the config
    with pytest.raises(DataError, match="--config.data_dir=FOLDER or --config.data_source=tfds"):
        train_lib.setup(config)
    config = train_lib.load_config(REPO / "configs" / "lenet300_mnist.py", ["--config.data_source=tfdss"])
    with pytest.raises(DataError, match="source must be 'auto', 'idx' or 'tfds', not 'tfdss'"):
        train_lib.setup(config)


def test_load_config_takes_command_line_overrides():
    path = REPO / "configs" / "lenet300_mnist_purl.py"
    config = train_lib.load_config(path, ["--config.finetune.distill=0.5",
                                          "--config.prune.dqn.epsilon_decay_steps=150"])
    assert config.finetune.distill == 0.5 and config.prune.dqn.epsilon_decay_steps == 150
    assert train_lib.load_config(path).prune.dqn.epsilon_decay_steps != 150
    for bad, why in ((["--config.prune.no_such_field=1"], "unknown field"),
                     (["--config.prune.episodes=many"], "invalid literal"),
                     (["--episodes=3"], "expected --config.")):
        with pytest.raises(ValueError, match=why):
            train_lib.load_config(path, bad)


_DP_SCRIPT = """
import sys, jax, numpy as np
from jax.sharding import Mesh
sys.path.insert(0, {tests!r})
from test_train import tiny_cfg, tiny_resnet, tiny_splits
from purl_jax import train as train_lib
assert jax.device_count() == 2, jax.devices()
model, variables, _ = tiny_resnet()
two, history2 = train_lib.fit(model, variables, tiny_splits(), tiny_cfg(epochs=1))
assert train_lib.data_mesh().size == 2
train_lib.data_mesh = lambda: Mesh(np.asarray(jax.local_devices()[:1]), ("data",))
one, history1 = train_lib.fit(model, variables, tiny_splits(), tiny_cfg(epochs=1))
leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
np.savez({out!r}, one=np.concatenate([x.ravel() for x in leaves(one)]),
         two=np.concatenate([x.ravel() for x in leaves(two)]),
         val=np.array([history1[-1]["val_loss"], history2[-1]["val_loss"]]))
"""


def test_data_parallel_two_devices_matches_one(tmp_path):
    """The same step sharded over 2 forced CPU devices and on 1 (in a subprocess: the
    device count is fixed when jax starts)."""
    out = tmp_path / "dp.npz"
    env = forced_cpu_devices_env(2)
    script = _DP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = np.load(out)
    assert result["one"].size > 1000
    np.testing.assert_allclose(result["two"], result["one"], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(result["val"][1], result["val"][0], rtol=1e-4)


def test_fit_checkpoints_under_checkpoint_name_not_its_label(tmp_path):
    """``desc`` labels the bar and the metrics; the folder is ``checkpoint_name``."""
    model, variables, graph = tiny_mlp()
    masks = magnitude_masks(variables["params"], init_masks(variables["params"], graph), graph, 0.5)
    fit = functools.partial(train_lib.fit, model, variables, tiny_splits(), tiny_cfg(epochs=1),
                            masks=masks, workdir=tmp_path, desc="finetune 2/3")
    _, history = fit(checkpoint_name="finetune")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["finetune"]
    assert not [p for p in tmp_path.rglob("*") if " " in str(p.relative_to(tmp_path))]
    assert history[0]["desc"] == "finetune 2/3"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    _, again = fit(checkpoint_name="finetune")  # resumed, finished: trains no further
    assert again == history and (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    for bad in ("finetune 2/3", "a/b", "", ".."):
        with pytest.raises(ValueError, match="plain folder name"):
            fit(checkpoint_name=bad)


def test_load_dense_trains_on_the_parts_given(tmp_path, monkeypatch):
    """With ``parts`` (what the caller's ``setup`` returned) the data is not loaded again."""
    model, variables, graph = tiny_mlp()
    parts = (model, variables, tiny_splits(), graph)
    monkeypatch.setattr(train_lib, "setup", lambda config: pytest.fail("data loaded again"))
    config = train_lib.base_config()
    config.train.update(tiny_cfg(epochs=1).to_dict())
    dense = train_lib.load_dense(config, tmp_path, parts=parts)
    assert (tmp_path / "dense" / "checkpoints" / "train").is_dir()
    config.dense_checkpoint = str(tmp_path / "dense")
    restored = train_lib.load_dense(config, tmp_path / "unused", parts=parts)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(dense), strict=True):
        np.testing.assert_array_equal(a, b)
