"""load_image_data: every kind of source (made here, small), the validation hold-out, and its error messages."""

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vit_scratch.config.schema import ConfigError, DataArguments
from vit_scratch.data import DataError, ImageData, load_image_data

datasets.disable_progress_bars()

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_args(name, tmp_path: Path, **kwargs) -> DataArguments:
    kwargs = {"validation_size": 0, "cache_dir": str(tmp_path / "hf_cache"), **kwargs}
    return DataArguments(name=str(name), **kwargs)


def png(array: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes (lossless)."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def signed_images(n: int, size: int = 8) -> np.ndarray:
    """uint8 (n, size, size, 3), image i carrying i in its first two pixels' red values (a unique signature)."""
    images = np.random.RandomState(n).randint(0, 256, (n, size, size, 3)).astype(np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return images


def signatures(images: torch.Tensor) -> list[int]:
    """Inverse of `signed_images` on uint8 (N, 3, H, W)."""
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


def save_dict(path: Path, splits: dict[str, tuple[list, list]], names=("cat", "dog")) -> Path:
    """{split: (image values, labels)} -> a save_to_disk DatasetDict with Image + ClassLabel columns."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        for split, (images, labels) in splits.items()
    }).save_to_disk(str(path))
    return path


def image_values(arrays) -> list[dict]:
    return [{"bytes": png(a), "path": None} for a in arrays]


def check_shapes(data: ImageData, n_train: int, size: int = 32, channels: int = 3):
    assert data.train.images.shape == (n_train, channels, size, size)
    assert data.train.images.dtype == torch.uint8 and data.train.images.is_contiguous()
    assert data.train.labels.dtype == torch.int64 and data.train.labels.shape == (n_train,)
    assert len(data.mean) == len(data.std) == channels


# ---------------------------------------------------------------- sources


def test_hub_layout_folder_cifar_slice(cifar10_path, tmp_path):
    """A 300/100-row parquet copy of the local uoft-cs/cifar10 (same layout, README and features)."""
    root = tmp_path / "cifar10"
    (root / "plain_text").mkdir(parents=True)
    shutil.copy(cifar10_path / "README.md", root / "README.md")
    for split, rows in (("train", 300), ("test", 100)):
        source = pq.ParquetFile(cifar10_path / "plain_text" / f"{split}-00000-of-00001.parquet")
        first = next(source.iter_batches(batch_size=rows))
        pq.write_table(pa.Table.from_batches([first], schema=source.schema_arrow),
                       root / "plain_text" / f"{split}-00000-of-00001.parquet")
    args = make_args(root, tmp_path, validation_size=50, max_eval_samples=40, max_test_samples=30)
    data = load_image_data(args, image_size=32, num_channels=3, num_labels=10)
    check_shapes(data, 250)
    assert data.validation.images.shape == (40, 3, 32, 32) and data.test.images.shape == (30, 3, 32, 32)
    assert data.class_names == CIFAR_NAMES
    assert all(0.3 < m < 0.6 for m in data.mean) and all(0.15 < s < 0.35 for s in data.std)
    assert set(data.train.labels.tolist()) <= set(range(10)) and len(set(data.train.labels.tolist())) == 10
    # test row 0 is exactly the JPEG decoded by PIL
    first = next(pq.ParquetFile(root / "plain_text" / "test-00000-of-00001.parquet").iter_batches(batch_size=1))
    expected = np.asarray(Image.open(io.BytesIO(first.column("img")[0]["bytes"].as_py())).convert("RGB"))
    assert torch.equal(data.test.images[0], torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    assert data.test.labels[0] == first.column("label")[0].as_py()

    # decoded once: a second load reuses the cached arrays (no new cache files) and gives the same tensors
    cache_files = set((tmp_path / "hf_cache").rglob("cache-*.arrow"))
    again = load_image_data(args, image_size=32, num_channels=3, num_labels=10)
    assert set((tmp_path / "hf_cache").rglob("cache-*.arrow")) == cache_files
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.test.labels, data.test.labels)


def test_save_to_disk_dataset_dict(tmp_path):
    train, test = signed_images(12, 32), signed_images(4, 32)
    path = save_dict(tmp_path / "saved", {"train": (image_values(train), [i % 2 for i in range(12)]),
                                          "test": (image_values(test), [1, 0, 1, 0])})
    data = load_image_data(make_args(path, tmp_path), image_size=32, num_channels=3, num_labels=2)
    check_shapes(data, 12)
    assert data.validation is None and data.class_names == ["cat", "dog"]
    assert torch.equal(data.train.images, torch.from_numpy(train.transpose(0, 3, 1, 2).copy()))  # PNG: lossless
    assert data.train.labels.tolist() == [i % 2 for i in range(12)] and data.test.labels.tolist() == [1, 0, 1, 0]
    assert torch.equal(data.test.images, torch.from_numpy(test.transpose(0, 3, 1, 2).copy()))
    expected_mean = train.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(data.mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, train.reshape(-1, 3).std(0) / 255, rtol=1e-12)


def test_save_to_disk_single_dataset_with_int_labels_and_custom_columns(tmp_path):
    images = signed_images(6)
    features = datasets.Features({"pic": datasets.Image(), "y": datasets.Value("int64")})
    datasets.Dataset.from_dict({"pic": image_values(images), "y": [0, 2, 1, 2, 0, 1]},
                               features=features).save_to_disk(str(tmp_path / "single"))
    args = make_args(tmp_path / "single", tmp_path, test_split=None, image_column="pic", label_column="y")
    data = load_image_data(args, image_size=8, num_channels=3)
    check_shapes(data, 6, size=8)
    assert data.test is None and data.class_names == ["0", "1", "2"]  # plain ints: str(i) over 0..max
    assert load_image_data(args, image_size=8, num_channels=3, num_labels=4).class_names == ["0", "1", "2", "3"]


def write_png_folder(root: Path, classes=("cat", "dog")) -> None:
    rng = np.random.RandomState(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(root / c / f"{i}.png")
    Image.fromarray(rng.randint(0, 256, (32, 32)).astype(np.uint8), mode="L").save(root / classes[0] / "gray.png")
    Image.fromarray(rng.randint(0, 256, (40, 40, 3)).astype(np.uint8)).save(root / classes[1] / "big.png")


def test_image_folder(tmp_path):
    root = tmp_path / "pets"
    write_png_folder(root)
    data = load_image_data(make_args(root, tmp_path, test_split=None), image_size=32, num_channels=3, num_labels=2)
    check_shapes(data, 6)
    assert data.class_names == ["cat", "dog"] and sorted(data.train.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    gray = torch.from_numpy(np.array(Image.open(root / "cat" / "gray.png")))
    equal_channels = [im for im in data.train.images if torch.equal(im[0], im[1]) and torch.equal(im[1], im[2])]
    assert len(equal_channels) == 1 and torch.equal(equal_channels[0][0], gray)  # L -> RGB copies the channel
    big = np.asarray(Image.open(root / "dog" / "big.png").resize((32, 32), Image.Resampling.BICUBIC))
    assert any(torch.equal(im, torch.from_numpy(big.transpose(2, 0, 1).copy())) for im in data.train.images)

    gray_data = load_image_data(make_args(root, tmp_path, test_split=None), image_size=16, num_channels=1)
    check_shapes(gray_data, 6, size=16, channels=1)


def test_image_folder_with_split_folders(tmp_path):
    root = tmp_path / "pets"
    write_png_folder(root / "train")
    write_png_folder(root / "test")
    data = load_image_data(make_args(root, tmp_path, validation_size=2), image_size=32, num_channels=3)
    check_shapes(data, 4)
    assert data.class_names == ["cat", "dog"] and len(data.validation) == 2 and len(data.test) == 6


def cifar_batch(n: int, start: int, rng: np.random.RandomState) -> dict:
    data = rng.randint(0, 256, (n, 3072)).astype(np.uint8)  # rows: R, G, B planes of 32 x 32
    data[:, 0], data[:, 1] = (start + np.arange(n)) // 256, (start + np.arange(n)) % 256  # signature
    return {b"batch_label": b"batch", b"labels": [int(x) for x in rng.randint(0, 10, n)], b"data": data,
            b"filenames": [b"x.png"] * n}


def write_cifar(root: Path, per_batch: int = 4, archive: bool = True) -> dict[str, dict]:
    """The CIFAR-10 python version under `root`: data batches pickled like the original (protocol 2, numpy arrays
    as numpy.core.multiarray._reconstruct), test_batch and batches.meta with today's highest protocol."""
    rng = np.random.RandomState(0)
    batches = {f"data_batch_{i}": cifar_batch(per_batch, (i - 1) * per_batch, rng) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(per_batch, 1000, rng)
    batches["batches.meta"] = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        if name.startswith("data_batch"):
            data = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        else:
            data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        (folder / name).write_bytes(data)
    if archive:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
        shutil.rmtree(folder)
    return batches


@pytest.mark.parametrize("where", ["archive", "archive_parent", "folder", "folder_parent"])
def test_cifar_python_version(tmp_path, where):
    batches = write_cifar(tmp_path / "datasets", archive=where.startswith("archive"))
    name = {"archive": "datasets/cifar-10-python.tar.gz", "folder": "datasets/cifar-10-batches-py"}.get(
        where, "datasets")
    data = load_image_data(make_args(tmp_path / name, tmp_path), image_size=32, num_channels=3, num_labels=10)
    check_shapes(data, 20)
    assert data.class_names == CIFAR_NAMES
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert data.train.labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.test.labels.tolist() == batches["test_batch"][b"labels"]
    image = data.train.images[7]  # plane layout: pixel (c, y, x) is data[c * 1024 + y * 32 + x]
    for c, y, x in [(0, 0, 5), (1, 3, 7), (2, 31, 31), (2, 10, 0)]:
        assert image[c, y, x] == train_data[7, c * 1024 + y * 32 + x]
    assert torch.equal(data.train.images.reshape(20, -1), torch.from_numpy(train_data))
    assert torch.equal(data.test.images.reshape(4, -1), torch.from_numpy(batches["test_batch"][b"data"]))


def test_cifar_resized_and_gray(tmp_path):
    write_cifar(tmp_path, archive=False)
    data = load_image_data(make_args(tmp_path, tmp_path), image_size=16, num_channels=1)
    check_shapes(data, 20, size=16, channels=1)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path, archive=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"test_batch|refusing to load builtins\.print"):
        load_image_data(make_args(tmp_path, tmp_path), image_size=32, num_channels=3)


# ---------------------------------------------------------------- validation hold-out


def test_validation_hold_out(tmp_path):
    write_cifar(tmp_path, per_batch=20, archive=False)  # 100 train images, signatures 0..99

    def load(seed=0, **kwargs) -> ImageData:
        args = make_args(tmp_path, tmp_path, validation_size=30, validation_seed=seed, **kwargs)
        return load_image_data(args, image_size=32, num_channels=3)

    data = load()
    train, val = signatures(data.train.images), signatures(data.validation.images)
    assert len(train) == 70 and len(val) == 30
    assert not set(train) & set(val) and set(train) | set(val) == set(range(100))
    assert train == sorted(train) and val == sorted(val)  # source order kept within each part
    assert signatures(load().validation.images) == val  # same seed, same split
    other = signatures(load(seed=1).validation.images)
    assert other != val and len(other) == 30
    cut = load(max_train_samples=10, max_eval_samples=5)
    assert signatures(cut.train.images) == train[:10] and signatures(cut.validation.images) == val[:5]
    assert len(cut.test) == len(data.test) > 5  # max_eval_samples is validation only: the test split stays whole
    assert len(load(max_test_samples=3).test) == 3
    expected = load_image_data(make_args(tmp_path, tmp_path, test_split=None, validation_size=0), 32, 3)
    assert torch.equal(cut.train.labels, expected.train.labels[train[:10]])  # labels travel with their images


def test_hold_out_of_a_decoded_subset_keeps_labels_with_images(tmp_path):
    """max_*_samples decode only the rows kept: images and labels must still match row for row."""
    images, labels = signed_images(40), [i % 3 for i in range(40)]
    path = save_dict(tmp_path / "saved", {"train": (image_values(images), labels)}, names=("a", "b", "c"))
    args = make_args(path, tmp_path, test_split=None, validation_size=10, max_train_samples=7, max_eval_samples=4)
    data = load_image_data(args, image_size=8, num_channels=3)
    assert len(data.train) == 7 and len(data.validation) == 4
    for split in (data.train, data.validation):
        rows = signatures(split.images)
        assert split.labels.tolist() == [r % 3 for r in rows]
        assert torch.equal(split.images, torch.from_numpy(images[rows].transpose(0, 3, 1, 2).copy()))
    assert not set(signatures(data.train.images)) & set(signatures(data.validation.images))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["./no/such/dir", "/no/such/dir", "~/no-such-dir-xyz", "a/b/c"])
def test_missing_path(tmp_path, name):
    with pytest.raises(DataError, match=f"dataset.name={name}: no such file or folder"):
        load_image_data(make_args(name, tmp_path), image_size=32, num_channels=3)


def test_path_that_is_no_known_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="a folder, but not a save_to_disk folder"):
        load_image_data(make_args(tmp_path / "empty", tmp_path), image_size=32, num_channels=3)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="a file, but not a CIFAR-10 python archive"):
        load_image_data(make_args(tmp_path / "notes.txt", tmp_path), image_size=32, num_channels=3)


