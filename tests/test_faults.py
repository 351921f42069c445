"""Faults: crash-safe training, exact resume, preemption, NaN, bad inputs, and what never gets written.

How the runs are made cheap enough (a shared 2-core CPU):
- Every run is tiny (a 2-layer, 32-wide model, 64 training images, batch 16: 4 steps per epoch, 10 steps).
- Runs start as children of a multiprocessing *forkserver* that has already imported train.py and the training
  stack: a child starts training in about a second instead of ~10 s of imports. A child is a real OS process
  (SIGKILL/SIGTERM hit it as they would hit `python train.py`); its output goes to a log file next to its output
  folder. The forkserver and every subprocess run with OMP_NUM_THREADS=1, so all runs compute bit-identically
  (with 2 threads against 1 the float reductions differ); the SIGTERM test stops a plain `python train.py` and
  resumes it in a forkserver child, which also checks that both ways of starting a run give the same numbers.
- Bad inputs fail before any training, in-process through `train.main`.
Randomness is exercised on purpose: dropout, attention dropout, drop-path, crop+flip, RandAugment (per image),
mixup/cutmix and random erasing all draw from the RNGs that a checkpoint must restore.
"""

import contextlib
import errno
import functools
import io
import json
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file

from .helpers import ACCELERATE, CPU_2PROC, PYTHON, REPO, subprocess_env

FAKE_TOKEN = "hf_faults_secret_token_4242"
TIMEOUT = 240
MAX_STEPS = 10  # 64 images / batch 16 = 4 steps per epoch: 10 steps end mid-epoch 3

TINY = {
    "dataset": {"validation_size": 32, "max_train_samples": 64, "max_eval_samples": 32, "max_test_samples": 32,
                "augmentation": {"random_crop_padding": 4, "horizontal_flip": True, "mixup_alpha": 0.8,
                                 "cutmix_alpha": 1.0, "mix_prob": 0.8, "random_erasing_prob": 0.25,
                                 "randaugment_num_ops": 2}},
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "drop_path_rate": 0.1},
    "training": {"max_steps": MAX_STEPS, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
                 "learning_rate": 0.001, "lr_scheduler_type": "cosine", "warmup_steps": 2,
                 "label_smoothing_factor": 0.1, "logging_steps": 1, "save_total_limit": None, "seed": 3,
                 "disable_tqdm": True, "eval_strategy": "steps", "eval_steps": 5, "save_strategy": "steps"},
}
# A checkpoint after every step (kill points everywhere); the final model is the last step's.
EVERY_STEP = {"training": {"save_steps": 1, "load_best_model_at_end": False}}
# Checkpoints every 5 steps beside the evaluations; the final model is the best one on validation.
BEST_AT_END = {"training": {"save_steps": 5, "load_best_model_at_end": True}}
# Keys of all_results.json that measure time, not the model.
TIMING = ("runtime", "per_second", "wall_seconds")


def write_config(folder: Path, cifar10_path: Path, *layers: dict, name: str = "config.json") -> Path:
    config = json.loads(json.dumps(TINY))
    config["dataset"]["name"] = str(cifar10_path)
    for layer in layers:
        for section, values in layer.items():
            config[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(config, indent=1))
    return path


# ----------------------------------------------------------------------------------------------- running train.py


def _child_main(argv: list[str], log_path: str, env: dict, hook) -> None:
    """Runs in a forkserver child: train.main(argv), output into log_path, exit with its status."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    os.environ.update(env)
    if hook is not None:
        hook()
    import train

    sys.exit(train.main(argv))


_FORKSERVER = None


def forkserver():
    """A forkserver context whose server has imported the training stack, started with OMP_NUM_THREADS=1."""
    global _FORKSERVER
    if _FORKSERVER is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["train", "vit_scratch.training.run", "tests.test_faults"])
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(subprocess_env())
        try:
            from multiprocessing import forkserver as server

            server.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _FORKSERVER = context
    return _FORKSERVER


class Run:
    """`train.py ARGV` in a forkserver child (fast) or a plain `python train.py` subprocess, logging to a file."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None, hook=None, plain: bool = False):
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        if plain:
            self.process = subprocess.Popen([PYTHON, "train.py", *argv], cwd=REPO, env=subprocess_env(**(env or {})),
                                            stdout=log.open("a"), stderr=subprocess.STDOUT)
            self.pid = self.process.pid
        else:
            self.process = forkserver().Process(target=_child_main, args=(argv, str(log), env or {}, hook))
            self.process.start()
            self.pid = self.process.pid

    def poll(self) -> int | None:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll()
        return self.process.exitcode

    def wait(self, timeout: float = TIMEOUT) -> int:
        if isinstance(self.process, subprocess.Popen):
            return self.process.wait(timeout)
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"run did not finish in {timeout} s; log:\n{self.text()[-4000:]}")
        return self.process.exitcode

    def signal(self, sig: int):
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def train_run(config: Path, output_dir: Path, *extra: str, name: str = "run", **kwargs) -> Run:
    argv = ["--config", str(config), "--training.output_dir", str(output_dir), *extra]
    return Run(argv, output_dir.parent / f"{output_dir.name}.{name}.log", **kwargs)


def finished(run: Run, expect: int = 0) -> Run:
    status = run.wait()
    assert status == expect, f"exit {status}, expected {expect}; log:\n{run.text()[-6000:]}"
    return run


