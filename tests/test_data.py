"""Data loading: embedded MNIST, IDX validation, TFDS without TensorFlow, splits, batches, CLI."""

from __future__ import annotations

import gzip
import importlib.util
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from purl_jax import data as D
from purl_jax.data import DataError

# Per-digit counts published in /work/shared/data/README.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist() -> D.Splits:
    return D.load_dataset("mnist")


def test_embedded_mnist_is_the_original_with_published_label_counts():
    arrays = D.load_idx_dataset(D.embedded_mnist_dir())  # verifies the four SHA-256 values
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_images"].shape == (10000, 28, 28)
    assert arrays["train_images"].dtype == np.uint8
    assert np.bincount(arrays["train_labels"]).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(arrays["test_labels"]).tolist() == MNIST_TEST_COUNTS


def test_load_dataset_mnist_splits_are_normalised_and_complete(mnist):
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55000, 5000, 10000)
    assert mnist.input_shape == (28, 28, 1) and mnist.num_classes == 10 and mnist.name == "mnist"
    assert mnist.train.images.dtype == np.float32 and mnist.train.labels.dtype == np.int32
    # The constants are MNIST's own statistics, so the normalised train set is ~N(0, 1).
    assert abs(mnist.train.images.mean()) < 0.01 and abs(mnist.train.images.std() - 1) < 0.01
    train_and_validation = np.concatenate([mnist.train.labels, mnist.validation.labels])
    assert np.bincount(train_and_validation).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.test.labels).tolist() == MNIST_TEST_COUNTS


def test_checksum_table_matches_the_shared_sha256sums(shared_data):
    listed = dict(line.split()[::-1] for line in (shared_data / "SHA256SUMS").read_text().splitlines())
    table = {
        f"{name}/{file}": digest for name, files in D.KNOWN_SHA256.items() for file, digest in files.items()
    }
    assert table == listed


def test_shared_mnist_equals_the_embedded_copy(shared_data):
    shared = D.load_idx_dataset(shared_data / "mnist")
    embedded = D.load_idx_dataset(D.embedded_mnist_dir())
    assert all(np.array_equal(shared[key], embedded[key]) for key in D.IDX_FILES)


def test_fashion_mnist_from_the_shared_data_folder(shared_data):
    fashion = D.load_dataset("fashion_mnist", data_dir=shared_data, validation_size=0)  # finds fashion_mnist/
    assert fashion.input_shape == (28, 28, 1) and fashion.num_classes == 10
    assert np.bincount(fashion.train.labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test.labels).tolist() == [1000] * 10
    assert abs(fashion.train.images.mean()) < 0.01 and abs(fashion.train.images.std() - 1) < 0.01


def test_fashion_mnist_is_not_embedded():
    with pytest.raises(DataError, match="not embedded.*fashion-mnist.s3"):
        D.load_dataset("fashion_mnist")


# --------------------------------------------------------------------------- IDX errors


