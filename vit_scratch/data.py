"""Images and labels as uint8/int64 tensors, from a Hub dataset, a local folder or the CIFAR-10 python archive.

`load_image_data` finds the source `dataset.name` points at, decodes every image it needs ONCE into uint8
(C, H, W) arrays (cached by `datasets`, so the next run skips the decoding), holds a seeded validation set out
of the training split and measures the per-channel mean/std of what is left for training.
"""

import functools
import inspect
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import datasets
import numpy as np
import PIL
import PIL.Image
import PIL.ImageOps
import pyarrow as pa
import torch

from vit_scratch.config.schema import DataArguments
from vit_scratch.errors import ConfigError, DataError
from vit_scratch.image_files import IMAGE_EXTENSIONS, ImageRefused, open_image_bytes, to_mode
from vit_scratch.sources import is_local_path

CIFAR_ARCHIVE, CIFAR_FOLDER = "cifar-10-python.tar.gz", "cifar-10-batches-py"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


class LazyImages:
    """A split's images, decoded when indexed (`dataset.storage: stream`): `images[index]` decodes those rows, in that
    order, from the source (no cache) -> uint8 (B, C, S, S): the same pixels the held splits get."""

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, image_size: int, num_channels: int):
        self.read, self.rows = read, rows  # read: source rows (any order) -> uint8; rows: source row of each image
        self.shape = (len(rows), num_channels, image_size, image_size)
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> torch.Tensor:
        index = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return torch.from_numpy(self.read(self.rows[index]))

    def head(self, n: int) -> "LazyImages":
        """The first n images, still decoded when indexed."""
        return LazyImages(self.read, self.rows[:n], self.shape[2], self.shape[1])


@dataclass
class ImageSplit:
    images: torch.Tensor | LazyImages  # uint8 (N, C, H, W), contiguous, CPU; or decoded when indexed
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "ImageSplit":
        """The first n images and labels, held or lazy as this split is."""
        images = self.images.head(n) if isinstance(self.images, LazyImages) else self.images[:n]
        return ImageSplit(images, self.labels[:n])


@dataclass
class ImageData:
    train: ImageSplit
    validation: ImageSplit | None  # held out of train (`validation_size` images, seeded); None if size 0
    test: ImageSplit | None  # None if `test_split` is None
    class_names: list[str]  # index -> name
    mean: tuple[float, ...] | None  # per-channel mean of the training images, in [0, 1] units (None: not measured)
    std: tuple[float, ...] | None  # per-channel (population) std, same


@dataclass
class _Source:
    """One split before decoding: all its labels, and a way to decode any of its rows."""

    where: str  # "dataset 'NAME', split 'SPLIT'", for messages
    labels: np.ndarray  # int64 (N,)
    class_names: list[str] | None
    decode: Callable[[np.ndarray | None], np.ndarray]  # sorted rows (None = all) -> uint8 (rows, C, S, S), cached
    read: Callable[[np.ndarray], np.ndarray]  # rows in any order -> uint8 (rows, C, S, S), uncached (streaming)