def test_hub_id_offline_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no-such-owner/no-such-dataset: not a local path"):
        load_image_data(make_args("no-such-owner/no-such-dataset", tmp_path), image_size=32, num_channels=3)


@pytest.fixture
def small_dict(tmp_path) -> Path:
    return save_dict(tmp_path / "saved", {"train": (image_values(signed_images(5)), [0, 1, 0, 1, 0]),
                                          "test": (image_values(signed_images(2)), [1, 0])})


def test_missing_column_lists_columns(small_dict, tmp_path):
    with pytest.raises(DataError, match=r"no column 'pixels' \(dataset.image_column\); columns: \['image', 'label'\]"):
        load_image_data(make_args(small_dict, tmp_path, image_column="pixels"), image_size=8, num_channels=3)
    with pytest.raises(DataError, match=r"no column 'target' \(dataset.label_column\)"):
        load_image_data(make_args(small_dict, tmp_path, label_column="target"), image_size=8, num_channels=3)


def test_unknown_split_lists_splits(small_dict, tmp_path):
    with pytest.raises(DataError, match=r"dataset.test_split='validation'.*splits: \['test', 'train'\]"):
        load_image_data(make_args(small_dict, tmp_path, test_split="validation"), image_size=8, num_channels=3)


def test_label_out_of_range_names_split_and_row(tmp_path):
    images = image_values(signed_images(5))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    for labels, num_labels, bad in (([0, 1, 0, 5, 1], 2, "row 3: label 5 is outside \\[0, 2\\)"),
                                    ([0, 1, -1, 0, 1], None, "row 2: label -1 is outside >= 0")):
        path = tmp_path / f"saved{num_labels}"
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": images, "label": labels},
                                                                  features=features)}).save_to_disk(str(path))
        with pytest.raises(DataError, match=f"split 'train', {bad}"):
            load_image_data(make_args(path, tmp_path, test_split=None), 8, 3, num_labels=num_labels)