def wait_for(predicate, run: Run, what: str, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while not predicate():
        if run.poll() is not None:
            raise AssertionError(f"run ended (exit {run.poll()}) before {what}; log:\n{run.text()[-6000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"timeout waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------------------------- comparing runs


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors" if path.is_dir() else path)


def assert_same_weights(a: Path, b: Path):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{a} and {b} differ in {different}"


def model_metrics(output_dir: Path) -> dict:
    results = json.loads((output_dir / "all_results.json").read_text())
    return {k: v for k, v in results.items() if k.startswith(("eval_", "test_")) and not k.endswith(TIMING)}


def step_logs(output_dir: Path) -> dict[int, tuple]:
    """step -> (loss, grad_norm, learning_rate) from the final trainer_state.json; and the eval entries."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    train = {e["step"]: (e["loss"], e["grad_norm"], e["learning_rate"]) for e in history if "loss" in e}
    evals = {e["step"]: (e["eval_loss"], e["eval_accuracy"]) for e in history if "eval_loss" in e}
    return {"train": train, "eval": evals}


def assert_same_run(run_dir: Path, reference: Path):
    """Same final weights, same eval/test metrics, same per-step losses, grad norms and learning rates."""
    assert_same_weights(run_dir, reference)
    assert model_metrics(run_dir) == model_metrics(reference)
    assert step_logs(run_dir) == step_logs(reference)
    assert sorted(step_logs(run_dir)["train"]) == list(range(1, MAX_STEPS + 1))


def checkpoints(output_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))


FINAL_FILES = ("README.md", "all_results.json", "model.safetensors", "training_curves.png")


# ----------------------------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def every_step_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference: a checkpoint after each of the 10 steps."""
    root = tmp_path_factory.mktemp("every_step")
    config = write_config(root, cifar10_path, EVERY_STEP)
    finished(train_run(config, root / "out"))
    return root / "out"


@pytest.fixture(scope="module")
def best_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with load_best_model_at_end (checkpoints and evaluations at steps 5, 10)."""
    root = tmp_path_factory.mktemp("best")
    config = write_config(root, cifar10_path, BEST_AT_END)
    finished(train_run(config, root / "out"))
    return root / "out"


# ----------------------------------------------------------------------------------------------- 1. SIGKILL + resume


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_run(every_step_run, tmp_path, cifar10_path):
    """One run killed with SIGKILL at up to seven points, each time resumed with --resume from its newest complete
    checkpoint.

    Kill points: steps 1, 2-3, 4 (the end of epoch 1: resumes at an epoch boundary), 5, 6-7, 8-9 and 10 (the last
    checkpoint: killed during the final evaluation/save); each kill comes a random 0-0.6 step times after
    checkpoint-K appears, so some land mid-write (checkpoint-K incomplete: the resume takes K-1, or starts again
    when K is 1), some mid-step. Every checkpoint the processes wrote must equal the uninterrupted run's, as must
    the final weights, metrics and every step's loss, grad norm and learning rate.
    """
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    plan = [1, rng.randint(2, 3), 4, 5, rng.randint(6, 7), rng.randint(8, 9), MAX_STEPS]
    step_seconds = json.loads((every_step_run / "all_results.json").read_text())["train_runtime"] / MAX_STEPS
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    kills, resumed_from = [], []
    for planned in plan:
        # a kill can land a step or two late: aim past every checkpoint already there (complete or not)
        target = max(planned, max(checkpoints(out), default=0) + 1)
        if target > MAX_STEPS:
            break
        run = train_run(config, out, *(["--resume"] if kills else []), name=f"part{len(kills)}")
        wait_for(lambda k=target: (out / f"checkpoint-{k}").exists(), run, f"checkpoint-{target}")
        time.sleep(rng.uniform(0, 0.6) * step_seconds)
        run.signal(signal.SIGKILL)
        status = run.wait()
        assert status in (-signal.SIGKILL, 0), run.text()[-4000:]  # 0: the last part may finish first
        if "--resume: continuing from " in run.text():
            resumed_from.append(run.text().split("--resume: continuing from ")[1].split()[0].rsplit("-", 1)[1])
        elif "starting from step 0" in run.text():
            resumed_from.append("0")
        kills.append((target, "killed" if status else "finished", checkpoints(out)[-1]))
    last = finished(train_run(config, out, "--resume", name="final"))
    resumed_from.append(last.text().split("--resume: continuing from ")[1].split()[0].rsplit("-", 1)[1])
    print(f"FAULTS_SEED={seed}: (kill after checkpoint, outcome, newest folder) {kills}; resumed from {resumed_from}")
    assert sum(outcome == "killed" for _, outcome, _ in kills) >= 5, kills

    assert checkpoints(out) == list(range(1, MAX_STEPS + 1))
    for step in checkpoints(out):
        assert_same_weights(out / f"checkpoint-{step}", every_step_run / f"checkpoint-{step}")
    assert_same_run(out, every_step_run)


# dataset.storage other than device (the tiny runs above pick device): extra argv; stream decodes in a worker process.
STORAGE_ARGS = {"device": ["--dataset.storage", "device"], "host": ["--dataset.storage", "host"],
                "stream": ["--dataset.storage", "stream", "--training.dataloader_num_workers", "1"]}


@pytest.mark.parametrize("storage", ["host", "stream"])
def test_sigkill_then_resume_in_host_and_stream_storage_gives_the_device_run(every_step_run, tmp_path, cifar10_path,
                                                                              storage):
    """Killed with SIGKILL mid-epoch 2 (a random 0-0.6 step times after checkpoint-6 appears), resumed: every
    checkpoint, the final weights, metrics and each step's numbers equal the uninterrupted run's, which held its images
    on the device. Stream resumes with a new set of decode workers, which must start reading at the right batch."""
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(10**6)))
    step_seconds = json.loads((every_step_run / "all_results.json").read_text())["train_runtime"] / MAX_STEPS
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    out = tmp_path / "out"
    run = train_run(config, out, *STORAGE_ARGS[storage], name="killed")
    wait_for(lambda: (out / "checkpoint-6").exists(), run, "checkpoint-6")
    time.sleep(random.Random(seed).uniform(0, 0.6) * step_seconds)
    workers = psutil.Process(run.pid).children(recursive=True)  # stream: its decode worker
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, run.text()[-4000:]
    print(f"FAULTS_SEED={seed}: killed after {checkpoints(out)[-1]}")
    log = finished(train_run(config, out, "--resume", *STORAGE_ARGS[storage], name="resumed")).text()
    assert bool(workers) == (storage == "stream")
    _, alive = psutil.wait_procs(workers, timeout=30)  # a worker notices its parent's death within seconds
    assert not alive, f"decode workers outlived the killed run: {alive}"
    assert "--resume: continuing from " in log and f"storage    {storage}" in log
    assert checkpoints(out) == list(range(1, MAX_STEPS + 1))
    for step in checkpoints(out):
        assert_same_weights(out / f"checkpoint-{step}", every_step_run / f"checkpoint-{step}")
    assert_same_run(out, every_step_run)


# ----------------------------------------------------------------------------------------------- 2. torn checkpoints


def _corrupt(folder: Path, how: str):
    """Damage one file of a checkpoint as a crash, a bad disk or a stray process leaves it: "cut short", "flipped"
    (two bytes inverted in the middle: inside the tensor data of the weights), "replaced" (random bytes of the same
    length), "removed"; or "cut off": the manifest, written last, is missing (killed before the end of the save)."""
    if how == "cut off":
        (folder / "manifest.json").unlink()
        return
    how, _, name = how.partition(" ")
    path = folder / name
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: max(len(data) - 100, len(data) // 2)])
    elif how == "flipped":
        middle = bytearray(data)
        for i in (len(data) // 2, len(data) // 2 + 1):
            middle[i] ^= 0xFF
        path.write_bytes(bytes(middle))
    elif how == "replaced":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "removed":
        path.unlink()
    else:
        raise ValueError(how)


CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


def _expected_problem(how: str) -> str:
    """What checkpoint_problem says about `_corrupt(folder, how)`."""
    if how == "cut off":
        return "no manifest.json"
    kind, _, name = how.partition(" ")
    return {"cut": f"{name} has ", "flipped": f"{name} does not match its checksum in manifest.json",
            "replaced": f"{name} does not match its checksum in manifest.json",
            "removed": f"{name} cannot be read (No such file or directory)"}[kind]


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
        _corrupt(root / "checkpoint-4", f"{how} {name}")
        problem = checkpoint_problem(root / "checkpoint-4")
        assert problem is not None and problem.startswith(_expected_problem(f"{how} {name}")), (how, problem)
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
        _corrupt(out / f"checkpoint-{step}", how)
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    log = finished(train_run(config, out, "--resume")).text()
    for step, how in damage.items():
        assert f"skipping damaged checkpoint {out / f'checkpoint-{step}'}: {_expected_problem(how)}" in log, how
    assert f"--resume: continuing from {out / 'checkpoint-4'}\n" in log
    assert "Traceback" not in log
    assert_same_run(out, every_step_run)


def test_resume_with_every_checkpoint_damaged_is_one_error_line(every_step_run, tmp_path, cifar10_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(every_step_run / "experiment.json", out)
    for step, how in ((1, "flipped model.safetensors"), (2, "replaced rng_state.pth")):
        shutil.copytree(every_step_run / f"checkpoint-{step}", out / f"checkpoint-{step}")
        _corrupt(out / f"checkpoint-{step}", how)
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
    _corrupt(out / "checkpoint-1", "cut off")
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


# ----------------------------------------------------------------------------------------------- 3. SIGTERM


@pytest.mark.parametrize("storage", ["device", "host", "stream"])
def test_sigterm_checkpoints_exits_143_without_finishing_and_resume_is_exact(best_run, tmp_path, cifar10_path,
                                                                            storage):
    """SIGTERM to a plain `python train.py` in step 2 or later: the step finishes, a checkpoint of it is saved (not a
    periodic one: those come every 5 steps), the process exits 143 within seconds and writes none of a finished
    run's files; `--resume` (in a forkserver child) ends exactly like the uninterrupted run, best model included.
    In every storage (stream: its decode worker must not keep the process alive), against the device run."""
    config = write_config(tmp_path, cifar10_path, BEST_AT_END)
    out = tmp_path / "out"
    run = train_run(config, out, *STORAGE_ARGS[storage], name="terminated", plain=True)
    wait_for(lambda: run.text().count("'loss':") >= 2, run, "step 2's log line")
    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    status = run.wait()
    seconds = time.monotonic() - sent
    log = run.text()
    print(f"SIGTERM -> exit {status} after {seconds:.1f} s")
    assert status == 143, log[-4000:]
    assert seconds < 20, f"took {seconds:.1f} s to stop"
    step = int(log.split("error: SIGTERM: saved ")[1].split(" at step ")[1].split()[0])
    assert f"error: SIGTERM: saved {out / f'checkpoint-{step}'} at step {step} and stopped; continue with --resume" \
           in log
    assert 2 <= step < MAX_STEPS
    assert checkpoints(out)[-1] == step
    from vit_scratch.training.checkpoints import checkpoint_problem

    assert checkpoint_problem(out / f"checkpoint-{step}") is None
    assert json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["global_step"] == step
    for name in FINAL_FILES:
        assert not (out / name).exists(), f"a preempted run wrote {name}"

    log = finished(train_run(config, out, "--resume", *STORAGE_ARGS[storage], name="resumed")).text()
    assert f"--resume: continuing from {out / f'checkpoint-{step}'}" in log
    assert_same_run(out, best_run)
    state = json.loads((out / "trainer_state.json").read_text())
    reference = json.loads((best_run / "trainer_state.json").read_text())
    assert state["best_global_step"] == reference["best_global_step"]
    assert state["best_metric"] == reference["best_metric"]


@pytest.mark.slow
def test_sigterm_to_a_two_process_accelerate_launch(tmp_path, cifar10_path):
    """SIGTERM to the `accelerate launch` process: torchrun's agent forwards it to both workers, which agree (an
    all-reduce of the flag at every step end) to save the same step's checkpoint and exit 143; the launcher exits
    non-zero. --resume under the same launch continues from that checkpoint to the end."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    config = write_config(tmp_path, cifar10_path, EVERY_STEP, {"training": {"per_device_train_batch_size": 8}})
    out = tmp_path / "out"

    def launch(*extra, name):
        log = tmp_path / f"{name}.log"
        command = [ACCELERATE, "launch", "--config_file", CPU_2PROC, "--main_process_port", str(free_port()),
                   "train.py", "--config", str(config), "--training.output_dir", str(out), *extra]
        return log, subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=log.open("w"),
                                     stderr=subprocess.STDOUT)

    log, launcher = launch(name="terminated")
    end = time.monotonic() + TIMEOUT
    while not (out / "checkpoint-2").exists():
        assert launcher.poll() is None, log.read_text()[-6000:]
        assert time.monotonic() < end
        time.sleep(0.01)
    sent = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    status = launcher.wait(TIMEOUT)
    seconds = time.monotonic() - sent
    text = log.read_text()
    print(f"2 processes: SIGTERM -> launcher exit {status} after {seconds:.1f} s")
    assert status != 0, text[-6000:]
    assert seconds < 25, text[-6000:]
    stops = re.findall(r"error: SIGTERM: saved (\S+) at step (\d+)", text)
    assert len(stops) == 2 and stops[0] == stops[1], text[-6000:]  # both processes, the same checkpoint
    step = int(stops[0][1])
    from vit_scratch.training.checkpoints import checkpoint_problem

    assert checkpoint_problem(out / f"checkpoint-{step}") is None
    assert {p.name for p in (out / f"checkpoint-{step}").glob("rng_state*")} == {"rng_state_0.pth",
                                                                                   "rng_state_1.pth"}
    for name in FINAL_FILES:
        assert not (out / name).exists()

    log, launcher = launch("--resume", name="resumed")
    assert launcher.wait(TIMEOUT) == 0, log.read_text()[-6000:]
    text = log.read_text()
    assert text.count(f"--resume: continuing from {out / f'checkpoint-{step}'}") == 2  # each process
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    assert sorted(e["step"] for e in state["log_history"] if "loss" in e) == list(range(1, MAX_STEPS + 1))
    for name in FINAL_FILES:
        assert (out / name).exists()