@dataclass
class ImageSource:
    """A dataset opened but not decoded: which rows of which source split each part of the run uses, and their labels.

    `decode()` gives the splits as held uint8 tensors (decoded once, cached by `datasets`), `lazy()` as LazyImages
    decoded on demand; both give every image the same pixels. `decoded_bytes` says what holding them would take.
    """

    train: _Source
    test: _Source | None
    train_rows: np.ndarray  # sorted rows of the train split used for training
    val_rows: np.ndarray  # sorted rows of the train split held out for validation
    test_rows: np.ndarray  # rows of the test split (its first max_test_samples)
    class_names: list[str]
    image_size: int
    num_channels: int

    @property
    def decoded_bytes(self) -> int:
        """Bytes of uint8 pixels of every split the run holds (train, validation and test)."""
        images = len(self.train_rows) + len(self.val_rows) + len(self.test_rows)
        return images * self.num_channels * self.image_size ** 2

    def decode(self) -> ImageData:
        """Every split decoded into host memory (once: the next run reads `datasets`' cache), with mean/std."""
        train, n = self.train, len(self.train.labels)
        needed = np.union1d(self.train_rows, self.val_rows)  # decode only these (all of them -> one cache per seed)
        images = train.decode(None if len(needed) == n else needed)  # (len(needed), C, S, S)
        train_split = _split(images[np.searchsorted(needed, self.train_rows)], train.labels[self.train_rows])
        validation = _split(images[np.searchsorted(needed, self.val_rows)], train.labels[self.val_rows]) \
            if len(self.val_rows) else None
        del images
        test_split = None
        if self.test is not None:
            rows, all_rows = self.test_rows, len(self.test_rows) == len(self.test.labels)
            test_split = _split(self.test.decode(None if all_rows else rows), self.test.labels[rows])
        mean, std = mean_std(channel_histograms(train_split.images))
        return ImageData(train_split, validation, test_split, self.class_names, mean, std)

    def lazy(self) -> ImageData:
        """Every split as LazyImages (nothing decoded yet); mean/std are None: measuring them means decoding."""

        def split(source: _Source, rows: np.ndarray) -> ImageSplit:
            images = LazyImages(source.read, rows, self.image_size, self.num_channels)
            return ImageSplit(images, torch.from_numpy(source.labels[rows].astype(np.int64)))

        validation = split(self.train, self.val_rows) if len(self.val_rows) else None
        test = split(self.test, self.test_rows) if self.test is not None else None
        return ImageData(split(self.train, self.train_rows), validation, test, self.class_names, None, None)


def open_image_data(args: DataArguments, image_size: int, num_channels: int,
                    num_labels: int | None = None) -> ImageSource:
    """Find `args.name`'s train (and test) split, check their columns and labels, and pick the rows of each part of
    the run, decoding nothing. Sources, tried in this order: a `save_to_disk` folder; the CIFAR-10 python version
    (`cifar-10-python.tar.gz`, `cifar-10-batches-py/`, or a folder holding either); an image folder (ROOT/CLASS/* or
    ROOT/SPLIT/CLASS/*); a local folder in the Hub layout or a Hub id. The validation set is `validation_size` rows
    drawn from the train split with `validation_seed` (each part keeps the source's row order), then
    `max_train_samples` / `max_eval_samples` / `max_test_samples` keep the first rows of training / validation /
    test. Raises DataError for bad data (the message names the source, split, column or row), ConfigError for a
    `num_channels` other than 1 or 3.
    """
    _check_channels(num_channels)
    splits = _open(args)
    train = _source(splits, args.train_split, "train_split", args, image_size, num_channels, num_labels)
    test = None if args.test_split is None else _source(splits, args.test_split, "test_split", args, image_size,
                                                        num_channels, num_labels)
    train_rows, val_rows = _holdout(train, args)
    test_rows = np.arange(len(test.labels))[: args.max_test_samples] if test is not None else np.arange(0)
    class_names = train.class_names
    if class_names is None:  # plain integer labels
        top = max(int(s.labels.max()) for s in (train, test) if s is not None)
        class_names = [str(i) for i in range(num_labels if num_labels is not None else top + 1)]
    return ImageSource(train, test, train_rows, val_rows, test_rows, class_names, image_size, num_channels)


def load_image_data(args: DataArguments, image_size: int, num_channels: int,
                    num_labels: int | None = None) -> ImageData:
    """`args.name`'s train, validation (and test) splits as uint8 (N, num_channels, image_size, image_size) tensors
    in host memory: `open_image_data(...).decode()`. Only the rows kept are decoded."""
    return open_image_data(args, image_size, num_channels, num_labels).decode()


