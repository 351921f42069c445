"""dataset.storage: the three ways of holding the images (device, host, stream) give the same pixels, the same batches
and the same training; auto chooses by size; a streamed bad image is named by its row.

Resume after SIGKILL / SIGTERM in host and stream are test_resume_sigkill.py's and test_preemption.py's; a
two-machine launch covering every training image once per epoch in host and stream is test_multinode.py's.
"""

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from vit_scratch import storage
from vit_scratch.data import LazyImages, open_image_data
from vit_scratch.errors import DataError
from vit_scratch.storage import (
    DeviceImageDataset,
    HostImageDataset,
    StreamDataError,
    StreamImageDataset,
    choose_storage,
    make_dataset,
)

from .faults_harness import RUN, step_logs
from .helpers import TINY
from .test_data import image_values, make_args, save_dict, signatures, signed_images, write_cifar, write_png_folder
from .test_train_e2e import train_in_process

MODES = ("device", "host", "stream")


def opened(tmp_path: Path, kind: str):
    """A small source of each kind, opened with a hold-out, a cut and a test split where the kind has one."""
    if kind == "save_to_disk":
        path = save_dict(tmp_path / "saved", {"train": (image_values(signed_images(20)), [i % 2 for i in range(20)]),
                                               "test": (image_values(signed_images(7)), [1] * 7)})
        args = make_args(path, tmp_path, validation_size=5, validation_seed=3, max_train_samples=12)
    elif kind == "image_folder":
        write_png_folder(tmp_path / "pets" / "train")
        write_png_folder(tmp_path / "pets" / "test")
        args = make_args(tmp_path / "pets", tmp_path, validation_size=2)
    else:
        write_cifar(tmp_path / "cifar")
        args = make_args(tmp_path / "cifar" / "cifar-10-python.tar.gz", tmp_path, validation_size=4,
                         max_test_samples=3)
    # 8 px: the signed images as they are (signatures intact); the others are resized from 32/40 px
    return open_image_data(args, image_size=8 if kind == "save_to_disk" else 16, num_channels=3)


@pytest.mark.parametrize("kind", ["save_to_disk", "image_folder", "cifar_archive"])
def test_streamed_images_are_the_held_images_in_any_order(tmp_path, kind):
    """Every split, decoded on demand (stream) in a shuffled order, gives exactly the held (device/host) pixels."""
    source = opened(tmp_path, kind)
    held, lazy = source.decode(), source.lazy()
    assert lazy.mean is None and lazy.class_names == held.class_names
    for name in ("train", "validation", "test"):
        h, s = getattr(held, name), getattr(lazy, name)
        assert isinstance(s.images, LazyImages) and s.images.shape == tuple(h.images.shape)
        assert torch.equal(s.labels, h.labels), name
        order = torch.randperm(len(h), generator=torch.Generator().manual_seed(1))
        assert torch.equal(s.images[order], h.images[order]), name
    images = sum(len(getattr(held, n)) for n in ("train", "validation", "test"))
    assert source.decoded_bytes == images * 3 * source.image_size ** 2


def test_the_three_datasets_give_the_same_batch(tmp_path):
    """One batch of indices, out of order: the same uint8 images and labels from each storage's dataset."""
    data = opened(tmp_path, "save_to_disk")
    held, lazy = data.decode(), data.lazy()
    indices = [7, 0, 11, 3, 3]
    batches = [DeviceImageDataset(held.train).__getitems__(indices), HostImageDataset(held.train).__getitems__(indices),
               StreamImageDataset(lazy.train).__getitems__(indices)]
    assert signatures(batches[0]["pixel_values"]) == [signatures(held.train.images)[i] for i in indices]
    for batch in batches[1:]:
        assert batch["pixel_values"].dtype == torch.uint8
        assert torch.equal(batch["pixel_values"], batches[0]["pixel_values"])
        assert torch.equal(batch["labels"], batches[0]["labels"])
    assert isinstance(make_dataset(lazy.train, "stream", torch.device("cpu")), StreamImageDataset)
    assert isinstance(make_dataset(held.train, "host", torch.device("cpu")), HostImageDataset)
    with pytest.raises(TypeError, match="LazyImages"):
        StreamImageDataset(held.train)


