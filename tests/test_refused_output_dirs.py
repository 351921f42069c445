"""An output_dir that holds another run, that cannot be created, or a --resume of another model's checkpoint: refused
in one line, and nothing there changes."""

import re
import shutil
from pathlib import Path

import pytest

from .faults_harness import EVERY_STEP, MAX_STEPS, main_in_process, write_config


def test_output_dir_holding_another_run_is_refused_and_unchanged(every_step_run, tmp_path, cifar10_path):
    out = tmp_path / "out"
    shutil.copytree(every_step_run, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out)])
    assert status == 2
    assert f"error: training.output_dir={str(out)!r} already holds files (another run?); pass --resume" in err
    # another model's run, with --resume
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), "--resume",
                                   "--model.hidden_size", "64"])
    assert status == 2
    assert (f"error: --resume: {out / f'checkpoint-{MAX_STEPS}'} was trained with another model section; "
            f"see {out / 'experiment.json'}") in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize("where", ["/proc", "under a file"])
def test_output_dir_that_cannot_be_created_is_refused_before_the_data_is_read(where, tmp_path, cifar10_path):
    """An output_dir where nothing can be created (a virtual filesystem; a path under a file) failed only in
    Trainer.__init__, after the data was decoded, with a FileNotFoundError traceback. Now: one `error:` line, exit 2,
    before any data is read (the dataset named here does not exist: its error would come first otherwise)."""
    if where == "/proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        out, cause = Path("/proc/run"), r"making a folder in /proc fails: [^)]+"  # as root: ENOENT, else EACCES
    else:
        (tmp_path / "file").write_text("x")
        out, cause = tmp_path / "file" / "run", re.escape(f"{tmp_path / 'file'} is a file, not a folder")
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out),
                                   "--dataset.name", str(tmp_path / "no_such_data")])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1, err[-3000:]
    assert re.fullmatch(re.escape(f"error: training.output_dir={str(out)!r}: cannot create it (") + cause + r"\)",
                        errors[0]), errors[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json"] + (["file"] if where != "/proc"
                                                                                   else []))


def test_resume_from_a_checkpoint_of_another_model_without_experiment_json(every_step_run, tmp_path, cifar10_path):
    """No experiment.json to compare with (a checkpoint copied by hand): the weights' own shapes are checked."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(every_step_run / "checkpoint-3", out / "checkpoint-3")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), "--resume",
                                   "--model.hidden_size", "64"])
    assert status == 2, err[-3000:]
    assert (f"error: --resume: {out / 'checkpoint-3'} holds another model's weights (vit.embeddings.cls_token has "
            "shape [1, 1, 32] in the checkpoint, [1, 1, 64] in this model)") in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