def _write_idx(folder, *, n_train=6, n_test=4, size=28):
    """A tiny valid IDX dataset (not a known one, so checksums must be off)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for key, (file_name, magic) in D.IDX_FILES.items():
        n = n_train if key.startswith("train") else n_test
        dims = (n, size, size) if key.endswith("images") else (n,)
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
        payload = rng.integers(0, 10, dims, dtype=np.uint8).tobytes()
        (folder / file_name).write_bytes(gzip.compress(header + payload))
    return folder


def test_tiny_idx_dataset_loads_without_checksum(tmp_path):
    arrays = D.load_idx_dataset(_write_idx(tmp_path), name="custom", verify_checksum=False)
    assert arrays["train_images"].shape == (6, 28, 28) and arrays["test_labels"].shape == (4,)


def test_missing_directory_says_where_to_get_the_files(tmp_path):
    with pytest.raises(DataError, match="does not exist.*storage.googleapis.com/cvdf-datasets/mnist"):
        D.load_idx_dataset(tmp_path / "nowhere")


def test_missing_file_is_named(tmp_path):
    (_write_idx(tmp_path) / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="Missing t10k-labels-idx1-ubyte.gz in"):
        D.load_idx_dataset(tmp_path, name="custom", verify_checksum=False)


def test_truncated_copy_of_an_original_file(tmp_path):
    for file_name, _ in D.IDX_FILES.values():
        shutil.copyfile(D.embedded_mnist_dir() / file_name, tmp_path / file_name)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:10000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not a complete gzip file"):
        D.load_idx_dataset(tmp_path)


def test_header_dims_are_checked_against_the_data_length(tmp_path):
    _write_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    expected = 6 * 28 * 28
    message = rf"declares shape \(6, 28, 28\), i.e. {expected} data bytes, but it holds {expected - 100}"
    with pytest.raises(DataError, match=message):
        D.load_idx_dataset(tmp_path, name="custom", verify_checksum=False)


def test_wrong_magic_number(tmp_path):
    _write_idx(tmp_path)
    shutil.copyfile(tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: IDX magic number is 0x801, expected 0x803"):
        D.load_idx_dataset(tmp_path, name="custom", verify_checksum=False)


def test_image_and_label_counts_must_agree(tmp_path):
    _write_idx(tmp_path)
    _write_idx(tmp_path / "other", n_test=3)
    shutil.copyfile(tmp_path / "other" / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="test has 4 images but 3 labels"):
        D.load_idx_dataset(tmp_path, name="custom", verify_checksum=False)


def test_wrong_checksum_for_a_known_dataset(tmp_path):
    _write_idx(tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is not the original mnist file: SHA-256"):
        D.load_idx_dataset(tmp_path, name="mnist")
    with pytest.raises(DataError, match="No known SHA-256 checksums for 'custom'"):
        D.load_idx_dataset(tmp_path, name="custom")


# --------------------------------------------------------------------------- TFDS


class TinyDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """40 train / 12 test 6x6x1 images; pixel [0, 0] holds the example's index, label = index % 3."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Tensor(shape=(6, 6, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40), "test": self._generate_examples(12)}

    def _generate_examples(self, n):
        for i in range(n):
            image = np.full((6, 6, 1), 200, np.uint8)
            image[0, 0, 0] = i
            yield i, {"image": image, "label": i % 3}