# ----------------------------------------------------------------------------------------------- 4. NaN / inf


def test_diverging_learning_rate_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, cifar10_path):
    """learning_rate=1e6 (constant): step 1's loss is finite, step 2's is not. Exit 1, the message names step 2
    and the checkpoint kept; checkpoint-2 (of the diverged model) is never written, nor any final file."""
    config = write_config(tmp_path, cifar10_path, EVERY_STEP, {"training": {
        "learning_rate": 1e6, "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 0}})
    out = tmp_path / "out"
    log = finished(train_run(config, out), expect=1).text()
    assert (f"error: training loss became NaN or inf at step 2; stopped without saving it (the last good "
            f"checkpoint is {out / 'checkpoint-1'})") in log
    assert "Traceback" not in log
    assert checkpoints(out) == [1]
    for name in FINAL_FILES:
        assert not (out / name).exists()


def _nan_loss_from_step_6():
    """Test hook (runs in the child): the training loss of the 6th training forward and later is NaN."""
    from vit_scratch.training.trainer import ViTScratchTrainer

    original = ViTScratchTrainer.compute_loss
    calls = [0]

    def compute_loss(self, model, inputs, *args, **kwargs):
        result = original(self, model, inputs, *args, **kwargs)
        if model.training:
            calls[0] += 1
            if calls[0] >= 6:
                loss = result[0] if isinstance(result, tuple) else result
                loss = loss * float("nan")
                result = (loss, *result[1:]) if isinstance(result, tuple) else loss
        return result

    ViTScratchTrainer.compute_loss = compute_loss


def test_nan_with_epoch_checkpoints_is_caught_before_the_epoch_end_save(tmp_path, cifar10_path):
    """save/eval per epoch and rare logging (the project's defaults): the loss turns NaN at step 6 (in epoch 2);
    the epoch-end save at step 8 must not write a checkpoint of the diverged model: exit 1 naming step 6, only
    checkpoint-4 (epoch 1) on disk."""
    config = write_config(tmp_path, cifar10_path, {"training": {
        "save_strategy": "epoch", "eval_strategy": "epoch", "logging_steps": 50, "load_best_model_at_end": True}})
    out = tmp_path / "out"
    log = finished(train_run(config, out, hook=_nan_loss_from_step_6), expect=1).text()
    assert (f"error: training loss became NaN or inf at step 6; stopped without saving it (the last good "
            f"checkpoint is {out / 'checkpoint-4'})") in log
    assert checkpoints(out) == [4]
    assert torch.isfinite(torch.cat([t.flatten() for t in weights(out / "checkpoint-4").values()])).all()
    for name in FINAL_FILES:
        assert not (out / name).exists()


# ----------------------------------------------------------------------------------------------- a full disk

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


@pytest.mark.parametrize("cut", ["header", "half", "last byte"])
def test_a_torn_model_safetensors_never_loads(saved_model, tmp_path, cut):
    """What a write cut short leaves: from_pretrained (our class and the Auto class) and pipeline fail, naming the
    file's problem, rather than load part of the weights."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageClassification, ViTImageProcessorPil, pipeline

    from modeling_vit_scratch import ViTScratchForImageClassification

    torn = tmp_path / "torn"
    shutil.copytree(saved_model, torn)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(torn)  # all that pipeline needs
    data = (torn / "model.safetensors").read_bytes()
    keep = {"header": 20, "half": len(data) // 2, "last byte": len(data) - 1}[cut]
    (torn / "model.safetensors").write_bytes(data[:keep])
    for load in (ViTScratchForImageClassification.from_pretrained, AutoModelForImageClassification.from_pretrained,
                 lambda folder: pipeline("image-classification", model=str(folder))):
        with pytest.raises(SafetensorError, match="Error while deserializing header: (invalid header length|incomplete "
                                                  "metadata, file not fully covered)"):
            load(torn)


# ----------------------------------------------------------------------------------------------- 5. bad inputs


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, cifar10_path) -> dict[str, Path]:
    """Small sources with one defect each."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("bad_data")
    # The Hub layout of the local CIFAR-10 with 64 train rows and a 0-row test parquet.
    (root / "empty_parquet" / "plain_text").mkdir(parents=True)
    shutil.copy(cifar10_path / "README.md", root / "empty_parquet" / "README.md")
    source = pq.ParquetFile(cifar10_path / "plain_text" / "train-00000-of-00001.parquet")
    table = pa.Table.from_batches([next(source.iter_batches(batch_size=64))])
    table = table.replace_schema_metadata(source.schema_arrow.metadata)
    pq.write_table(table, root / "empty_parquet" / "plain_text" / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 0), root / "empty_parquet" / "plain_text" / "test-00000-of-00001.parquet")
    images = np.random.RandomState(0).randint(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    values = [{"bytes": _png(a), "path": None} for a in images]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    labels = [i % 2 for i in range(40)]
    truncated = list(values)
    truncated[13] = {"bytes": values[13]["bytes"][:70], "path": None}  # cut off inside the image data
    garbage = list(values)
    garbage[21] = {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "path": None}
    for name, train_values in (("truncated_png", truncated), ("garbage_png", garbage)):
        datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"image": train_values, "label": labels}, features=features),
            "test": datasets.Dataset.from_dict({"image": values[:8], "label": labels[:8]}, features=features),
        }).save_to_disk(str(root / name))
    int_features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    int_labels = [i % 2 for i in range(40)]
    int_labels[5] = 7
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": values, "label": int_labels}, features=int_features),
    }).save_to_disk(str(root / "int_labels"))
    # Parquet in the Hub layout, `label` a ClassLabel of 10 names, row 5 of one split holding label 12: datasets
    # reads it without a word (it does not enforce a ClassLabel's range on read).
    ten = datasets.ClassLabel(names=[f"c{i}" for i in range(10)])
    for bad_split in ("train", "test"):
        folder = root / f"classlabel_{bad_split}" / "data"
        for split in ("train", "test"):
            path = folder / f"{split}-00000-of-00001.parquet"
            datasets.Dataset.from_dict({"image": values[:24], "label": [i % 10 for i in range(24)]},
                                       features=datasets.Features({"image": datasets.Image(), "label": ten})
                                       ).to_parquet(str(path))
        table = pq.read_table(folder / f"{bad_split}-00000-of-00001.parquet")  # its schema says ClassLabel
        past_the_names = table.column("label").to_pylist()
        past_the_names[5] = 12
        table = table.set_column(table.schema.get_field_index("label"), table.schema.field("label"),
                                 pa.array(past_the_names, table.schema.field("label").type))
        pq.write_table(table, folder / f"{bad_split}-00000-of-00001.parquet")
    # The CIFAR-10 python version with an empty test batch (datasets itself cannot load an empty split).
    cifar = root / "empty_test" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(40, -1), b"labels": labels}
    for i in range(1, 6):
        (cifar / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (cifar / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    (root / "bad.ini").write_text("[model\nembed_dim = 32\n")
    (root / "unknown.ini").write_text("[model]\nembed_dim = 32\nwidth = 3\n")
    (root / "bad.json").write_text('{"model": {"hidden_size": 32,}}')
    (root / "list.json").write_text('[1, 2]')
    return {"root": root, "truncated_png": root / "truncated_png", "garbage_png": root / "garbage_png",
            "empty_test": root / "empty_test"}


def main_in_process(argv: list[str]) -> tuple[int, str]:
    import train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.main(argv)
    return status, err.getvalue()


# (id, extra argv or a config-file name, expected message); "{data}" -> the bad_data root, "{out}" -> output_dir
BAD_INPUTS = [
    ("malformed JSON", "bad.json", "bad.json: malformed JSON at line 1, column 30: Expecting property name"),
    ("JSON not an object", "list.json", "list.json: expected a JSON object with sections dataset, model, training"),
    ("malformed INI", "bad.ini", "bad.ini: malformed INI: File contains no section headers."),
    ("unknown INI key", "unknown.ini", "unknown INI key [model] width"),
    ("unknown key", ["--model.hidden_sise", "32"], "unknown key model.hidden_sise; did you mean 'hidden_size'?"),
    ("unknown section", ["--trainer.seed", "1"], "override --trainer.seed: expected --SECTION.KEY with SECTION one of"
                                                 " dataset, model, training; did you mean 'training'?"),
    ("wrong type", ["--training.learning_rate", "fast"], "training.learning_rate='fast' is invalid: expected float"),
    ("wrong type int", ["--model.hidden_size", "32.5"], "model.hidden_size=32.5 is invalid: expected int"),
    ("wrong enum", ["--training.lr_scheduler_type", "cosin"], "training.lr_scheduler_type='cosin' is invalid: "
                                                                "expected one of linear, cosine"),
    ("out of range lr", ["--training.learning_rate", "-1"], "training.learning_rate=-1 is invalid: must be > 0"),
    ("out of range prob", ["--model.hidden_dropout_prob", "1.5"],
     "ViTScratchConfig.hidden_dropout_prob=1.5 is invalid: must be a probability in [0, 1)"),
    ("zero samples", ["--dataset.max_train_samples", "0"],
     "dataset.max_train_samples=0 is invalid: must be a positive integer or null"),
    ("inconsistent sizes", ["--model.hidden_size", "250", "--model.num_attention_heads", "4"],
     "ViTScratchConfig.hidden_size=250 is invalid: must be a multiple of num_attention_heads=4"),
    ("patch not dividing image", ["--model.patch_size", "5"],
     "ViTScratchConfig.image_size=32 is invalid: must be a multiple of patch_size=5"),
    ("token in config", ["--training.hub_token", "hf_x"], "training.hub_token is not allowed: a token never goes"),
    ("pickle weights", ["--training.save_safetensors", "false"],  # transformers 5 always saves safetensors
     "unknown key training.save_safetensors"),
    ("jit checkpoint", ["--training.enable_jit_checkpoint", "true"], "training.enable_jit_checkpoint is not allowed"),
    ("missing dataset path", ["--dataset.name", "{data}/no_such_folder"],
     "dataset.name={data}/no_such_folder: no such file or folder"),
    ("misnamed image column", ["--dataset.image_column", "foo"],
     "split 'train': no column 'foo' (dataset.image_column); columns: ['img', 'label']"),
    ("misnamed label column", ["--dataset.label_column", "fine_label"],
     "split 'train': no column 'fine_label' (dataset.label_column); columns: ['img', 'label']"),
    ("unknown split", ["--dataset.test_split", "validation"],
     "dataset.test_split='validation': '{cifar}' has no such split; splits: ['test', 'train']"),
    ("num_labels below the classes", ["--model.num_labels", "5"],
     "split 'train': model.num_labels=5, but the dataset has 10 classes (airplane, automobile, bird, cat, deer, dog, "
     "frog, horse, ship, truck); remove model.num_labels or set it to 10"),
    ("integer label outside num_labels", ["--dataset.name", "{data}/int_labels", "--dataset.validation_size", "4",
                                          "--dataset.test_split", "null", "--model.num_labels", "5"],
     "dataset '{data}/int_labels', split 'train', row 5: label 7 is outside [0, 5) (model.num_labels=5)"),
    ("ClassLabel label past the names in train", ["--dataset.name", "{data}/classlabel_train",
                                                  "--dataset.validation_size", "4"],
     "dataset '{data}/classlabel_train', split 'train', row 5: label 12 is outside [0, 10) (the dataset's 10 class "
     "names)"),
    ("ClassLabel label past the names in test", ["--dataset.name", "{data}/classlabel_test",
                                                 "--dataset.validation_size", "4"],
     "dataset '{data}/classlabel_test', split 'test', row 5: label 12 is outside [0, 10) (the dataset's 10 class "
     "names)"),
    ("empty split", ["--dataset.name", "{data}/empty_test", "--dataset.validation_size", "8"],
     "dataset '{data}/empty_test', split 'test': the split is empty"),
    ("empty parquet split", ["--dataset.name", "{data}/empty_parquet", "--dataset.validation_size", "8"],
     "dataset.name={data}/empty_parquet: a folder, but not a save_to_disk folder, CIFAR-10 archive, image folder or "
     "Hub-layout dataset: DatasetGenerationError: An error occurred while generating the dataset (caused by "
     "ArrowInvalid: BatchSize must be greater than 0, got 0)"),
    ("validation larger than train", ["--dataset.name", "{data}/empty_test", "--dataset.validation_size", "200",
                                      "--dataset.test_split", "null"],
     "dataset.validation_size=200 must be smaller than the 200 images of dataset '{data}/empty_test', split 'train'"),
    ("truncated PNG", ["--dataset.name", "{data}/truncated_png", "--dataset.validation_size", "4",
                       "--dataset.max_train_samples", "null"],
     "dataset '{data}/truncated_png', split 'train', row 13: cannot decode column 'image': OSError: image file is "
     "truncated"),
    ("truncated PNG, streamed", ["--dataset.name", "{data}/truncated_png", "--dataset.validation_size", "4",
                                 "--dataset.max_train_samples", "null", *STORAGE_ARGS["stream"]],
     "dataset '{data}/truncated_png', split 'train', row 13: cannot decode column 'image': OSError: image file is "
     "truncated"),  # met by the pass that measures mean/std, in a decode worker, before anything is written
    ("garbage PNG", ["--dataset.name", "{data}/garbage_png", "--dataset.validation_size", "4",
                     "--dataset.max_train_samples", "null"],
     "dataset '{data}/garbage_png', split 'train', row 21: cannot decode column 'image':"),
    ("no validation but eval", ["--dataset.validation_size", "0"],
     "dataset.validation_size=0 leaves nothing to evaluate on"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(case, bad_data, tmp_path, cifar10_path):
    _, given, expected = case
    root = bad_data["root"]
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    if isinstance(given, str):
        config, extra = root / given, ["--dataset.name", str(cifar10_path)] if given.endswith(".json") else []
    else:
        extra = [a.replace("{data}", str(root)) for a in given]
    out = tmp_path / "out"
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), *extra])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1, err[-3000:]
    print(f"\n{case[0]}: {errors[0]}")
    assert expected.format(data=root, cifar=cifar10_path) in errors[0]
    assert not out.exists()


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


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification

    folder = tmp_path_factory.mktemp("saved") / "model"
    config = ViTScratchConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              num_labels=3)
    ViTScratchForImageClassification(config).save_pretrained(folder)
    return folder


