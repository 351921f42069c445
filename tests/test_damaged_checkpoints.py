"""Damaged checkpoints: each kind of damage to each file is named, --resume skips a damaged checkpoint (or starts
again when none is complete) and still ends exact, and a run killed after its last checkpoint only finishes."""

import json
import shutil

import pytest

from .faults_harness import (
    CHECKPOINT_FILES,
    EVERY_STEP,
    MAX_STEPS,
    assert_same_run,
    checkpoints,
    corrupt,
    expected_problem,
    finished,
    main_in_process,
    train_run,
    write_config,
)


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_checkpoint_problem_names_each_kind_of_damage_to_each_file(every_step_run, tmp_path, name):
    """Every file of a checkpoint cut short, two bytes flipped, replaced by random bytes or removed: the checkpoint
    is damaged, the problem names the file, the newest complete one is the older. (Before the manifest, flipped
    weights and optimizer bytes passed, and a replaced rng_state.pth passed only to end --resume in a traceback.)"""
    from transformers.trainer_utils import get_last_checkpoint

    from vit_scratch.training.checkpoints import checkpoint_problem, latest_complete_checkpoint

    for how in ("cut", "flipped", "replaced", "removed"):
        root = tmp_path / how
        for step in (3, 4):
            shutil.copytree(every_step_run / f"checkpoint-{step}", root / f"checkpoint-{step}")
        assert checkpoint_problem(root / "checkpoint-4") is None
        corrupt(root / "checkpoint-4", f"{how} {name}")
        problem = checkpoint_problem(root / "checkpoint-4")
        assert problem is not None and problem.startswith(expected_problem(f"{how} {name}")), (how, problem)
        assert latest_complete_checkpoint(root) == root / "checkpoint-3"
        # transformers' own resume_from_checkpoint=True takes the highest-numbered folder, damaged or not
        assert get_last_checkpoint(str(root)) == str(root / "checkpoint-4")


@pytest.mark.parametrize("reference", ["every_step_run", "ema_run"])
def test_manifest_covers_every_file_of_every_checkpoint(reference, request):
    """Written last, over the whole folder: a file the checkpoint gains in _save_checkpoint is covered too (with EMA,
    training_weights.safetensors)."""
    run_dir = request.getfixturevalue(reference)
    for step in checkpoints(run_dir):
        folder = run_dir / f"checkpoint-{step}"
        listed = json.loads((folder / "manifest.json").read_text())["files"]
        assert sorted(listed) == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
        assert set(CHECKPOINT_FILES) | ({"training_weights.safetensors"} if reference == "ema_run" else set()) \
            <= set(listed)


def test_resume_skips_every_damaged_checkpoint_and_still_ends_exact(every_step_run, tmp_path, cifar10_path):
    """Checkpoints 5-9 damaged, one file each, in ways that loaded silently or ended in a traceback before the
    manifest (flipped bytes inside the weights' tensor data and the optimizer state, random bytes for the RNG state)
    and others (a cut-short scheduler, a flipped trainer state): --resume logs one line per checkpoint naming the
    file, continues from checkpoint-4 and ends with the uninterrupted run's weights, metrics and every step's
    numbers."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(every_step_run / "experiment.json", out)
    for step in range(1, 10):
        shutil.copytree(every_step_run / f"checkpoint-{step}", out / f"checkpoint-{step}")
    damage = {9: "flipped model.safetensors", 8: "flipped optimizer.pt", 7: "replaced rng_state.pth",
              6: "cut scheduler.pt", 5: "flipped trainer_state.json"}
    for step, how in damage.items():
        corrupt(out / f"checkpoint-{step}", how)
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    log = finished(train_run(config, out, "--resume")).text()
    for step, how in damage.items():
        assert f"skipping damaged checkpoint {out / f'checkpoint-{step}'}: {expected_problem(how)}" in log, how
    assert f"--resume: continuing from {out / 'checkpoint-4'}\n" in log
    assert "Traceback" not in log
    assert_same_run(out, every_step_run)


def test_resume_with_every_checkpoint_damaged_is_one_error_line(every_step_run, tmp_path, cifar10_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(every_step_run / "experiment.json", out)
    for step, how in ((1, "flipped model.safetensors"), (2, "replaced rng_state.pth")):
        shutil.copytree(every_step_run / f"checkpoint-{step}", out / f"checkpoint-{step}")
        corrupt(out / f"checkpoint-{step}", how)
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), "--resume"])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and errors == [f"error: --resume: no complete checkpoint in training.output_dir="
                                      f"{str(out)!r}: 2 damaged (their files do not match their manifest.json; "
                                      "see the log)"], err[-3000:]


def test_resume_of_a_run_killed_before_its_first_complete_checkpoint_starts_it_again(every_step_run, tmp_path,
                                                                                      cifar10_path):
    """Killed while writing checkpoint-1: nothing to continue from, and a fresh start would refuse the non-empty
    folder. --resume (what a requeued job runs) starts this same run again from step 0, and ends exact. A finished
    run without checkpoints is never retrained over."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(every_step_run / "experiment.json", out)
    shutil.copytree(every_step_run / "checkpoint-1", out / "checkpoint-1")
    corrupt(out / "checkpoint-1", "cut off")
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    log = finished(train_run(config, out, "--resume")).text()
    assert f"--resume: {out} holds no complete checkpoint yet (the run stopped before its first one); starting " \
           "from step 0" in log
    assert "--resume: continuing from" not in log
    assert_same_run(out, every_step_run)

    done = tmp_path / "finished"
    shutil.copytree(every_step_run, done, ignore=shutil.ignore_patterns("checkpoint-*"))
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(done), "--resume"])
    assert status == 2 and f"error: --resume: no complete checkpoint in training.output_dir={str(done)!r}" in err


def test_resume_from_the_final_checkpoint_trains_no_step_past_max_steps(every_step_run, tmp_path, cifar10_path):
    """Killed after the last checkpoint, during the final evaluation/save: --resume must only finish the run.
    (transformers 5.23 alone would train step 11 when max_steps is not a multiple of the epoch length.)"""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(every_step_run / "experiment.json", out)
    for step in (9, MAX_STEPS):
        shutil.copytree(every_step_run / f"checkpoint-{step}", out / f"checkpoint-{step}")
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    log = finished(train_run(config, out, "--resume")).text()
    assert f"--resume: continuing from {out / f'checkpoint-{MAX_STEPS}'}" in log
    assert checkpoints(out) == [9, MAX_STEPS]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == MAX_STEPS
    assert_same_run(out, every_step_run)
