"""A full disk (or any failed write) while checkpointing, writing a figure, the card or the final model: one
`error:` line naming the file, no file that looks complete, and --resume finishes the run exactly. The start-of-run
space estimate and its warning."""

import contextlib
import errno
import functools
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from .faults_harness import (
    EVERY_STEP,
    FINAL_FILES,
    MAX_STEPS,
    assert_same_run,
    checkpoints,
    finished,
    train_run,
    write_config,
)

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"
FREE = r"\d+(\.\d)? [kMGT]?B free there"  # how the free space is shown


class _FillsUp(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, NO_SPACE)
        self.room -= len(data)
        return self.file.write(data)


def _disk_full(folder: str, file: str, how: str):
    """Test hook (runs in the child): writing `file` into `folder` (a checkpoint's; "final": any other, where the final
    model is written) fails as on a full disk, each writer its own way (measured on a full tmpfs): safetensors raises
    SafetensorError("... (os error 28)"), not an OSError; torch.save's C++ writer a RuntimeError, here with the OS's
    error as its context (it writes through a file object that fills up); "OSError": the writer raises
    OSError(ENOSPC) naming the file. Each leaves the part written before the disk filled."""
    import torch
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def hit(path) -> bool:
        if not (isinstance(path, (str, os.PathLike)) and Path(path).name == file):
            return False
        parent = Path(path).parent.name
        return parent == folder if folder != "final" else not parent.startswith("checkpoint-")

    if how == "safetensors":
        save_file = transformers.modeling_utils.safe_save_file

        def full_save_file(tensors, filename, metadata=None):
            if not hit(filename):
                return save_file(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(b"\0" * 1000)
            raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error {errno.ENOSPC})")

        transformers.modeling_utils.safe_save_file = full_save_file
        return
    save = torch.save

    def full_save(obj, f, *args, **kwargs):
        if not hit(f):
            return save(obj, f, *args, **kwargs)
        if how == "OSError":
            Path(f).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, NO_SPACE, str(f))
        with open(f, "wb") as real:
            save(obj, _FillsUp(real, 1000), *args, **kwargs)

    torch.save = full_save


@pytest.mark.parametrize("file, how", [("model.safetensors", "safetensors"), ("optimizer.pt", "torch"),
                                       ("rng_state.pth", "OSError")])
def test_full_disk_in_a_checkpoint_ends_in_one_line_and_resume_finishes_the_run(every_step_run, tmp_path,
                                                                                 cifar10_path, file, how):
    """The disk fills while checkpoint-6 is written (before: torch's `RuntimeError: basic_ios::clear: iostream error`
    as a traceback). Now exit 1 and one `error:` line naming the file, the cause, the free space, the last complete
    checkpoint and --resume; no final file is written. Once there is room, --resume skips the torn checkpoint-6 and
    ends exactly like the uninterrupted run."""
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    run = finished(train_run(config, out, hook=functools.partial(_disk_full, "checkpoint-6", file, how)), expect=1)
    log = run.text()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in log, log[-6000:]
    assert re.fullmatch(re.escape(f"error: cannot write {out / 'checkpoint-6' / file}: {NO_SPACE} (") + FREE
                        + re.escape(f"); the last complete checkpoint is {out / 'checkpoint-5'}: make room, then "
                                    "continue with --resume"), errors[0]), errors[0]
    assert checkpoints(out) == [1, 2, 3, 4, 5, 6]
    for name in FINAL_FILES:
        assert not (out / name).exists()

    log = finished(train_run(config, out, "--resume", name="resumed")).text()
    assert f"skipping incomplete checkpoint {out / 'checkpoint-6'}" in log
    assert_same_run(out, every_step_run)


def _rename_fails(name: str):
    """Test hook (runs in the child): putting `name` in place fails as a full disk makes a write() fail (ENOSPC, no
    file named)."""
    replace = os.replace

    def full_replace(source, destination, *args, **kwargs):
        if Path(destination).name == name:
            raise OSError(errno.ENOSPC, NO_SPACE)
        return replace(source, destination, *args, **kwargs)

    os.replace = full_replace