def load_split(args: DataArguments, split: str, image_size: int,
               num_channels: int) -> tuple[ImageSplit, list[str] | None]:
    """One split for evaluating a saved model, with exactly the rows and decoding `load_image_data` gives it.

    `split`: "train" / "validation" (the rows of `train_split` that training kept / held out, same seed, same
    `max_train_samples` / `max_eval_samples`), "test" (`test_split`, its first `max_test_samples` rows) or any other
    split name of the source (its first `max_test_samples` rows). Only those rows are decoded. Returns the split and
    the source's class names (None for plain integer labels); labels are not checked against a model here.
    """
    _check_channels(num_channels)
    splits = _open(args)
    name = source_split_name(args, split)
    if split in ("train", "validation"):
        source = _source(splits, name, "train_split", args, image_size, num_channels, None)
        train_rows, val_rows = _holdout(source, args)
        rows = train_rows if split == "train" else val_rows
        if not len(rows):
            raise DataError(f"dataset.validation_size=0: nothing was held out of {source.where} for validation")
    else:
        if name is None:
            raise ConfigError("dataset.test_split=None: there is no test split to evaluate (name one)")
        if split != "test" and name not in splits:
            raise DataError(f"split {split!r}: {args.name!r} has no such split; splits: {sorted(splits)}")
        source = _source(splits, name, "test_split", args, image_size, num_channels, None)
        rows = np.arange(len(source.labels))[: args.max_test_samples]
    images = source.decode(None if len(rows) == len(source.labels) else rows)
    return _split(images, source.labels[rows]), source.class_names


def source_split_name(args: DataArguments, split: str) -> str | None:
    """The source's own split that `load_split(args, split)` reads rows of."""
    return {"train": args.train_split, "validation": args.train_split, "test": args.test_split}.get(split, split)


def _check_channels(num_channels: int) -> None:
    if num_channels not in (1, 3):
        raise ConfigError(f"model.num_channels={num_channels!r} is invalid: images convert to 1 (L) or 3 (RGB)")


def _holdout(train: _Source, args: DataArguments) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of the train split, sorted: `validation_size` rows drawn with
    `validation_seed`, then each part cut to its first `max_train_samples` / `max_eval_samples`."""
    n = len(train.labels)
    if args.validation_size >= n:
        raise DataError(f"dataset.validation_size={args.validation_size} must be smaller than the {n} images of "
                        f"{train.where}")
    order = np.random.RandomState(args.validation_seed).permutation(n)  # legacy RNG: stable across numpy versions
    val_rows = np.sort(order[: args.validation_size])[: args.max_eval_samples]
    train_rows = np.sort(order[args.validation_size:])[: args.max_train_samples]
    return train_rows, val_rows


def _split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))


def channel_histograms(images: torch.Tensor, block: int = 1024) -> np.ndarray:
    """uint8 (N, C, H, W) -> int64 (C, 256) pixel-value counts per channel, `block` images at a time (small copies);
    counts add up, so parts of a split can be counted apart (the stream path counts batch by batch)."""
    counts = np.zeros((images.shape[1], 256), dtype=np.int64)
    for start in range(0, len(images), block):
        part = images[start:start + block].numpy()
        for c in range(part.shape[1]):
            counts[c] += np.bincount(part[:, c].ravel(), minlength=256)
    return counts


def mean_std(counts: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std in [0, 1] units from (C, 256) histograms (no float copy of the images)."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for channel in counts.astype(np.float64):
        mean = float(channel @ values / channel.sum())
        means.append(mean)
        stds.append(float(np.sqrt(channel @ (values - mean) ** 2 / channel.sum())))
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------- finding and opening the source


def _open(args: DataArguments) -> dict[str, Any]:
    """`args.name` -> {split name: datasets.Dataset or _Cifar}, trying each kind of source in turn."""
    name = args.name
    path = Path(os.path.expanduser(name))
    if path.exists():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():  # save_to_disk
            loaded = _load(name, "a save_to_disk folder", datasets.load_from_disk, str(path))
            return loaded if isinstance(loaded, dict) else {"train": loaded}
        cifar = _find_cifar(path)
        if cifar is not None:
            return _load_cifar(cifar, name)
        if path.is_file():
            raise DataError(f"dataset.name={name}: a file, but not a CIFAR-10 python archive ({CIFAR_ARCHIVE})")
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for pattern in ("*/*", "*/*/*") for p in path.glob(pattern)):
            return _load(name, "an image folder", datasets.load_dataset, "imagefolder", data_dir=str(path),
                         cache_dir=args.cache_dir)
        return _load(name, "a folder, but not a save_to_disk folder, CIFAR-10 archive, image folder or Hub-layout "
                     "dataset", datasets.load_dataset, str(path), revision=args.revision, cache_dir=args.cache_dir)
    if is_local_path(name):  # written as a path, but not there: a typo, never a Hub id
        raise DataError(f"dataset.name={name}: no such file or folder")
    return _load(name, "not a local path, and loading it from the Hub failed", datasets.load_dataset, name,
                 revision=args.revision, cache_dir=args.cache_dir)


def _load(name: str, kind: str, loader: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`loader(*args, **kwargs)`, its failures turned into a DataError that says which source failed and why."""
    try:
        loaded = loader(*args, **kwargs)
    except Exception as error:  # datasets raises many kinds of errors
        root = error
        while root.__cause__ is not None:  # e.g. DatasetGenerationError hides the file's own error
            root = root.__cause__
        detail = f" (caused by {type(root).__name__}: {root})" if root is not error else ""
        raise DataError(f"dataset.name={name}: {kind}: {type(error).__name__}: {error}{detail}") from error
    return loaded if isinstance(loaded, datasets.Dataset) else dict(loaded)