class TinyDigitsRegistered(TinyDigits):
    """The same data under a registered name, as ``prepare`` needs."""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """TinyDigits prepared as array_record; its class is unregistered, so loading reads the folder."""
    data_dir = tmp_path_factory.mktemp("tfds")
    TinyDigits(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_load_tfds_reads_a_self_built_array_record_dataset(tiny_dir):
    images, labels = D.load_tfds("tiny_digits", data_dir=tiny_dir, split="train")
    assert images.shape == (40, 6, 6, 1) and images.dtype == np.uint8 and labels.dtype == np.int32
    index = images[:, 0, 0, 0].astype(int)  # tfds shuffles examples when it writes them
    assert sorted(index) == list(range(40)) and np.array_equal(labels, index % 3)
    with pytest.raises(DataError, match=r"needs 0\.0 GiB in memory, over max_bytes=100"):
        D.load_tfds("tiny_digits", data_dir=tiny_dir, split="train", max_bytes=100)


def test_load_dataset_tfds_split_is_disjoint_and_deterministic(tiny_dir):
    splits = D.load_dataset("tiny_digits", data_dir=tiny_dir, validation_size=10, split_seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 10, 12)
    assert splits.num_classes == 3 and splits.input_shape == (6, 6, 1)

    def index(dataset):  # undo the normalisation (statistics computed from train) to read pixel [0, 0]
        return np.rint((dataset.images[:, 0, 0, 0] * splits.std[0] + splits.mean[0]) * 255).astype(int)

    train, validation = index(splits.train), index(splits.validation)
    assert sorted([*train, *validation]) == list(range(40))
    assert np.array_equal(splits.validation.labels, validation % 3)
    assert abs(splits.train.images.mean()) < 1e-5 and abs(splits.train.images.std() - 1) < 1e-4
    again = D.load_dataset("tiny_digits", data_dir=tiny_dir, validation_size=10, split_seed=3)
    assert np.array_equal(again.validation.images, splits.validation.images)
    other = D.load_dataset("tiny_digits", data_dir=tiny_dir, validation_size=10, split_seed=4)
    assert not np.array_equal(index(other.validation), validation)


def test_reward_subset_comes_from_validation(tiny_dir):
    splits = D.load_dataset("tiny_digits", data_dir=tiny_dir, validation_size=10)
    subset = D.reward_subset(splits, 4, seed=0)
    assert len(subset) == 4
    rows = {row.tobytes() for row in splits.validation.images}
    assert all(row.tobytes() in rows for row in subset.images)
    assert np.array_equal(D.reward_subset(splits, 4, seed=0).images, subset.images)
    assert not np.array_equal(D.reward_subset(splits, 4, seed=1).images, subset.images)
    with pytest.raises(DataError, match=r"needs 0 < n <= 10 .*got n=11"):
        D.reward_subset(splits, 11, seed=0)


def test_calibration_subset_comes_from_train(tiny_dir):
    splits = D.load_dataset("tiny_digits", data_dir=tiny_dir, validation_size=10)
    images = D.calibration_subset(splits, 5, seed=0)
    rows = {row.tobytes() for row in splits.train.images}
    assert images.shape == (5, *splits.train.images.shape[1:])
    assert all(row.tobytes() in rows for row in images)
    assert not np.array_equal(D.calibration_subset(splits, 5, seed=1), images)
    with pytest.raises(DataError, match="calibration_subset needs 0 < n"):
        D.calibration_subset(splits, len(splits.train) + 1, seed=0)


def test_prepare_writes_array_record_that_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_require_tensorflow", lambda: None)  # this builder needs no TensorFlow
    prepared = D.prepare("tiny_digits_registered", data_dir=tmp_path)
    assert any(p.name.startswith("tiny_digits_registered-train.array_record") for p in tmp_path.glob("*/*/*"))
    assert prepared.startswith(str(tmp_path))
    images, labels = D.load_tfds("tiny_digits_registered", data_dir=tmp_path, split="test")
    assert sorted(images[:, 0, 0, 0]) == list(range(12)) and np.array_equal(labels, images[:, 0, 0, 0] % 3)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_prepare_without_tensorflow_says_what_to_install(tmp_path):
    with pytest.raises(DataError, match=r"needs TensorFlow.*pip install 'purl-jax\[prepare\]'"):
        D.prepare("cifar10", data_dir=tmp_path)


def test_unknown_dataset_name_gives_the_prepare_command(tmp_path):
    command = re.escape(f"purl-jax data prepare no_such_set --data_dir {tmp_path}")
    with pytest.raises(DataError, match=rf"Unknown dataset 'no_such_set'.*{command}"):
        D.load_dataset("no_such_set", data_dir=tmp_path)


def test_unprepared_tfds_dataset_gives_the_prepare_command(tmp_path):
    command = re.escape(f"purl-jax data prepare cifar10 --data_dir {tmp_path}")
    with pytest.raises(DataError, match=rf"'cifar10' is not prepared.*{command}"):
        D.load_tfds("cifar10", data_dir=tmp_path, split="train")
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


def test_mock_mnist_and_cifar10_through_tfds(mock_tfds, tmp_path):
    images, labels = D.load_tfds("mnist", data_dir=tmp_path, split="train")
    assert images.shape == (40, 28, 28, 1) and labels.dtype == np.int32 and labels.max() < 10
    splits = D.load_dataset("cifar10", data_dir=tmp_path, validation_size=2)
    assert isinstance(splits.train, D.Dataset) and isinstance(splits.test, D.Dataset)  # fits in memory
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (38, 2, 40)
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 10
    assert (splits.mean, splits.std) == D.NORMALIZATION["cifar10"]
    pixels = splits.train.images * np.array(splits.std, np.float32) + np.array(splits.mean, np.float32)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_mock_imagenet_streams_preprocessed_batches(mock_tfds, tmp_path):
    with pytest.raises(DataError, match="variable-size images.*stream it"):
        D.load_tfds("imagenet2012", data_dir=tmp_path, split="train")
    dataset = D.stream_tfds("imagenet2012", data_dir=tmp_path, split="train")
    assert len(dataset) == 40 and dataset.input_shape == (224, 224, 3)

    def stream(**kwargs):
        return list(dataset.batches(16, **kwargs))

    train = stream(train=True, seed=0)
    assert len(train) == 2  # 40 examples: the incomplete batch is dropped
    assert train[0][0].shape == (16, 224, 224, 3) and train[0][0].dtype == np.float32
    assert train[0][1].dtype == np.int32 and train[0][1].max() < 1000
    assert np.array_equal(stream(train=True, seed=0)[1][0], train[1][0])
    assert not np.array_equal(stream(train=True, seed=1)[0][0], train[0][0])
    evaluation = stream(train=False)
    assert [len(labels) for _, labels in evaluation] == [16, 16, 8]
    source = tfds.data_source("imagenet2012", data_dir=tmp_path, split="train", download=False)
    streamed = np.concatenate([labels for _, labels in evaluation])
    assert streamed.tolist() == [source[i]["label"] for i in range(40)]


class TinyPhotos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """40 train / 12 test RGB images of varying sizes, so they are streamed; every pixel of
    an image holds 5 x its index (any crop of it too), label = index % 5."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.ClassLabel(num_classes=5),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40), "test": self._generate_examples(12)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((10 + i % 7, 12 + i % 4, 3), 5 * i, np.uint8), "label": i % 5}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> D.Splits:
    data_dir = tmp_path_factory.mktemp("tfds_photos")
    TinyPhotos(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return D.load_dataset("tiny_photos", data_dir=data_dir, validation_size=10, split_seed=3, image_size=8)


def _photo_index(splits: D.Splits, images: np.ndarray) -> np.ndarray:
    """The index each (constant) image was made from, read back through the normalisation."""
    pixels = (images * np.array(splits.std, np.float32) + np.array(splits.mean, np.float32)) * 255
    index = np.rint(pixels / 5).astype(int)
    assert (index == index[:, :1, :1, :1]).all()  # crops of a constant image stay constant
    return index[:, 0, 0, 0]


def test_large_tfds_dataset_streams_train_and_test_and_holds_validation_in_memory(photos):
    assert isinstance(photos.train, D.StreamedDataset) and isinstance(photos.test, D.StreamedDataset)
    assert isinstance(photos.validation, D.Dataset) and photos.validation.images.shape == (10, 8, 8, 3)
    assert (len(photos.train), len(photos.validation), len(photos.test)) == (30, 10, 12)
    assert photos.input_shape == (8, 8, 3) and photos.num_classes == 5
    assert (photos.mean, photos.std) == D.NORMALIZATION["imagenet2012"]  # unlisted: ImageNet's
    validation = _photo_index(photos, photos.validation.images)
    assert np.array_equal(photos.validation.labels, validation % 5)

    epoch = list(photos.train.batches(6, train=True, seed=0))
    assert [x.shape for x, _ in epoch] == [(6, 8, 8, 3)] * 5 and epoch[0][1].dtype == np.int32
    train = np.concatenate([_photo_index(photos, x) for x, _ in epoch])
    assert np.array_equal(np.concatenate([y for _, y in epoch]), train % 5)
    assert sorted([*train, *validation]) == list(range(40))  # validation never streamed in train

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x, y) for (x, _), (y, _) in zip(a, b))

    assert same(list(photos.train.batches(6, train=True, seed=0)), epoch)
    assert same(list(photos.train.batches(6, train=True, seed=0, start=2)), epoch[2:])  # resume
    assert not same(list(photos.train.batches(6, train=True, seed=0, epoch=1)), epoch)
    test = list(photos.test.batches(5, train=False))
    assert [len(y) for _, y in test] == [5, 5, 2]
    test_index = np.concatenate([_photo_index(photos, x) for x, _ in test])
    assert sorted(test_index) == list(range(12))
    assert np.array_equal(np.concatenate([y for _, y in test]), test_index % 5)


def test_unprepared_imagenet_names_the_files_to_download(tmp_path):
    message = r"'imagenet2012' is not prepared.*--manual_dir DIR.*ILSVRC2012_img_train.tar"
    with pytest.raises(DataError, match=message):
        D.load_dataset("imagenet2012", data_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_center_crop_keeps_the_middle():
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:200, 150:250] = 255  # a centred square, a third of the height
    crop = D._center_crop(image, 224, 256)
    assert crop.shape == (224, 224, 3)
    # Shorter side 300 -> 256, so the square spans ~85 px around the centre.
    assert crop[112, 112].min() == 255 and crop[0, 0].max() == 0 and crop[112, 20].max() == 0


# --------------------------------------------------------------------------- batches


def test_iterate_batches_is_deterministic_per_seed_and_epoch():
    images, labels = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), np.arange(10, dtype=np.int32)

    def epoch(**kwargs):
        return [batch_labels.tolist() for _, batch_labels in D.iterate_batches(images, labels, 4, **kwargs)]

    first = epoch(rng_seed=0)
    assert len(first) == 2 and len({label for batch in first for label in batch}) == 8
    assert epoch(rng_seed=0) == first
    assert epoch(rng_seed=0, epoch=1) != first and epoch(rng_seed=1) != first
    assert epoch(rng_seed=0, shuffle=False, drop_remainder=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    batches = list(D.iterate_batches(images, labels, 4, rng_seed=0))
    assert all(np.array_equal(x[:, 0, 0, 0], y) for x, y in batches)  # images stay with their labels
    with pytest.raises(DataError, match="batch_size=11 yields no batch from 10 examples"):
        next(D.iterate_batches(images, labels, 11, rng_seed=0))


def test_augment_crops_within_the_padding_and_flips():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    out = D.Augment(crop_padding=2, flip=False)(images, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.float32
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = [
        [(y, x) for y in range(5) for x in range(5) if np.array_equal(o, padded[i, y : y + 8, x : x + 8])]
        for i, o in enumerate(out)
    ]
    assert all(len(found) == 1 for found in offsets)  # every output is one window of its padded input
    assert any(y != x for [(y, x)] in offsets) and len({found[0] for found in offsets}) > 4
    flipped = D.Augment(flip=True)(images, np.random.default_rng(1))
    mirrored = [np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped, images)]
    kept = [np.array_equal(f, x) for f, x in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_augmented_batches_are_deterministic_and_defaults_per_dataset():
    images = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(np.float32)
    labels = np.zeros(20, np.int32)
    augment = D.default_augment("cifar10")
    assert augment == D.Augment(crop_padding=4, flip=True) and D.default_augment("mnist") is None

    def epoch(seed):
        return [x for x, _ in D.iterate_batches(images, labels, 5, rng_seed=seed, augment=augment)]

    first = epoch(0)
    assert [x.shape for x in first] == [(5, 8, 8, 1)] * 4
    assert all(np.array_equal(a, b) for a, b in zip(epoch(0), first))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch(1), first))


def test_pad_to_pads_with_black_before_normalising(mnist, tiny_dir):
    padded = D.load_dataset("mnist", validation_size=1000, pad_to=32)
    assert padded.input_shape == (32, 32, 1) and padded.test.images.shape == (10000, 32, 32, 1)
    black = (0 - padded.mean[0]) / padded.std[0]
    assert np.allclose(padded.test.images[:, :2], black) and np.allclose(padded.test.images[:, :, -2:], black)
    assert np.array_equal(padded.test.images[:, 2:30, 2:30], mnist.test.images)
    with pytest.raises(DataError, match="pad_to=5 is smaller than the images"):
        D.load_dataset("tiny_digits", data_dir=tiny_dir, pad_to=5)


# --------------------------------------------------------------------------- CLI


def test_cli_verify(tmp_path, capsys):
    assert D.main(["verify", str(D.embedded_mnist_dir())]) == 0
    assert "original mnist files (SHA-256 verified): 60000 train, 10000 test" in capsys.readouterr().out
    _write_idx(tmp_path / "mnist")
    assert D.main(["verify", str(tmp_path / "mnist")]) == 1
    assert "is not the original mnist file" in capsys.readouterr().err


def test_data_command_of_the_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "purl_jax.main", "data", "verify", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert f"No known SHA-256 checksums for '{tmp_path.name}'" in result.stderr