@pytest.mark.parametrize("name", ["augmentation_preview.png", "README.md"])
def test_full_disk_writing_a_figure_or_the_card_names_it_and_says_how_to_go_on(every_step_run, tmp_path,
                                                                                cifar10_path, name):
    """The start's figure (no checkpoint yet) and the end's card (after checkpoint-10): one `error:` line naming the
    file, exit 1, and the way on it gives (--resume starting the run again, or finishing it) ends like the
    uninterrupted run."""
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    log = finished(train_run(config, out, hook=functools.partial(_rename_fails, name)), expect=1).text()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in log, log[-6000:]
    then = ("no checkpoint is complete yet: make room, then start the run again with --resume" if name != "README.md"
            else f"the last complete checkpoint is {out / f'checkpoint-{MAX_STEPS}'}: make room, then continue with "
                 "--resume")
    assert re.fullmatch(re.escape(f"error: cannot write {out / name}: {NO_SPACE} (") + FREE + re.escape(f"); {then}"),
                        errors[0]), errors[0]
    assert not list(out.glob(".*"))  # no temporary file left
    finished(train_run(config, out, "--resume", name="resumed"))
    assert_same_run(out, every_step_run)


def test_full_disk_in_the_final_save_leaves_no_model_that_looks_complete(every_step_run, tmp_path, cifar10_path):
    """The disk fills while the final model.safetensors is written. It is written under a temporary folder and renamed
    in only when complete: no torn model.safetensors in output_dir (before, the torn file had the final name), no
    temporary folder left, exit 1 naming the file and checkpoint-10; --resume then only finishes the run."""
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    log = finished(train_run(config, out, hook=functools.partial(_disk_full, "final", "model.safetensors",
                                                                 "safetensors")), expect=1).text()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in log, log[-6000:]
    assert re.fullmatch(re.escape(f"error: cannot write {out / 'model.safetensors'}: {NO_SPACE} (") + FREE
                        + re.escape(f"); the last complete checkpoint is {out / f'checkpoint-{MAX_STEPS}'}: make "
                                    "room, then continue with --resume"), errors[0]), errors[0]
    assert not (out / "model.safetensors").exists() and not list(out.glob(".*"))
    for name in FINAL_FILES:
        assert not (out / name).exists()
    log = finished(train_run(config, out, "--resume", name="resumed")).text()
    assert f"--resume: continuing from {out / f'checkpoint-{MAX_STEPS}'}" in log
    assert_same_run(out, every_step_run)


def test_only_failed_writes_are_reported_as_such():
    """What each writer raises on a full disk reads as the OS's cause; other errors inside a save (a Hub push, a lost
    connection, a CUDA or value error) keep their own message and traceback."""
    from huggingface_hub.errors import HfHubHTTPError
    from safetensors import SafetensorError

    from vit_scratch.training.writes import write_failure_cause

    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    torch_error.__context__ = OSError(errno.ENOSPC, NO_SPACE)
    for error in (OSError(errno.ENOSPC, NO_SPACE), torch_error,
                  SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error {errno.ENOSPC})")):
        assert write_failure_cause(error) == NO_SPACE, error
    assert write_failure_cause(PermissionError(errno.EACCES, "Permission denied", "/x")) == "Permission denied"
    for error in (HfHubHTTPError.__new__(HfHubHTTPError), ConnectionResetError(errno.ECONNRESET, "reset"),
                  RuntimeError("CUDA error: device-side assert triggered"), ValueError("bad value")):
        assert write_failure_cause(error) is None, error