def test_a_bad_streamed_image_is_named_by_its_source_row_in_one_line(tmp_path):
    """Met in a DataLoader worker, the error reaches the main process as a DataError whose message is the row's, not
    torch's wrapper with the worker's traceback."""
    values = image_values(signed_images(10))
    values[6] = {"bytes": b"garbage", "path": None}
    path = save_dict(tmp_path / "saved", {"train": (values, [0] * 10)})
    args = make_args(path, tmp_path, test_split=None, validation_size=3, validation_seed=0)
    source = open_image_data(args, image_size=8, num_channels=3)
    position = int(np.flatnonzero(source.train_rows == 6)[0])  # row 6 is a training row with this seed
    dataset = StreamImageDataset(source.lazy().train)
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset), num_workers=1, collate_fn=lambda b: b)
    try:
        next(iter(loader))
        pytest.fail("the bad image decoded")
    except DataError as err:
        raised = err
        # Without its traceback, the iterator (held in a reference cycle by the worker's re-raised error) goes now,
        # not in a later test's garbage collection, which would wait 5 s for its worker (cli.args.report_error).
        raised.__traceback__ = None
    assert isinstance(raised, StreamDataError)
    message = str(raised)
    assert message.startswith(f"dataset {str(path)!r}, split 'train', row 6: cannot decode column 'image':")
    assert "\n" not in message and "Traceback" not in message
    good = [i for i in range(len(dataset)) if i != position]
    assert len(dataset.__getitems__(good)["pixel_values"]) == len(good)  # the other rows decode


GB = 10**9


@pytest.mark.parametrize("wanted, nbytes, gpu_free, ram, processes, expected", [
    ("auto", 184_320_000, 80 * GB, 100 * GB, 1, "device"),  # CIFAR-10 (60k x 3 x 32 x 32) on an 80 GB GPU
    ("auto", 15 * GB, 80 * GB, 100 * GB, 1, "device"),  # 100k images at 224 px: a quarter of the GPU or less
    ("auto", 30 * GB, 80 * GB, 100 * GB, 1, "host"),  # too much for the GPU, fits in RAM
    ("auto", 30 * GB, 80 * GB, 100 * GB, 8, "stream"),  # ...but not 8 processes' copies
    ("auto", 193 * GB, 80 * GB, 100 * GB, 1, "stream"),  # ImageNet-1k at 224 px
    ("auto", 1 * GB, None, 100 * GB, 1, "device"),  # a CPU run: the device is the RAM
    ("auto", 60 * GB, None, 100 * GB, 1, "stream"),
    ("host", 1 * GB, 80 * GB, 100 * GB, 1, "host"),  # asked for: taken as is
    ("device", 500 * GB, None, 1 * GB, 1, "device"),
])
def test_auto_storage_choice(monkeypatch, wanted, nbytes, gpu_free, ram, processes, expected):
    monkeypatch.setattr(storage.psutil, "virtual_memory", lambda: type("Memory", (), {"available": ram}))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (gpu_free, 80 * GB))
    device = torch.device("cuda" if gpu_free else "cpu")
    chosen, why = choose_storage(wanted, nbytes, device, processes)
    assert chosen == expected
    assert why.startswith(f"dataset.storage={wanted!r}" if wanted != "auto" else f"dataset.storage=auto -> "
                                                                                  f"{expected!r}")
    if wanted == "auto":  # the log says why, with the numbers it compared
        assert f"{ram / GB:.2f} GB of available RAM" in why