def test_from_pretrained_reports_and_our_loader_refuses_incomplete_weights(saved_model, tmp_path, caplog):
    """transformers' contract: `from_pretrained` loads, reports missing keys in `missing_keys` and logs them. The
    project's own loading path (`load_complete_model`: resume, validation, prediction) refuses, naming the keys."""
    from safetensors.torch import save_file

    from modeling_vit_scratch import ViTScratchForImageClassification, ViTScratchModel
    from vit_scratch.config.schema import ConfigError
    from vit_scratch.training.checkpoints import load_complete_model

    no_weights = tmp_path / "no_weights"
    shutil.copytree(saved_model, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        ViTScratchForImageClassification.from_pretrained(no_weights)
    with pytest.raises(ConfigError, match="no_weights: cannot load the model: OSError: .*model.safetensors"):
        load_complete_model(no_weights)

    wider = tmp_path / "config_says_64"  # config.json says 64 wide, the weights are 32 wide
    shutil.copytree(saved_model, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own check, strict by default
        ViTScratchForImageClassification.from_pretrained(wider)
    with pytest.raises(ConfigError, match="of another shape"):
        load_complete_model(wider, ignore_mismatched_sizes=True)

    for dropped in ("classifier.weight", "vit.layers.0.mlp.fc1.bias"):
        partial = tmp_path / f"without_{dropped}"
        shutil.copytree(saved_model, partial)
        tensors = weights(partial)
        del tensors[dropped]
        save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
        caplog.clear()
        model, info = ViTScratchForImageClassification.from_pretrained(partial, output_loading_info=True)
        assert info["missing_keys"] == [dropped] or set(info["missing_keys"]) == {dropped}
        assert dropped in caplog.text  # logged, naming the key
        with pytest.raises(ConfigError, match=rf"the weights do not cover ViTScratchForImageClassification: "
                                              rf"1 missing \({dropped}\)"):
            load_complete_model(partial)

    # transformers' own idiom: a fresh model from a config and an empty state dict
    fresh, info = ViTScratchForImageClassification.from_pretrained(
        None, config=ViTScratchForImageClassification.config_class.from_pretrained(saved_model), state_dict={},
        output_loading_info=True)
    assert len(info["missing_keys"]) == len(fresh.state_dict())

    truncated = tmp_path / "truncated"
    shutil.copytree(saved_model, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="truncated: cannot load the model: .*(incomplete metadata|not fully cov)"):
        load_complete_model(truncated)

    # A backbone into a classifier: a new head, reported as missing (the fine-tuning case).
    backbone = tmp_path / "backbone"
    ViTScratchModel.from_pretrained(saved_model).save_pretrained(backbone)
    model, info = ViTScratchForImageClassification.from_pretrained(backbone, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert load_complete_model(saved_model).num_labels == 3


# ----------------------------------------------------------------------------------------------- 6. security


def test_determinism_and_no_token_or_pickled_weights_in_any_output(best_run, tmp_path, cifar10_path):
    """The same seed twice gives identical weights and metrics (best_run vs this run, started with HF_TOKEN set);
    no file under output_dir, checkpoints included, holds the token; weights are safetensors only."""
    config = write_config(tmp_path, cifar10_path, BEST_AT_END)
    out = tmp_path / "out"
    finished(train_run(config, out, env={"HF_TOKEN": FAKE_TOKEN}))
    assert_same_run(out, best_run)

    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in files if FAKE_TOKEN.encode() in p.read_bytes()] == []
    assert {p.name for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")} == \
           {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert not any(p.name in ("pytorch_model.bin", "model.bin") or "pytorch_model" in p.name for p in files)
    weight_files = {p.relative_to(out).as_posix() for p in files if p.suffix == ".safetensors"}
    assert weight_files == {"model.safetensors", "checkpoint-5/model.safetensors", "checkpoint-10/model.safetensors"}
    # training_args.bin is a pickle of TrainingArguments: no token in it (hub_token is refused in configs)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert type(args).__name__ == "ViTScratchTrainingArguments" and args.hub_token is None
    assert FAKE_TOKEN not in repr(vars(args))
    # the Trainer loads the weights back from safetensors, and optimizer/scheduler/RNG states with
    # torch.load(weights_only=True): check they load that way (no arbitrary objects inside)
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():  # what transformers allows when it loads them back (numpy's RNG state for rng_state.pth)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.load(out / "checkpoint-5" / name, weights_only=True)


REMOTE_CODE_PROBE = r"""
import json, sys
sys.modules["modeling_vit_scratch"] = None  # our package may not be imported, so nothing is registered
from pathlib import Path
from transformers import AutoModelForImageClassification
folder, marker = Path(sys.argv[1]), Path(sys.argv[2])
try:
    AutoModelForImageClassification.from_pretrained(folder)
except Exception as error:
    print("REFUSED", type(error).__name__, error)
else:
    print("LOADED without trust_remote_code")
print("MARKER AFTER REFUSAL", marker.exists())
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
print("LOADED WITH trust_remote_code", type(model).__name__, marker.exists())
"""


def test_saved_code_runs_only_with_trust_remote_code(saved_model, tmp_path):
    """A saved folder carries our code; loading it where our package is not importable must refuse to run it
    unless trust_remote_code=True. The copied modeling file writes a marker when executed."""
    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    marker = tmp_path / "code_ran"
    code = (folder / "modeling_vit_scratch.py").read_text()
    (folder / "modeling_vit_scratch.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + code)
    proc = subprocess.run([PYTHON, "-c", REMOTE_CODE_PROBE, str(folder), str(marker)], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "REFUSED ValueError" in proc.stdout and "trust_remote_code=True" in proc.stdout, proc.stdout
    assert "MARKER AFTER REFUSAL False" in proc.stdout
    assert "LOADED WITH trust_remote_code ViTScratchForImageClassification True" in proc.stdout


# ----------------------------------------------------------------------------------------------- EMA of the weights

# A decay this low makes the average far from the weights within 10 steps, so that mixing them up cannot pass.
EMA = {"training": {"ema_decay": 0.8, "ema_warmup": True}}
TRAINING_WEIGHTS = "training_weights.safetensors"


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with training.ema_decay: a checkpoint after each of the 10 steps."""
    root = tmp_path_factory.mktemp("ema")
    config = write_config(root, cifar10_path, EVERY_STEP, EMA)
    finished(train_run(config, root / "out"))
    return root / "out"


def test_checkpoints_and_the_saved_model_hold_the_average_of_the_training_weights(ema_run):
    """The average recomputed from each checkpoint's training weights with timm's recursion (decay 0 at step 1, then
    1 - (1 + step - 1)^(-2/3) capped at 0.8) is each checkpoint's model.safetensors, and the final model is the
    last one (load_best_model_at_end is off here); the evaluations logged during training are the average's."""
    decay, average = EMA["training"]["ema_decay"], None
    for step in range(1, MAX_STEPS + 1):
        folder = ema_run / f"checkpoint-{step}"
        trained = weights(folder / TRAINING_WEIGHTS)
        d = 0.0 if step == 1 else min(decay, 1 - step ** (-2 / 3))
        average = trained if average is None else {k: torch.lerp(v, trained[k], 1 - d) for k, v in average.items()}
        saved = weights(folder)
        assert saved.keys() == average.keys()
        for name in saved:
            torch.testing.assert_close(saved[name], average[name], rtol=0, atol=1e-6)
    assert max((trained[k] - saved[k]).abs().max() for k in saved) > 1e-4  # the average is not the weights (atol 1e-6)
    assert_same_weights(ema_run, ema_run / f"checkpoint-{MAX_STEPS}")
    evals = step_logs(ema_run)["eval"]
    assert evals[MAX_STEPS] == (model_metrics(ema_run)["eval_loss"], model_metrics(ema_run)["eval_accuracy"])


def test_sigkill_then_resume_with_ema_gives_the_uninterrupted_run(ema_run, tmp_path, cifar10_path):
    """Killed a random 0-0.6 step times after checkpoint-6 appears, resumed: every checkpoint (the average and the
    training weights), the final weights, metrics and each step's numbers equal the uninterrupted run's."""
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(10**6)))
    step_seconds = json.loads((ema_run / "all_results.json").read_text())["train_runtime"] / MAX_STEPS
    config = write_config(tmp_path, cifar10_path, EVERY_STEP, EMA)
    out = tmp_path / "out"
    run = train_run(config, out, name="killed")
    wait_for(lambda: (out / "checkpoint-6").exists(), run, "checkpoint-6")
    time.sleep(random.Random(seed).uniform(0, 0.6) * step_seconds)
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, run.text()[-4000:]
    print(f"FAULTS_SEED={seed}: killed after {checkpoints(out)[-1]}")
    log = finished(train_run(config, out, "--resume", name="resumed")).text()
    assert "--resume: continuing from " in log
    assert checkpoints(out) == list(range(1, MAX_STEPS + 1))
    for step in checkpoints(out):
        assert_same_weights(out / f"checkpoint-{step}", ema_run / f"checkpoint-{step}")
        assert_same_weights(out / f"checkpoint-{step}" / TRAINING_WEIGHTS, ema_run / f"checkpoint-{step}" /
                            TRAINING_WEIGHTS)
    assert_same_run(out, ema_run)


@pytest.mark.parametrize("saved_with", ["ema", "no ema"])
def test_resume_with_another_ema_setting_is_refused(saved_with, every_step_run, ema_run, tmp_path, cifar10_path):
    """A checkpoint's model.safetensors is the average when it was saved with EMA: resuming it without (or the other
    way round) would continue from the wrong weights."""
    source = ema_run if saved_with == "ema" else every_step_run
    out = tmp_path / "out"
    shutil.copytree(source, out)
    config = write_config(tmp_path, cifar10_path, EVERY_STEP, {} if saved_with == "ema" else EMA)
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), "--resume"])
    assert status == 2, err
    setting = "None" if saved_with == "ema" else "0.8"
    assert (f"was saved {'with' if saved_with == 'ema' else 'without'} an average of the weights, but "
            f"training.ema_decay={setting}") in err.strip().splitlines()[-1]
