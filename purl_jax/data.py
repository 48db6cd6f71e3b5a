"""Image-classification data as numpy arrays: embedded MNIST, IDX files, and TFDS without TensorFlow.

Everything returns numpy (float32 NHWC images normalised per dataset, int32 labels);
training code turns them into jax arrays. Sources:

* ``mnist`` with no ``data_dir``: the four original MNIST files shipped inside the package,
  so the default experiment runs with no download.
* IDX folders (``mnist``, ``fashion_mnist``): the original ``*-ubyte.gz`` files, checked
  for structure and, for known datasets, byte-exactness (SHA-256).
* Any TFDS dataset prepared in ``array_record`` format, read through
  ``tfds`` data sources, which need no TensorFlow. Preparing needs TensorFlow once, in its
  own process: ``pip install 'purl-jax[prepare]'`` then
  ``purl-jax data prepare cifar10 --data_dir DIR``.

A TFDS dataset whose train split cannot be held in memory (variable-size images, as
ImageNet's, or more than ``max_bytes`` decoded) is streamed: its train and test splits are
``StreamedDataset``s read in batches with the standard ImageNet preprocessing. The
validation split is held out of ``train`` deterministically from a seed and always held in
memory; the RL reward set is drawn from it (``reward_subset``), never from ``test``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import importlib.util
import itertools
import math
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

PathLike = str | os.PathLike[str]

IDX_FILES = {  # key -> (original file name, IDX magic number)
    "train_images": ("train-images-idx3-ubyte.gz", 0x803),
    "train_labels": ("train-labels-idx1-ubyte.gz", 0x801),
    "test_images": ("t10k-images-idx3-ubyte.gz", 0x803),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 0x801),
}

# SHA-256 of the original distribution files (the values TensorFlow Datasets uses).
KNOWN_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
_IDX_SOURCES = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/ (a mirror of the original)",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# Per-channel pixel mean / std (of x / 255) of each training set. Datasets not listed
# are normalised with statistics computed from their training split.
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

DEFAULT_MAX_BYTES = 2**31  # larger (decoded, uint8) train splits are streamed

# The split used as the test set where it is not "test": ImageNet's test labels are not
# public, so its ILSVRC validation set (tfds "validation") is the test set.
TEST_SPLIT = {"imagenet2012": "validation"}


class DataError(ValueError):
    """Data that is missing, corrupt or unknown; the message says what to do about it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split: ``images`` (N, H, W, C) float32, normalised; ``labels`` (N,) int32."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