def _source(splits: dict[str, Any], split: str, key: str, args: DataArguments, image_size: int,
            num_channels: int, num_labels: int | None) -> _Source:
    """Pick a split, find its columns, read and check its labels, and wrap its decoder."""
    where = f"dataset {args.name!r}, split {split!r}"
    if split not in splits:
        raise DataError(f"dataset.{key}={split!r}: {args.name!r} has no such split; splits: {sorted(splits)}")
    data = splits[split]
    if isinstance(data, _Cifar):
        decode = functools.partial(_decode_arrays, data.images, image_size, num_channels)
        source = _Source(where, data.labels, data.class_names, decode, decode)  # arrays: any rows, any order
    else:
        image_column = _column(data, args.image_column, ("img", "image"), "image", where)
        label_column = _column(data, args.label_column, ("label", "labels"), "label", where)
        if not isinstance(data.features[image_column], datasets.Image):
            raise DataError(f"{where}: column {image_column!r} is {data.features[image_column]}, not an Image")
        label_feature = data.features[label_column]
        labels = data.with_format("arrow")[label_column]
        if not pa.types.is_integer(labels.type) or labels.null_count:
            raise DataError(f"{where}: label column {label_column!r} ({label_feature}) must hold an integer class "
                            "per row, with no missing values")
        names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
        decode = functools.partial(_decode_dataset, data, image_column, where, image_size, num_channels)
        undecoded = data.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        read = functools.partial(_read_rows, undecoded, image_column, where, image_size, num_channels)
        source = _Source(where, labels.to_numpy().astype(np.int64), names, decode, read)
    if len(source.labels) == 0:
        raise DataError(f"{where}: the split is empty")
    if num_labels is not None and source.class_names is not None and len(source.class_names) != num_labels:
        raise DataError(f"{where}: model.num_labels={num_labels}, but the dataset has {len(source.class_names)} "
                        f"classes ({', '.join(source.class_names)}); remove model.num_labels or set it to "
                        f"{len(source.class_names)}")
    # datasets does not enforce a ClassLabel's range when it reads parquet: a label past the names would fail only
    # mid-training (a device-side assert on a GPU), or count silently as a wrong prediction in the test split.
    classes = len(source.class_names) if source.class_names is not None else num_labels
    limit = np.iinfo(np.int64).max if classes is None else classes
    bad = np.flatnonzero((source.labels < 0) | (source.labels >= limit))
    if len(bad):
        start, more = f"{where}, row {bad[0]}: label {source.labels[bad[0]]}", \
            f"; {len(bad)} rows in all" if len(bad) > 1 else ""
        if source.class_names is not None:
            raise DataError(f"{start} is outside [0, {classes}) (the dataset's {classes} class names){more}")
        if num_labels is not None:
            raise DataError(f"{start} is outside [0, {classes}) (model.num_labels={num_labels}){more}")
        raise DataError(f"{start} is outside >= 0{more}")
    return source


