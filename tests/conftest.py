"""Test-wide set-up: no network, ever. Set before transformers/datasets/evaluate are imported."""

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The local uoft-cs/cifar10 copy beside the repo; VIT_SCRATCH_CIFAR10 points elsewhere (e.g. the GPU machine's copy).
CIFAR10 = Path(os.environ.get("VIT_SCRATCH_CIFAR10", REPO.parent / "shared" / "datasets" / "cifar10"))


def subprocess_env(**extra) -> dict:
    """Environment for a child `train.py`/`accelerate launch`: offline, one thread each (bit-identical results,
    and no oversubscription of the 2 cores), no token, no leftover distributed settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT") and not k.startswith("ACCELERATE_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_EVALUATE_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


@pytest.fixture(scope="session")
def cifar10_path() -> Path:
    """The local copy of uoft-cs/cifar10 (Hub layout); tests use slices of it."""
    if not CIFAR10.is_dir():
        pytest.fail(f"local CIFAR-10 not found at {CIFAR10} (expected ../shared/datasets/cifar10 beside the repo)")
    return CIFAR10
