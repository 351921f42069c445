"""Test-wide set-up: no network, ever. Set before transformers/datasets/evaluate are imported."""

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(scope="session")
def cifar10_path() -> Path:
    """The local copy of uoft-cs/cifar10 (Hub layout); tests use slices of it."""
    if not CIFAR10.is_dir():
        pytest.fail(f"local CIFAR-10 not found at {CIFAR10} (expected ../shared/datasets/cifar10 beside the repo)")
    return CIFAR10