def test_empty_split(tmp_path):
    write_cifar(tmp_path, archive=False)
    batch = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="split 'test': the split is empty"):
        load_image_data(make_args(tmp_path, tmp_path), image_size=32, num_channels=3)
    # datasets itself cannot load an empty save_to_disk split: still a DataError naming the source
    path = save_dict(tmp_path / "saved", {"train": (image_values(signed_images(3)), [0, 1, 0]), "test": ([], [])})
    with pytest.raises(DataError, match=f"dataset.name={path}: a save_to_disk folder: "):
        load_image_data(make_args(path, tmp_path), image_size=8, num_channels=3)


def test_validation_size_too_large(small_dict, tmp_path):
    with pytest.raises(DataError, match="validation_size=5 must be smaller than the 5 images"):
        load_image_data(make_args(small_dict, tmp_path, validation_size=5), image_size=8, num_channels=3)


@pytest.mark.parametrize("bad", [b"not an image at all", "truncated"])
def test_corrupt_image_names_row(tmp_path, bad):
    values = image_values(signed_images(6))
    values[4] = {"bytes": values[4]["bytes"][:60] if bad == "truncated" else bad, "path": None}
    path = save_dict(tmp_path / "saved", {"train": (values, [0] * 6)})
    with pytest.raises(DataError, match=r"split 'train', row 4: cannot decode column 'image': \w+"):
        load_image_data(make_args(path, tmp_path, test_split=None), image_size=8, num_channels=3)


def test_corrupt_image_row_is_the_source_row_when_decoding_a_subset(tmp_path):
    values = image_values(signed_images(10))
    values[9] = {"bytes": b"garbage", "path": None}
    path = save_dict(tmp_path / "saved", {"train": (values, [0] * 10)})
    raised = []
    for seed in range(20):  # decode 6 of 10 rows; whenever row 9 is among them, it is named as row 9
        args = make_args(path, tmp_path, test_split=None, validation_size=5, validation_seed=seed, max_train_samples=1)
        try:
            load_image_data(args, image_size=8, num_channels=3)
        except DataError as error:
            raised.append(str(error))
            break
    assert raised and "split 'train', row 9: cannot decode" in raised[0]


def test_num_channels_must_be_1_or_3(small_dict, tmp_path):
    with pytest.raises(ConfigError, match="model.num_channels=2"):
        load_image_data(make_args(small_dict, tmp_path), image_size=8, num_channels=2)
