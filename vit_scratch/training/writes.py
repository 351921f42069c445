"""The files a run writes: a failed write ends the run in one line, and too little free space is warned of at start.

Every write of a run (a checkpoint, the final model, experiment.json, the figures, the JSON results, the card)
happens inside `failed_writes_end_the_run`: an OSError there (a full disk, a lost permission, a vanished mount), or
what safetensors' and torch's writers raise in its place, ends the run as `WriteFailed` (`error: ...`, exit 1),
naming the file, the cause, the free space and the checkpoint to continue from with --resume. Reads are not
wrapped: their errors keep their own messages.
"""

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from vit_scratch.errors import WriteFailed
from vit_scratch.training.checkpoints import EXPERIMENT_FILE, latest_complete_checkpoint

logger = logging.getLogger("vit_scratch")

# torch.save's C++ writer on a failed write: "[enforce fail at inline_container.cc:...] . unexpected pos ..." (a full
# disk), "PytorchStreamWriter failed writing file ..." or "basic_ios::clear: iostream error".
TORCH_WRITER_FAILED = re.compile(r"inline_container|PytorchStreamWriter|iostream error")
# OSErrors that are not a file failing to be written (huggingface_hub's HTTP errors are OSErrors too).
NOT_FILE_ERRORS = (ConnectionError, TimeoutError)
NETWORK_LIBRARIES = ("huggingface_hub", "requests", "httpx", "httpcore", "urllib3")
# What a checkpoint holds besides the weights and the optimizer state: trainer_state.json, training_args.bin, the
# RNG and scheduler states, config and processor JSON (tens of kB with a short log history; it grows with it).
CHECKPOINT_EXTRA_BYTES = 100_000


def write_failure_cause(error: BaseException, folder: Path | None = None) -> str | None:
    """Why `error` is a failed write (the OS's words where they can be found), or None when it is another error.

    torch's C++ writer, given a path, keeps the OS's error to itself: then a test write of 1 MB into `folder` asks
    the filesystem (a full disk answers ENOSPC), and torch's own words are shown only when that write succeeds."""
    if isinstance(error, NOT_FILE_ERRORS) or type(error).__module__.split(".")[0] in NETWORK_LIBRARIES:
        return None  # a Hub push from a checkpoint or a connection: OSErrors, but no file of ours
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = str(error).strip()
    if isinstance(error, SafetensorError) and (code := re.search(r"\(os error (\d+)\)", text)):
        return os.strerror(int(code.group(1)))  # safetensors: "... I/O error: No space left on device (os error 28)"
    if isinstance(error, RuntimeError) and TORCH_WRITER_FAILED.search(text):
        if isinstance(error.__context__, OSError):  # written through a Python file object: the OS's error is known
            return error.__context__.strerror or str(error.__context__)
        return (folder is not None and _test_write(folder)) or \
            f"torch's writer failed: {text.splitlines()[0] if text else type(error).__name__}"
    return None


def _test_write(folder: Path) -> str | None:
    """The OS's error for a 1 MB write into `folder` (its nearest existing folder; the file is removed), or None."""
    folder = next(p for p in (folder, *folder.parents) if p.is_dir())
    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(bytes(1_000_000))
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        return error.strerror or str(error)
    return None


