"""Where a run's decoded images live while it trains (`dataset.storage`), and the datasets the Trainer reads them from.

    device   DeviceImageDataset: the whole split on the training device; a batch is one indexing op there.
    host     HostImageDataset: the split decoded in host memory; a batch is one gather there (into pinned memory on a
             GPU), and accelerate's data loader copies it to the device without blocking, while the next one is
             gathered: the step stays free of host syncs.
    stream   StreamImageDataset: nothing decoded is held; DataLoader workers decode each batch's rows from the
             source's own files (parquet/Arrow/image folder, memory-mapped by `datasets`) at the model's image size.
    auto     device when the splits fit with room to spare, else host when they fit in RAM, else stream.

All three yield the same uint8 batches for the same indices (the same decoding function makes every pixel), and
they are map-style datasets with `__getitems__`: the Trainer's seeded sampler, accelerate's per-process sharding
(BatchSamplerShard: every training image once per epoch across the processes) and its resume-skipping work
unchanged, so a run gives the same batches, augmentation and weights in every mode. Augmentation happens on the
device in all of them (trainer.py).
"""

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import replace

import numpy as np
import psutil
import torch
import torch.distributed as dist

from vit_scratch.config.schema import DataArguments
from vit_scratch.data import ImageData, ImageSplit, LazyImages, channel_histograms, mean_std, open_image_data
from vit_scratch.distributed import is_distributed
from vit_scratch.errors import DataError

logger = logging.getLogger("vit_scratch")

DEVICE_SHARE = 0.25  # auto: the held splits may take this share of the GPU's free memory (the rest: model, activations)
HOST_SHARE = 0.5  # auto: ...and this share of the machine's available RAM, for all its processes' copies together
STATS_IMAGES = 10_000  # stream: mean/std measured on at most this many training images (a seeded sample)
GB = 1e9
STORAGES = ("device", "host", "stream")  # from the most held to the least


def _bytes(nbytes: float) -> str:
    """1.23 GB, or 45.6 MB below 0.1 GB."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


def collate_batch(batch):
    """The DataLoader's collate_fn for these datasets: their `__getitems__` already returns the batch, nothing to stack
    (a module-level function: under the spawn/forkserver start methods the loader is pickled to its workers)."""
    return batch


class DeviceImageDataset(torch.utils.data.Dataset):
    """A split as uint8 images (N, C, H, W) and int64 labels (N,), on one device."""

    def __init__(self, split: ImageSplit):
        self.images, self.labels = split.images, split.labels

    def to(self, device: torch.device) -> "DeviceImageDataset":
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one gather: (B, C, H, W) uint8 and (B,) labels, on the dataset's device."""
        index = torch.as_tensor(indices)
        if self.labels.is_cuda:  # a copy from pageable memory would wait for the GPU: a host sync every step
            index = index.pin_memory().to(self.labels.device, non_blocking=True)
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


class HostImageDataset(torch.utils.data.Dataset):
    """A split held in host memory as uint8 (N, C, H, W); `__getitems__` gathers a batch with one `np.take` into a
    fresh buffer, pinned when `pin` (a GPU run) so that the copy to the device can be asynchronous. The
    copy itself is accelerate's (`non_blocking`, see ViTScratchTrainer), one batch ahead of the step."""

    def __init__(self, split: ImageSplit, pin: bool = False):
        self.images, self.labels, self.pin = split.images, split.labels, pin

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        images = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
        # numpy's take: one memory-bound thread, faster and far steadier on a busy machine than torch's
        # multi-threaded index_select or plain indexing, whose threads wait for cores other work holds.
        np.take(self.images.numpy(), index.numpy(), axis=0, out=images.numpy())
        labels = self.labels[index]
        return {"pixel_values": images, "labels": labels.pin_memory() if self.pin else labels}


class StreamDataError(DataError):
    """A bad image met by a DataLoader worker. torch re-raises a worker's exception in the main process as
    `TYPE("Caught TYPE in DataLoader worker process K.\\nOriginal Traceback ...TYPE: MESSAGE")`: this keeps only
    MESSAGE (which names the source and row), so the user reads one `error:` line either way."""

    def __init__(self, message: str):
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


class StreamImageDataset(torch.utils.data.Dataset):
    """A split decoded batch by batch (`LazyImages`), in the DataLoader's worker processes: each batch's rows are
    read from the source's files and decoded at the model's image size; the uint8 batch then goes to the device
    like any other."""

    def __init__(self, split: ImageSplit):
        if not isinstance(split.images, LazyImages):
            raise TypeError("StreamImageDataset reads LazyImages (ImageSource.lazy())")
        self.images, self.labels = split.images, split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        try:
            images = self.images[index]
        except DataError as error:
            raise StreamDataError(str(error)) from None
        return {"pixel_values": images, "labels": self.labels[index]}


def make_dataset(split: ImageSplit, storage: str, device: torch.device) -> torch.utils.data.Dataset:
    """The Trainer's dataset for `split` in `storage` ('device' ones move to the device in the Trainer)."""
    if storage == "stream":
        return StreamImageDataset(split)
    if storage == "host":
        return HostImageDataset(split, pin=device.type == "cuda")
    return DeviceImageDataset(split)