@dataclass(frozen=True, eq=False)
class StreamedDataset:
    """A TFDS split too large for memory, read in batches (``batches``) as normalised float32.

    ``indices`` are the examples of the split it covers (train minus the validation held
    out of it). Training batches get a random-resized crop to ``image_size`` and a random
    flip; evaluation batches the shorter side resized to ``resize_size`` and a centre crop.
    """

    name: str
    source: Any  # the tfds data source of the split (random access, thread-safe)
    indices: np.ndarray
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def resize_size(self) -> int:
        return self.image_size * 8 // 7  # the standard ratio: 256 for 224

    def batches(
        self, batch_size: int, *, train: bool, seed: int = 0, epoch: int = 0, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (images, labels) batches, from batch number ``start`` on.

        ``train``: shuffled, augmented, incomplete last batch dropped; otherwise in order,
        every example kept. Deterministic per (``seed``, ``epoch``): each example's crop
        draws from its own generator, so skipping batches (resuming) costs nothing and
        examples are decoded and cropped in parallel threads (PIL releases the GIL), two
        batches ahead of the consumer.
        """
        n = len(self.indices)
        if batch_size < 1 or (train and batch_size > n):
            raise DataError(f"batch_size={batch_size} yields no batch from {n} examples")
        order = np.random.default_rng([seed, epoch]).permutation(n) if train else np.arange(n)
        stop = n - n % batch_size if train else n

        def example(position: int) -> tuple[np.ndarray, int]:
            e = self.source[int(self.indices[order[position]])]
            if train:
                rng = np.random.default_rng([seed, epoch, position])
                image = _train_crop(e["image"], self.image_size, rng)
            else:
                image = _center_crop(e["image"], self.image_size, self.resize_size)
            return image, int(e["label"])

        firsts = iter(range(start * batch_size, stop, batch_size))
        pool = ThreadPoolExecutor(min(16, os.cpu_count() or 1))

        def submit(first: int) -> list:
            return [pool.submit(example, p) for p in range(first, min(first + batch_size, stop))]

        try:
            ahead = collections.deque(submit(first) for _, first in zip(range(2), firsts))
            while ahead:
                futures = ahead.popleft()
                ahead.extend(submit(first) for first in itertools.islice(firsts, 1))
                done = [future.result() for future in futures]
                images = _normalize(np.stack([image for image, _ in done]), self.mean, self.std)
                yield images, np.array([label for _, label in done], np.int32)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def in_memory(self) -> Dataset:
        """Every example, evaluation-preprocessed, as an in-memory ``Dataset``."""
        images, labels = np.empty((len(self), *self.input_shape), np.float32), np.empty(len(self), np.int32)
        start = 0
        for x, y in self.batches(256, train=False):
            images[start : start + len(y)], labels[start : start + len(y)] = x, y
            start += len(y)
        return Dataset(images, labels)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation (held out of train) / test, plus what a model needs to know.

    ``validation`` is always in memory (the reward set comes from it); ``train`` and ``test``
    are ``StreamedDataset``s for datasets too large for memory.
    """

    name: str
    train: Dataset | StreamedDataset
    validation: Dataset
    test: Dataset | StreamedDataset
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixels / 255, used to normalise
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape


# --------------------------------------------------------------------------- IDX files


def embedded_mnist_dir() -> Traversable:
    """The original MNIST files shipped in the package (``purl_jax/_data/mnist``)."""
    return files("purl_jax") / "_data" / "mnist"


def load_idx_dataset(
    directory: PathLike | Traversable, *, name: str = "mnist", verify_checksum: bool = True
) -> dict[str, np.ndarray]:
    """Read the four original IDX ``.gz`` files of an MNIST-layout dataset from ``directory``.

    Returns uint8 ``train_images`` / ``test_images`` (N, H, W) and ``train_labels`` /
    ``test_labels`` (N,). Every file is checked (gzip, magic number, header dimensions
    against the data length, image and label counts); with ``verify_checksum`` its SHA-256
    must also equal the original's, which needs ``name`` in ``KNOWN_SHA256``.
    """
    folder = directory if isinstance(directory, Traversable) else Path(directory)
    where = f" Get the original files from {_IDX_SOURCES[name]}." if name in _IDX_SOURCES else ""
    if not folder.is_dir():
        raise DataError(f"IDX dataset folder {folder} does not exist.{where}")
    if verify_checksum and name not in KNOWN_SHA256:
        raise DataError(
            f"No known SHA-256 checksums for {name!r} (known: {', '.join(KNOWN_SHA256)}): "
            "name one of those datasets (CLI: verify DIR --name NAME), or pass "
            "verify_checksum=False to load the files unverified."
        )
    arrays = {}
    for key, (file_name, magic) in IDX_FILES.items():
        path = folder / file_name
        if not path.is_file():
            raise DataError(f"Missing {file_name} in {folder}: {name} needs {_file_list()}.{where}")
        raw = path.read_bytes()
        arrays[key] = _parse_idx(_gunzip(raw, path, where), magic, path, where)
        if verify_checksum:
            digest, expected = hashlib.sha256(raw).hexdigest(), KNOWN_SHA256[name][file_name]
            if digest != expected:
                raise DataError(
                    f"{path} is not the original {name} file: SHA-256 {digest}, expected "
                    f"{expected} ({len(raw)} bytes read). Replace it.{where}"
                )
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(
                f"{folder}: {split} has {n_images} images but {n_labels} labels; "
                f"the files do not belong together.{where}"
            )
    return arrays


def _file_list() -> str:
    return ", ".join(file_name for file_name, _ in IDX_FILES.values())


def _gunzip(raw: bytes, path: Traversable, where: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"{path} is not a complete gzip file ({e}): it is truncated or corrupt.{where}"
        ) from e


def _parse_idx(data: bytes, magic: int, path: Traversable, where: str) -> np.ndarray:
    """Decode one uint8 IDX array: magic, big-endian int32 dims, then the raw bytes."""
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = "nothing" if found is None else f"{found:#x}"
        raise DataError(
            f"{path}: IDX magic number is {shown}, expected {magic:#x} "
            f"({'images' if magic == 0x803 else 'labels'}); it is not this kind of IDX file.{where}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated inside the IDX header ({len(data)} of {header} bytes).{where}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, actual = math.prod(dims), len(data) - header
    if actual != expected:
        raise DataError(
            f"{path}: truncated or corrupt: its IDX header declares shape {dims}, i.e. {expected} "
            f"data bytes, but it holds {actual}.{where}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- TFDS


def _tfds() -> Any:
    # Imported lazily: IDX loading and ``verify`` should not pay for (or need) tfds.
    import tensorflow_datasets as tfds

    return tfds


def _prepare_command(name: str, data_dir: PathLike | None, manual: str | None = None) -> str:
    target = "" if data_dir is None else f" --data_dir {data_dir}"
    command = f"pip install 'purl-jax[prepare]' && purl-jax data prepare {name}{target}"
    if manual:  # files TFDS cannot download itself, e.g. ImageNet's tars
        command += f" --manual_dir DIR ({' '.join(manual.split())})"
    return command


def _tfds_builder(name: str, data_dir: PathLike | None) -> Any:
    tfds = _tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
        raise DataError(
            f"Unknown dataset {name!r}: not built in (mnist is embedded, fashion_mnist reads IDX "
            "files from data_dir) and not a TFDS dataset prepared in "
            f"{data_dir or 'the default TFDS folder'}. For a TFDS dataset, run once: "
            f"{_prepare_command(name, data_dir)}"
        ) from e


def _tfds_split(builder: Any, split: str, data_dir: PathLike | None) -> Any:
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:  # what tfds raises when no array_record files exist
        raise DataError(
            f"{builder.name!r} is not prepared in array_record format under {builder.data_dir}. "
            f"Prepare it once (needs TensorFlow, in its own process): "
            f"{_prepare_command(builder.name, data_dir, builder.MANUAL_DOWNLOAD_INSTRUCTIONS)}"
        ) from e


def _read_source(source: Any, *, what: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Load a whole fixed-shape split into memory, in chunks (``__getitems__`` is batched)."""
    feature = source.dataset_info.features["image"]
    shape, n = tuple(feature.shape), len(source)
    if None in shape:
        raise DataError(f"{what} has variable-size images {shape}: stream it (load_dataset does).")
    if n * math.prod(shape) > max_bytes:
        raise DataError(
            f"{what} needs {n * math.prod(shape) / 2**30:.1f} GiB in memory, over max_bytes="
            f"{max_bytes}: stream it (load_dataset does), or raise max_bytes."
        )
    images, labels = np.empty((n, *shape), np.uint8), np.empty(n, np.int32)
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        examples = source.__getitems__(list(range(start, stop)))
        images[start:stop] = [e["image"] for e in examples]
        labels[start:stop] = [e["label"] for e in examples]
    return images, labels


def _fits_in_memory(source: Any, max_bytes: int) -> bool:
    shape = tuple(source.dataset_info.features["image"].shape)
    return None not in shape and len(source) * math.prod(shape) <= max_bytes


def load_tfds(
    name: str, *, data_dir: PathLike | None, split: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Load a prepared TFDS split whole: uint8 images (N, H, W, C) and int32 labels.

    Reads ``array_record`` files through a tfds data source, without TensorFlow. ``data_dir``
    None means TFDS's default folder. Splits over ``max_bytes`` raise: use ``stream_tfds``.
    """
    source = _tfds_split(_tfds_builder(name, data_dir), split, data_dir)
    return _read_source(source, what=f"{name}[{split}]", max_bytes=max_bytes)


def stream_tfds(
    name: str, *, data_dir: PathLike | None, split: str, image_size: int = 224
) -> StreamedDataset:
    """A whole prepared RGB TFDS split (ImageNet) as a ``StreamedDataset`` of ``image_size`` crops."""
    source = _tfds_split(_tfds_builder(name, data_dir), split, data_dir)
    return _stream(name, source, np.arange(len(source)), image_size)


def _stream(name: str, source: Any, indices: np.ndarray, image_size: int) -> StreamedDataset:
    # A streamed train split is never read whole, so unlisted datasets get ImageNet's statistics.
    mean, std = NORMALIZATION.get(name, NORMALIZATION["imagenet2012"])
    return StreamedDataset(name, source, indices, image_size, mean, std)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _train_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random-resized crop (scale 0.08-1, aspect 3/4-4/3) to ``size``, then a random flip."""
    crop = _random_resized_crop(image, size, rng)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    for _ in range(10):
        area = height * width * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            return _resize(image[top : top + h, left : left + w], size, size)
    return _resize(image, size, size)  # no valid crop found: the whole image, as torchvision


def _center_crop(image: np.ndarray, size: int, resize_size: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = resize_size / min(height, width)
    height, width = max(size, round(height * scale)), max(size, round(width * scale))
    top, left = (height - size) // 2, (width - size) // 2
    return _resize(image, height, width)[top : top + size, left : left + size]


def _require_tensorflow() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            "Preparing TFDS datasets needs TensorFlow (loading them afterwards does not): "
            "pip install 'purl-jax[prepare]', and prepare in its own process "
            "(purl-jax data prepare NAME --data_dir DIR)."
        )


def prepare(name: str, *, data_dir: PathLike | None = None, manual_dir: PathLike | None = None) -> str:
    """Download and prepare a TFDS dataset in ``array_record`` format (the one data sources read).

    Needs TensorFlow; run it in its own process (the CLI), since importing TensorFlow before
    rlax breaks rlax's import. ``manual_dir`` holds files TFDS cannot download itself
    (ImageNet's tars) or offline copies of the raw files. Returns the prepared folder.
    """
    _require_tensorflow()
    tfds = _tfds()
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return str(builder.data_dir)


# --------------------------------------------------------------------------- splits


def load_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    validation_size: int = 5000,
    split_seed: int = 0,
    source: Literal["auto", "idx", "tfds"] = "auto",
    pad_to: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    image_size: int = 224,
) -> Splits:
    """Train / validation / test as normalised float32 NHWC numpy arrays and int32 labels.

    ``source="auto"`` reads IDX files for ``mnist`` (the embedded copy when ``data_dir`` is
    None) and ``fashion_mnist`` (from ``data_dir`` or ``data_dir/fashion_mnist``), and TFDS
    (``data_dir`` None = TFDS's default folder) for every other name. ``validation_size``
    examples are held out of train by a permutation drawn from ``split_seed`` (a config's
    ``split_seed``, not its ``seed``: every search seed's reward set then stays unseen by
    the dense model). ``pad_to`` pads images with black to a square size (e.g. 28 -> 32 for
    CIFAR-shaped models) before normalising, so every split and the reward set get the
    same shape.

    A TFDS train split that cannot be held in memory (variable-size images, or over
    ``max_bytes`` decoded) is streamed instead: train and test become ``StreamedDataset``s
    of ``image_size`` crops, and the validation examples are read once, centre-cropped,
    into memory. The test split is ``TEST_SPLIT.get(name, "test")``.
    """
    if source == "auto":
        source = "idx" if name in KNOWN_SHA256 else "tfds"
    if source == "idx":
        train_x, train_y, test_x, test_y, num_classes = _load_idx_source(name, data_dir)
    elif source == "tfds":
        builder = _tfds_builder(name, data_dir)
        train_source = _tfds_split(builder, "train", data_dir)
        test_split = TEST_SPLIT.get(name, "test")
        test_source = _tfds_split(builder, test_split, data_dir)
        num_classes = builder.info.features["label"].num_classes
        if not _fits_in_memory(train_source, max_bytes):
            if pad_to is not None:
                raise DataError(f"pad_to is for in-memory datasets; {name} is streamed (crops of image_size)")
            val_idx, train_idx = _hold_out(name, len(train_source), validation_size, split_seed)
            train = _stream(name, train_source, train_idx, image_size)
            return Splits(
                name=name,
                train=train,
                validation=_stream(name, train_source, val_idx, image_size).in_memory(),
                test=_stream(name, test_source, np.arange(len(test_source)), image_size),
                num_classes=int(num_classes),
                mean=tuple(train.mean),
                std=tuple(train.std),
            )
        train_x, train_y = _read_source(train_source, what=f"{name}[train]", max_bytes=max_bytes)
        test_x, test_y = _read_source(test_source, what=f"{name}[{test_split}]", max_bytes=max_bytes)
    else:
        raise DataError(f"source must be 'auto', 'idx' or 'tfds', not {source!r}")
    if pad_to is not None:
        train_x, test_x = _pad(train_x, pad_to), _pad(test_x, pad_to)
    val_idx, train_idx = _hold_out(name, len(train_y), validation_size, split_seed)
    if name in NORMALIZATION:
        mean, std = NORMALIZATION[name]
    else:  # computed on the training part only, so validation and test stay unseen
        pixels = train_x[train_idx]
        mean = tuple((pixels.mean(axis=(0, 1, 2), dtype=np.float64) / 255).tolist())
        std = tuple((pixels.std(axis=(0, 1, 2), dtype=np.float64) / 255).tolist())

    def split(images: np.ndarray, labels: np.ndarray) -> Dataset:
        return Dataset(_normalize(images, mean, std), labels.astype(np.int32))

    return Splits(
        name=name,
        train=split(train_x[train_idx], train_y[train_idx]),
        validation=split(train_x[val_idx], train_y[val_idx]),
        test=split(test_x, test_y),
        num_classes=int(num_classes),
        mean=tuple(mean),
        std=tuple(std),
    )


def _hold_out(name: str, n: int, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (validation, train) indices of a train split of ``n`` examples."""
    if not 0 <= validation_size < n:
        raise DataError(f"validation_size must be in [0, {n}) for {name}, got {validation_size}")
    permutation = np.random.default_rng(seed).permutation(n)
    return np.sort(permutation[:validation_size]), np.sort(permutation[validation_size:])


def _load_idx_source(
    name: str, data_dir: PathLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    if data_dir is None:
        if name != "mnist":
            raise DataError(
                f"{name} is not embedded (only mnist is): pass data_dir=<folder with {_file_list()}>"
                + (f", from {_IDX_SOURCES[name]}" if name in _IDX_SOURCES else "")
                + ", or source='tfds' to read a prepared TFDS copy (in a config: "
                "--config.data_dir=FOLDER or --config.data_source=tfds)."
            )
        folder: Path | Traversable = embedded_mnist_dir()
    else:
        folder = Path(data_dir)
        if not (folder / IDX_FILES["train_images"][0]).exists() and (folder / name).is_dir():
            folder = folder / name
    arrays = load_idx_dataset(folder, name=name, verify_checksum=name in KNOWN_SHA256)
    train_y, test_y = arrays["train_labels"], arrays["test_labels"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    return arrays["train_images"][..., None], train_y, arrays["test_images"][..., None], test_y, num_classes


def _pad(images: np.ndarray, size: int) -> np.ndarray:
    height, width = images.shape[1:3]
    if size < max(height, width):
        raise DataError(f"pad_to={size} is smaller than the images ({height}x{width})")
    top, left = (size - height) // 2, (size - width) // 2
    return np.pad(images, ((0, 0), (top, size - height - top), (left, size - width - left), (0, 0)))


def _normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    out = images.astype(np.float32)
    out *= np.float32(1 / 255)
    out -= np.asarray(mean, np.float32)
    out /= np.asarray(std, np.float32)
    return out


def reward_indices(splits: Splits, n: int, seed: int) -> np.ndarray:
    """Which ``n`` validation examples ``reward_subset`` draws from ``seed`` (sorted)."""
    available = len(splits.validation)
    if not 0 < n <= available:
        raise DataError(
            f"reward_subset needs 0 < n <= {available} (the validation size of {splits.name}), "
            f"got n={n}: ask for fewer, or load with a larger validation_size."
        )
    return np.sort(np.random.default_rng(seed).choice(available, n, replace=False))


def reward_subset(splits: Splits, n: int, seed: int) -> Dataset:
    """``n`` validation examples drawn without replacement from ``seed`` (the RL reward set)."""
    idx = reward_indices(splits, n, seed)
    return Dataset(splits.validation.images[idx], splits.validation.labels[idx])


def calibration_subset(splits: Splits, n: int, seed: int) -> np.ndarray:
    """``n`` training images, unaugmented, drawn from ``seed``: the batch on which a pruned
    candidate's BatchNorm statistics are re-estimated (``Evaluator(calibration_images=)``).
    A streamed training split gives its first ``n`` images (centre crops)."""
    available = len(splits.train)
    if not 0 < n <= available:
        raise DataError(f"calibration_subset needs 0 < n <= {available} (the training size of "
                        f"{splits.name}), got n={n}")
    if isinstance(splits.train, StreamedDataset):
        return next(splits.train.batches(n, train=False))[0]
    idx = np.sort(np.random.default_rng(seed).choice(available, n, replace=False))
    return splits.train.images[idx]


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Augment:
    """Random crop after zero padding (0 is the dataset mean once normalised), random flip."""

    crop_padding: int = 0
    flip: bool = True

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch, height, width = images.shape[:3]
        if self.crop_padding:
            p = self.crop_padding
            padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
            dy, dx = rng.integers(0, 2 * p + 1, size=(2, batch))
            rows = (dy[:, None] + np.arange(height))[:, :, None]
            cols = (dx[:, None] + np.arange(width))[:, None, :]
            images = padded[np.arange(batch)[:, None, None], rows, cols]
        if self.flip:
            flipped = rng.random(batch) < 0.5
            images = np.where(flipped[:, None, None, None], images[:, :, ::-1], images)
        return images


# CIFAR-style augmentation; fashion_mnist may use Augment(crop_padding=2), MNIST none.
_DEFAULT_AUGMENT = {"cifar10": Augment(crop_padding=4), "cifar100": Augment(crop_padding=4)}


def default_augment(name: str) -> Augment | None:
    """The standard training augmentation of a dataset, or None (MNIST-like data)."""
    return _DEFAULT_AUGMENT.get(name)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    rng_seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    augment: Augment | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (images, labels) numpy batches, deterministic per (``rng_seed``, ``epoch``)."""
    n = len(labels)
    if len(images) != n:
        raise DataError(f"{len(images)} images but {n} labels")
    if batch_size < 1 or (drop_remainder and batch_size > n):
        raise DataError(f"batch_size={batch_size} yields no batch from {n} examples")
    rng = np.random.default_rng([rng_seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        batch = images[idx]
        yield (batch if augment is None else augment(batch, rng)), labels[idx]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``purl-jax data prepare NAME [--data_dir DIR]`` or ``verify DIR [--name NAME]``."""
    parser = argparse.ArgumentParser(prog="purl-jax data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare a TFDS dataset as array_record (needs TensorFlow)")
    prep.add_argument("name")
    prep.add_argument("--data_dir", help="TFDS data folder (default: TFDS's, ~/tensorflow_datasets)")
    prep.add_argument("--manual_dir", help="folder with manually downloaded files (ImageNet tars)")
    verify = commands.add_parser("verify", help="check an IDX folder against the original files' SHA-256")
    verify.add_argument("directory")
    verify.add_argument("--name", help=f"one of {', '.join(KNOWN_SHA256)} (default: the folder's name)")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepared = prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
            print(f"prepared {args.name} in {prepared}")
        else:
            folder = Path(args.directory)
            if not folder.is_dir():
                raise DataError(
                    f"{args.directory} is not a folder{'' if folder.exists() else ' (it does not exist)'}: "
                    f"verify DIR takes the folder holding {_file_list()}"
                )
            name = args.name or folder.resolve().name
            if name not in KNOWN_SHA256:
                raise DataError(
                    f"No known SHA-256 checksums for {name!r} (known: {', '.join(KNOWN_SHA256)}): "
                    f"name the dataset of {args.directory} with --name "
                    f"({'/'.join(KNOWN_SHA256)}) when the folder is named otherwise"
                )
            arrays = load_idx_dataset(args.directory, name=name, verify_checksum=True)
            print(
                f"OK: {args.directory} holds the original {name} files (SHA-256 verified): "
                f"{len(arrays['train_labels'])} train, {len(arrays['test_labels'])} test examples"
            )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