def _column(data: datasets.Dataset, given: str | None, defaults: tuple[str, ...], what: str, where: str) -> str:
    if given is not None and given not in data.column_names:
        raise DataError(f"{where}: no column {given!r} (dataset.{what}_column); columns: {data.column_names}")
    found = [given] if given is not None else [c for c in defaults if c in data.column_names]
    if not found:
        raise DataError(f"{where}: no {what} column (looked for {list(defaults)}); set dataset.{what}_column "
                        f"to one of {data.column_names}")
    return found[0]


# ---------------------------------------------------------------- decoding


def _to_chw(image: PIL.Image.Image, image_size: int, num_channels: int) -> np.ndarray:
    """Any PIL image -> uint8 (C, S, S): converted to L/RGB (`to_mode`), resized (bicubic) when its size differs."""
    image = to_mode(image, num_channels)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), PIL.Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)  # (S, S) or (S, S, 3)
    return array[None] if num_channels == 1 else array.transpose(2, 0, 1)


def _decode_batch(batch: dict[str, list], indices: list[int], column: str, where: str, image_size: int,
                  num_channels: int, rows: list[int] | None, decoder: str) -> dict[str, np.ndarray]:
    """`Dataset.map` function: undecoded Image values ({bytes, path}) -> "pixels" uint8 (B, C*S*S).

    `rows[i]` is the source row of batch index i (None: the same); `decoder` is only part of map's cache key.
    """
    out = np.empty((len(indices), num_channels * image_size * image_size), dtype=np.uint8)
    for k, (value, index) in enumerate(zip(batch[column], indices, strict=True)):
        try:
            data = value["bytes"]
            if data is None:
                data = Path(value["path"]).read_bytes()
            with open_image_bytes(io.BytesIO(data)) as image:
                image.load()  # decodes now: truncated data fails here
                out[k] = _to_chw(PIL.ImageOps.exif_transpose(image), image_size, num_channels).reshape(-1)
        except Exception as error:
            # the file where the source has one (an image folder; a Hub image's original name), else the row
            place = f"file {value['path']}" if value.get("path") else f"row {index if rows is None else rows[index]}"
            detail = "not an image file Pillow can read" if isinstance(error, PIL.UnidentifiedImageError) else error
            cause = f"refused: {error}" if isinstance(error, ImageRefused) else \
                f"cannot decode column {column!r}: {type(error).__name__}: {detail}"
            raise DataError(f"{where}, {place}: {cause}") from error
    return {"pixels": out}


def _decode_dataset(data: datasets.Dataset, column: str, where: str, image_size: int, num_channels: int,
                    rows: np.ndarray | None) -> np.ndarray:
    """Decode `rows` (None = all) of an Image column with one cached `map`; -> uint8 (rows, C, S, S)."""
    data = data.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    if rows is not None:
        data = data.select(rows)
    size = num_channels * image_size * image_size
    features = datasets.Features({"pixels": datasets.List(datasets.Value("uint8"), length=size)})
    data = data.map(_decode_batch, with_indices=True, batched=True, remove_columns=[column], features=features,
                    desc=f"Decoding {where}", fn_kwargs=dict(
                        column=column, where=where, image_size=image_size, num_channels=num_channels,
                        rows=None if rows is None else rows.tolist(), decoder=_decoder_version()))
    out = np.empty((len(data), num_channels, image_size, image_size), dtype=np.uint8)
    start = 0
    for chunk in data.with_format("arrow")["pixels"].chunks:  # memory-mapped cache -> out, a chunk at a time
        out[start:start + len(chunk)] = chunk.flatten().to_numpy().reshape(-1, *out.shape[1:])
        start += len(chunk)
    return out