@contextlib.contextmanager
def tiny_filesystem(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` for the block (root only: the test is skipped elsewhere)."""
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # at once, even while a file is still open


def test_a_real_full_disk_ends_in_one_line_and_resume_finishes_once_there_is_room(every_step_run, tmp_path,
                                                                                   cifar10_path):
    """output_dir on a real 1 MB filesystem: the start files and two checkpoints fit, the third does not. Whichever
    file the disk fills on (each writer fails its own way: torch's keeps the OS's error to itself), the one `error:`
    line says `No space left on device`; a warning at the start said the space was short. Grown to 16 MB, the run
    continues with --resume and ends exactly like the uninterrupted run."""
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    with tiny_filesystem(tmp_path / "disk", "1m") as out:  # the log goes beside it, not onto it
        log = finished(train_run(config, out), expect=1).text()
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in log, log[-6000:]
        print(f"\n{errors[0]}")
        assert re.fullmatch(re.escape(f"error: cannot write {out}/") + r"checkpoint-\d+/\S+" + re.escape(
            f": {NO_SPACE} (") + FREE + re.escape(f"); the last complete checkpoint is {out}/checkpoint-") + r"\d+"
            + re.escape(": make room, then continue with --resume"), errors[0]), errors[0]
        assert f"training.output_dir={str(out)!r}: " in log and "it may stop on a full disk" in log
        subprocess.run(["mount", "-o", "remount,size=16m", str(out)], check=True)
        finished(train_run(config, out, "--resume", name="resumed"))
        assert_same_run(out, every_step_run)


def test_torch_save_on_a_real_full_disk_is_named_as_one(tmp_path):
    """torch.save given a path raises only its C++ writer's RuntimeError on a full disk (the issue's case: no OS
    error in it); the message still names the file and says `No space left on device` (from a test write)."""
    from vit_scratch.errors import WriteFailed
    from vit_scratch.training.writes import failed_writes_end_the_run

    with tiny_filesystem(tmp_path / "disk", "256k") as out:
        (out / "experiment.json").write_text("{}")  # a run's first file
        folder = out / "checkpoint-3"
        folder.mkdir()
        with pytest.raises(WriteFailed) as stopped:
            with failed_writes_end_the_run(out, into=folder):
                torch.save({"exp_avg": torch.zeros(200_000)}, folder / "optimizer.pt")
        assert isinstance(stopped.value.__cause__, RuntimeError)  # torch's own, without the OS's error
        assert re.fullmatch(re.escape(f"cannot write {folder / 'optimizer.pt'}: {NO_SPACE} (") + FREE + re.escape(
            "); no checkpoint is complete yet: make room, then start the run again with --resume"),
            str(stopped.value)), stopped.value


def test_space_estimate_matches_what_a_run_wrote(every_step_run):
    """The start-of-run estimate against the reference run's files: each checkpoint's size within 25% (weights, 2 Adam
    states per parameter, the small files), the final model's within 5%, and how many checkpoints are on disk at
    once for each save setting (10 steps, 4 per epoch)."""
    import dataclasses

    from modeling_vit_scratch import ViTScratchForImageClassification
    from vit_scratch.training.writes import bytes_to_write

    model = ViTScratchForImageClassification.from_pretrained(every_step_run)
    args = torch.load(every_step_run / "training_args.bin", weights_only=False)
    count, checkpoint, final = bytes_to_write(model, args, total_steps=MAX_STEPS, steps_per_epoch=4)
    assert count == MAX_STEPS  # a save every step, no save_total_limit
    for step in checkpoints(every_step_run):
        size = sum(p.stat().st_size for p in (every_step_run / f"checkpoint-{step}").iterdir())
        assert 0.75 * size < checkpoint < 1.25 * size, (step, size, checkpoint)
    assert final == pytest.approx((every_step_run / "model.safetensors").stat().st_size, rel=0.05)
    for changes, expected in (({"save_total_limit": 2}, 3), ({"save_strategy": "epoch"}, 3),
                              ({"save_strategy": "no"}, 0), ({"save_steps": 4, "save_total_limit": 5}, 3)):
        assert bytes_to_write(model, dataclasses.replace(args, **changes), MAX_STEPS, 4)[0] == expected, changes
    trainable = sum(p.numel() for p in model.parameters())
    assert bytes_to_write(model, dataclasses.replace(args, save_only_model=True), MAX_STEPS, 4)[1] == \
        checkpoint - 2 * 4 * trainable  # no Adam moments


def _little_free_space():
    """Test hook (runs in the child): the output folder's filesystem reports 900 bytes free."""
    from vit_scratch.training import writes

    writes.free_bytes = lambda path: 900


def test_too_little_free_space_is_warned_of_at_start_and_the_run_goes_on(tmp_path, cifar10_path):
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    log = finished(train_run(config, out, hook=_little_free_space)).text()
    warning = re.search(rf"training.output_dir={re.escape(repr(str(out)))}: 900 B free, but this run writes about "
                        r"(\d+\.\d) MB: 10 checkpoints at once \(every save\) of (\d+\.\d) kB each \(weights and "
                        r"optimizer state\), and the final model of (\d+\.\d) kB; it may stop on a full disk", log)
    assert warning, log[-4000:]
    total_mb, checkpoint_kb, final_kb = map(float, warning.groups())
    assert total_mb * 1000 == pytest.approx(10 * checkpoint_kb + final_kb, abs=50)  # 10 x checkpoint + final model
    assert log.index(warning[0]) < log.index("'loss':")  # at the start
    for name in FINAL_FILES:
        assert (out / name).exists()