# ----------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def mode_runs(tmp_path_factory, cifar10_path) -> dict[str, Path]:
    """The fault tests' tiny run (faults_harness.RUN: dropout, drop-path, crop/flip, RandAugment, mixup/cutmix,
    erasing: every RNG in use; 10 steps = 2.5 epochs, evaluation at steps 5 and 10) trained once in each storage
    mode, in this process."""
    root = tmp_path_factory.mktemp("storage_modes")
    runs = {}
    for mode in MODES:
        config = json.loads(json.dumps(RUN))
        config["dataset"].update(name=str(cifar10_path), storage=mode)
        config["training"].update(output_dir=str(root / mode), save_steps=5, load_best_model_at_end=False)
        if mode == "stream":
            config["training"]["dataloader_num_workers"] = 1  # decoded in a worker process
        (root / f"{mode}.json").write_text(json.dumps(config))
        assert train_in_process(["--config", str(root / f"{mode}.json")]) == 0
        runs[mode] = root / mode
    return runs


@pytest.mark.parametrize("mode", ["host", "stream"])
def test_each_storage_trains_exactly_like_device(mode_runs, mode):
    """Same seed, same data: the same batches in the same order with the same augmentation, so every step's loss,
    gradient norm and learning rate, every evaluation and the final weights are identical to the device run's."""
    run, reference = mode_runs[mode], mode_runs["device"]
    assert step_logs(run) == step_logs(reference)
    assert sorted(step_logs(run)["train"]) == list(range(1, 11))
    weights, expected = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    results, expected = (json.loads((r / "all_results.json").read_text()) for r in (run, reference))
    assert results["test_accuracy"] == expected["test_accuracy"] and results["test_loss"] == expected["test_loss"]
    for key in ("train_clean_accuracy", "train_clean_loss", "train_clean_images", "train_final_loss"):  # fit diagnosis
        assert results[key] == expected[key], key
    # The saved image processor normalises like training did: stream measured the same mean/std by streaming.
    processor, expected = (json.loads((r / "preprocessor_config.json").read_text()) for r in (run, reference))
    assert processor["image_mean"] == expected["image_mean"] and processor["image_std"] == expected["image_std"]


def test_a_bad_validation_image_met_while_streaming_stops_the_run_naming_its_row(tmp_path):
    """Streamed, a bad image outside the training rows (which the mean/std pass decodes first) is met by the first
    evaluation: the run stops there with one `error:` line naming the source row, exit status 2."""
    import contextlib
    import io

    import train

    n, held_out = 40, 8
    bad = int(np.sort(np.random.RandomState(0).permutation(n)[:held_out])[0])  # a validation row (seed 0)
    values = image_values(signed_images(n))
    values[bad] = {"bytes": values[bad]["bytes"][:40], "path": None}  # truncated
    path = save_dict(tmp_path / "saved", {"train": (values, [i % 2 for i in range(n)])})
    config = {"dataset": {"name": str(path), "storage": "stream", "validation_size": held_out, "test_split": None,
                          "cache_dir": str(tmp_path / "cache")},
              "model": {**TINY, "image_size": 8, "patch_size": 4},  # the images are 8 px
              "training": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 8,
                           "eval_strategy": "steps", "eval_steps": 1, "save_strategy": "no",
                           "load_best_model_at_end": False, "dataloader_num_workers": 1, "disable_tqdm": True}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    err = io.StringIO()
    gc.disable()  # what the run leaves must go by reference counting alone
    try:
        with contextlib.redirect_stderr(err):
            status = train.main(["--config", str(tmp_path / "config.json")])
        # Nothing of the failed run outlives it: no DataLoader iterator left to a later garbage collection (the
        # worker's error comes back in a reference cycle; collected, each iterator stalls 5 s waiting for its worker).
        assert not [o for o in gc.get_objects() if isinstance(o, _MultiProcessingDataLoaderIter)]
    finally:
        gc.enable()
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1, err.getvalue()[-3000:]
    assert errors[0].startswith(f"error: dataset {str(path)!r}, split 'train', row {bad}: cannot decode column "
                                "'image': UnidentifiedImageError")