def _read_rows(data: datasets.Dataset, column: str, where: str, image_size: int, num_channels: int,
               rows: np.ndarray) -> np.ndarray:
    """Decode `rows` (any order) of an undecoded Image column, uncached: uint8 (rows, C, S, S), exactly the pixels
    `_decode_dataset` caches (the same function decodes), a bad image named by its source row."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    values = data[rows.tolist()][column]
    out = _decode_batch({column: values}, list(range(len(rows))), column, where, image_size, num_channels,
                        rows.tolist(), decoder="")["pixels"]
    return out.reshape(-1, num_channels, image_size, image_size)


def _decoder_version() -> str:
    """datasets fingerprints a module's functions by name only: key the decoded cache on their source (and Pillow's
    version, which can change resizing) so that changing the decoding never reuses stale arrays."""
    return PIL.__version__ + "".join(inspect.getsource(f) for f in (_to_chw, to_mode, open_image_bytes, _decode_batch))


def _decode_arrays(images: np.ndarray, image_size: int, num_channels: int, rows: np.ndarray | None) -> np.ndarray:
    """Already-decoded uint8 (N, C, H, W) -> uint8 (rows, num_channels, S, S), via PIL only if the shape differs."""
    images = images if rows is None else images[rows]
    if images.shape[1:] == (num_channels, image_size, image_size):
        return images
    return np.stack([_to_chw(PIL.Image.fromarray(image.transpose(1, 2, 0)), image_size, num_channels)
                     for image in images])


# ---------------------------------------------------------------- CIFAR-10 python archive


@dataclass
class _Cifar:
    images: np.ndarray  # uint8 (N, 3, 32, 32)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]


class _CifarUnpickler(pickle.Unpickler):
    """Loads only what CIFAR batches hold (dicts, lists, bytes, numpy arrays): a pickle cannot run code here."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {(m, n) for m in ("numpy.core.numeric", "numpy._core.numeric") for n in ("_frombuffer",)}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("__builtin__", "bytes"),
                ("builtins", "bytes"), ("__builtin__", "bytearray"), ("builtins", "bytearray")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _find_cifar(path: Path) -> Path | None:
    """The CIFAR archive/folder `path` is or holds (the extracted folder first), or None."""
    for candidate in (path, path / CIFAR_FOLDER, path / CIFAR_ARCHIVE):
        if (candidate.is_dir() and (candidate / "batches.meta").is_file()) or (
                candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar"))):
            return candidate
    return None


def _load_cifar(path: Path, name: str) -> dict[str, _Cifar]:
    """Read data_batch_1..5 (train), test_batch (test) and batches.meta, from the folder or straight from the tar."""
    try:
        if path.is_dir():
            files = {f: (path / f).read_bytes() for f in CIFAR_FILES}
        else:
            with tarfile.open(path) as tar:
                members = {PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
                files = {f: tar.extractfile(members[f]).read() for f in CIFAR_FILES}
        batches = {f: _CifarUnpickler(io.BytesIO(data), encoding="bytes").load() for f, data in files.items()}
    except (OSError, KeyError, tarfile.TarError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"dataset.name={name}: cannot read the CIFAR-10 python batches from {path}: "
                        f"{type(error).__name__}: {error}") from error
    class_names = [n.decode() for n in batches["batches.meta"][b"label_names"]]

    def split(*files: str) -> _Cifar:
        images, labels = [], []
        for f in files:
            data = np.asarray(batches[f][b"data"], dtype=np.uint8)  # (N, 3072): R, G, B planes of 32 x 32
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"dataset.name={name}: {path}/{f}: data has shape {data.shape}, not (N, 3072)")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batches[f][b"labels"], dtype=np.int64))
        return _Cifar(np.concatenate(images), np.concatenate(labels), class_names)

    return {"train": split(*CIFAR_FILES[:5]), "test": split("test_batch")}
