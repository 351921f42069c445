"""The fault tests' harness: the tiny run's config, starting `train.py` as a real process (and killing it), reading
and damaging checkpoints, comparing two runs bit for bit.

How the runs are made cheap enough (a shared 2-core CPU):
- Every run is tiny (helpers.TINY with 2 layers, 64 training images, batch 16: 4 steps per epoch, 10 steps).
- Runs start as children of a multiprocessing *forkserver* that has already imported train.py and the training
  stack: a child starts training in about a second instead of ~10 s of imports. A child is a real OS process
  (SIGKILL/SIGTERM hit it as they would hit `python train.py`); its output goes to a log file next to its output
  folder. The forkserver and every subprocess run with OMP_NUM_THREADS=1, so all runs compute bit-identically
  (with 2 threads against 1 the float reductions differ). A test hook (a module-level function of a test module,
  run in the child before train.main) patches what the test needs to fail.
- Bad inputs fail before any training, in-process through `train.main` (main_in_process).
Randomness is exercised on purpose: dropout, attention dropout, drop-path, crop+flip, RandAugment (per image),
mixup/cutmix and random erasing all draw from the RNGs that a checkpoint must restore.
Kill timings are random but seeded: FAULTS_SEED (default DEFAULT_FAULTS_SEED) through the `faults_seed` fixture,
printed with the test's output and named in its failure report.
"""

import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .helpers import PYTHON, REPO, TINY, subprocess_env

TIMEOUT = 240
MAX_STEPS = 10  # 64 images / batch 16 = 4 steps per epoch: 10 steps end mid-epoch 3
DEFAULT_FAULTS_SEED = 25  # the kill timings' seed unless FAULTS_SEED is set

RUN = {
    "dataset": {"validation_size": 32, "max_train_samples": 64, "max_eval_samples": 32, "max_test_samples": 32,
                "augmentation": {"random_crop_padding": 4, "horizontal_flip": True, "mixup_alpha": 0.8,
                                 "cutmix_alpha": 1.0, "mix_prob": 0.8, "random_erasing_prob": 0.25,
                                 "randaugment_num_ops": 2}},
    # 2 layers: drop-path's rate is 0 at the first block, so one layer would leave it unexercised.
    "model": {**TINY, "num_hidden_layers": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "drop_path_rate": 0.1},
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
    config = json.loads(json.dumps(RUN))
    config["dataset"]["name"] = str(cifar10_path)
    for layer in layers:
        for section, values in layer.items():
            config[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(config, indent=1))
    return path

# A decay this low makes the average far from the weights within 10 steps, so that mixing them up cannot pass.
EMA = {"training": {"ema_decay": 0.8, "ema_warmup": True}}
TRAINING_WEIGHTS = "training_weights.safetensors"
# dataset.storage other than device (the runs above pick device): extra argv; stream decodes in a worker process.
STORAGE_ARGS = {"device": ["--dataset.storage", "device"], "host": ["--dataset.storage", "host"],
                "stream": ["--dataset.storage", "stream", "--training.dataloader_num_workers", "1"]}

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
        context.set_forkserver_preload(["train", "vit_scratch.training.run", "tests.faults_harness"])
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


def main_in_process(argv: list[str]) -> tuple[int, str]:
    """`train.main(argv)` in this process: its exit status and what it wrote to stderr."""
    import train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.main(argv)
    return status, err.getvalue()


# ----------------------------------------------------------------------------------------------- damaging a checkpoint


def corrupt(folder: Path, how: str):
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


def expected_problem(how: str) -> str:
    """What checkpoint_problem says about `corrupt(folder, how)`."""
    if how == "cut off":
        return "no manifest.json"
    kind, _, name = how.partition(" ")
    return {"cut": f"{name} has ", "flipped": f"{name} does not match its checksum in manifest.json",
            "replaced": f"{name} does not match its checksum in manifest.json",
            "removed": f"{name} cannot be read (No such file or directory)"}[kind]


# ----------------------------------------------------------------------------------------------- kill timings


def faults_seed() -> int:
    """The seed of the random kill timings: FAULTS_SEED, or a fixed default so that a failure reproduces."""
    return int(os.environ.get("FAULTS_SEED", DEFAULT_FAULTS_SEED))


def step_seconds(run_dir: Path) -> float:
    """A training step's time in a finished run (kills land a random fraction of it after a checkpoint appears)."""
    return json.loads((run_dir / "all_results.json").read_text())["train_runtime"] / MAX_STEPS
