"""Test-wide set-up: no network, ever. Set before transformers/datasets/evaluate are imported."""

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from .helpers import CIFAR10, PYTHON, REPO, check_ok, run, subprocess_env, tiny_run_args  # noqa: E402,F401


@pytest.fixture(scope="session")
def cifar10_path() -> Path:
    """The local copy of uoft-cs/cifar10 (Hub layout); tests use slices of it."""
    if not CIFAR10.is_dir():
        pytest.fail(f"local CIFAR-10 not found at {CIFAR10} (expected ../shared/datasets/cifar10 beside the repo)")
    return CIFAR10


@pytest.fixture(scope="session")
def python_run(tmp_path_factory, cifar10_path) -> Path:
    """The tiny run, once per session, for every test that only reads a finished run: `python train.py`, one
    process, global batch 16, 4 steps (helpers.tiny_run_args); its stderr is kept beside the output folder."""
    output_dir = tmp_path_factory.mktemp("python_run") / "out"
    proc = check_ok(run([PYTHON, "train.py", *tiny_run_args(cifar10_path, output_dir)]))
    (output_dir.parent / "stderr.txt").write_text(proc.stderr)
    return output_dir