@contextlib.contextmanager
def failed_writes_end_the_run(output_dir: str | Path, into: Path | None = None,
                              shown_in: Path | None = None) -> Iterator[None]:
    """Turn a failed write inside the block into WriteFailed. The file named is the error's own, else the newest file
    of `into` (a folder the block fills from empty: a checkpoint, a staging folder, which `shown_in` stands for in
    the message), else `output_dir`."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        if write_failure_cause(error) is None:  # not a write that failed: its own message
            raise
        path = _failed_file(error, into, shown_in) or Path(output_dir)
        cause = write_failure_cause(error, into or path.parent)
        raise WriteFailed(write_failure_message(path, cause, output_dir)) from error


def write_failure_message(path: Path, cause: str, output_dir: str | Path) -> str:
    """`cannot write PATH: CAUSE (FREE free there); the checkpoint to continue from, with --resume`."""
    last = latest_complete_checkpoint(output_dir)
    if last is not None:
        then = f"the last complete checkpoint is {last}: make room, then continue with --resume"
    elif (Path(output_dir) / EXPERIMENT_FILE).is_file():  # what --resume needs to start this run again
        then = "no checkpoint is complete yet: make room, then start the run again with --resume"
    else:
        then = "nothing of the run was kept: make room, then start it again"
    return f"cannot write {path}: {cause} ({format_bytes(free_bytes(path))} free there); {then}"


def _failed_file(error: BaseException, into: Path | None, shown_in: Path | None) -> Path | None:
    for candidate in (error, error.__context__):
        if isinstance(candidate, OSError) and candidate.filename:
            path = Path(os.fsdecode(candidate.filename))
            break
    else:
        files = [p for p in into.rglob("*") if p.is_file()] if into is not None and into.is_dir() else []
        if not files:
            return shown_in or into
        path = max(files, key=_written_after)  # the one being written when the error came
    if into is not None and shown_in is not None and path.is_relative_to(into):
        path = shown_in / path.relative_to(into)
    return path


# The order in which the Trainer writes a checkpoint's files: two files written within one tick of the filesystem's
# clock have the same mtime, and of those the later one in this order was written last.
WRITE_ORDER = ("config.json", "*.py", "generation_config.json", "model*.safetensors*", "preprocessor_config.json",
               "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "trainer_state.json")


def _written_after(path: Path) -> tuple[int, int]:
    """Sorts files by when they were last written: mtime, then WRITE_ORDER."""
    place = next((i for i, pattern in enumerate(WRITE_ORDER) if path.match(pattern)), -1)
    return path.stat().st_mtime_ns, place


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem of `path` (of its nearest existing folder)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def format_bytes(count: float) -> str:
    """0 B, 950 B, 12.3 kB, 4.6 MB, 1.2 GB (decimal units, as df -H)."""
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


# ----------------------------------------------------------------------------------------------- free space


def checkpoints_written(args, total_steps: int, steps_per_epoch: int) -> int:
    """How many checkpoints are on disk at once at most: every save of the run, or save_total_limit + 1 (the new one
    is written before the oldest is removed)."""
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "no" or total_steps <= 0:
        return 0
    if strategy == "best":  # at most one per evaluation
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        every = args.eval_steps or args.save_steps
    else:
        every = args.save_steps
    if strategy == "steps":
        every = math.ceil(total_steps * every) if every < 1 else int(every)
        saves = math.ceil(total_steps / max(every, 1))
    else:  # per epoch
        saves = math.ceil(total_steps / max(steps_per_epoch, 1))
    return saves if args.save_total_limit is None else min(saves, args.save_total_limit + 1)


def bytes_to_write(model, args, total_steps: int, steps_per_epoch: int) -> tuple[int, int, int]:
    """(checkpoints on disk at once, bytes of one checkpoint, bytes of the final model), estimated from the model:
    its weights as saved, and the optimizer's state (2 fp32 values per trainable parameter for Adam and its kin, 1
    for the others; none with save_only_model)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = 2 if "adam" in str(getattr(args.optim, "value", args.optim)).lower() else 1
    states = 0 if getattr(args, "save_only_model", False) else states
    checkpoint = weights + states * 4 * trainable + CHECKPOINT_EXTRA_BYTES
    return checkpoints_written(args, total_steps, steps_per_epoch), checkpoint, weights


def warn_if_short_of_space(output_dir: str | Path, model, args, total_steps: int, steps_per_epoch: int) -> None:
    """A warning (never a refusal: space may be freed meanwhile) when the free space in output_dir is less than what
    the run will write: its checkpoints at once plus the final model."""
    count, checkpoint, final = bytes_to_write(model, args, total_steps, steps_per_epoch)
    needed, free = count * checkpoint + final, free_bytes(output_dir)
    if free < needed:
        limit = f"save_total_limit={args.save_total_limit} + 1" if args.save_total_limit is not None else "every save"
        logger.warning("training.output_dir=%r: %s free, but this run writes about %s: %d checkpoints at once (%s) "
                       "of %s each (weights and optimizer state), and the final model of %s; it may stop on a full "
                       "disk (continue it with --resume once there is room)", str(output_dir), format_bytes(free),
                       format_bytes(needed), count, limit, format_bytes(checkpoint), format_bytes(final))