def choose_storage(wanted: str, nbytes: int, device: torch.device, local_processes: int = 1) -> tuple[str, str]:
    """(`dataset.storage` to use, why): `wanted` unless it is 'auto'. Every process of a machine holds its own copy
    of the splits (on its own GPU for 'device', in the shared RAM for 'host'); the decoding goes through RAM too."""
    size = f"the decoded splits take {_bytes(nbytes)}"
    if wanted != "auto":
        return wanted, f"dataset.storage={wanted!r} ({size})"
    ram = psutil.virtual_memory().available
    fits_ram = nbytes * local_processes <= HOST_SHARE * ram
    in_ram = (f"{local_processes} x {_bytes(nbytes)} {'<=' if fits_ram else '>'} {HOST_SHARE:.0%} of the "
              f"{_bytes(ram)} of available RAM")
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        fits_device = nbytes <= DEVICE_SHARE * free
        on_device = f"{_bytes(nbytes)} {'<=' if fits_device else '>'} {DEVICE_SHARE:.0%} of the GPU's free " \
                    f"{_bytes(free)}"
        if fits_device and fits_ram:
            return "device", f"dataset.storage=auto -> 'device': {on_device}, and {in_ram} (decoded there first)"
        if fits_ram:
            return "host", f"dataset.storage=auto -> 'host': {on_device}, but {in_ram}"
        return "stream", f"dataset.storage=auto -> 'stream': {on_device}, and {in_ram}"
    # On a CPU the device's memory is the RAM: 'host' would only add a copy per batch.
    if fits_ram:
        return "device", f"dataset.storage=auto -> 'device' ({device.type}): {in_ram}"
    return "stream", f"dataset.storage=auto -> 'stream' ({device.type}): {in_ram}"


def default_workers(local_processes: int = 1) -> int:
    """Decode workers per process for 'stream' when training.dataloader_num_workers is not given: the machine's
    cores shared by its processes, one left to each process itself, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 1) // local_processes - 1))


def load_data(args: DataArguments, image_size: int, num_channels: int, num_labels: int | None,
              device: torch.device, local_processes: int = 1,
              main_first: Callable[[str], ContextManager] = lambda desc: contextlib.nullcontext(),
              ) -> tuple[ImageData, str, str]:
    """Open the dataset, choose its storage, and decode it (device/host) or not (stream): (data, storage, why).
    Streamed data has no mean/std yet (`stream_mean_std`).

    `main_first(desc)`: a context in which the main process goes first (`TrainingArguments.main_process_first`):
    it prepares `datasets`' files and cache, the others then read them. Between opening and decoding, every process
    of a multi-process launch takes the same storage: the most frugal any of them chose (its RAM or GPU may be
    smaller), so that no process decodes what another found too big.
    """
    with main_first("opening the dataset"):
        source = open_image_data(args, image_size, num_channels, num_labels)
    storage, why = choose_storage(args.storage, source.decoded_bytes, device, local_processes)
    agreed = _most_frugal(storage, device)
    if agreed != storage:
        storage, why = agreed, f"{why}; another process chose {agreed!r}, which every process takes"
    with main_first("decoding the dataset"):
        data = source.lazy() if storage == "stream" else source.decode()
    return data, storage, why


def _most_frugal(storage: str, device: torch.device) -> str:
    """The storage that holds least (device < host < stream) among every process's choice; no-op alone."""
    if not is_distributed():
        return storage
    order = torch.tensor(STORAGES.index(storage), device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(order, op=dist.ReduceOp.MAX)
    return STORAGES[int(order)]


class _Histograms(torch.utils.data.Dataset):
    def __init__(self, images: LazyImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> np.ndarray:
        try:
            return channel_histograms(self.images[np.asarray(indices)])
        except DataError as error:
            raise StreamDataError(str(error)) from None


def worker_context(given: str | None) -> str | None:
    """How DataLoader workers start: `given`, else fork where there is fork. A worker started by a forkserver (Python
    3.14's default on Linux, and that of any process a forkserver started) has the server as its parent, so it
    outlives a training process killed with SIGKILL (torch's watchdog only notices its parent's death)."""
    return given or ("fork" if "fork" in multiprocessing.get_all_start_methods() else None)


def stream_mean_std(data: ImageData, workers: int, context: str | None = None, batch_size: int = 256,
                    max_images: int = STATS_IMAGES) -> ImageData:
    """`data` with the mean/std of its (streamed) training images, decoded by `workers` processes: exact when the
    split holds at most `max_images`, else measured on a seeded sample of that many. Draws nothing from torch's
    global RNG (the run's augmentation must not depend on this pass)."""
    images = data.train.images
    rows = np.arange(len(images))
    if len(rows) > max_images:
        rows = np.sort(np.random.RandomState(0).choice(len(rows), max_images, replace=False))
    sample = LazyImages(images.read, images.rows[rows], images.shape[2], images.shape[1])
    loader = torch.utils.data.DataLoader(_Histograms(sample), batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_batch, generator=torch.Generator(),
                                         multiprocessing_context=worker_context(context) if workers else None)
    counts = sum(loader)
    mean, std = mean_std(counts)
    logger.info("mean/std measured on %s of %d training images (streamed)",
                "all" if len(rows) == len(images) else f"a seeded sample of {len(rows)}", len(images))
    return replace(data, mean=mean, std=std)
