"""Test-wide set-up: no network, ever. Set before transformers/datasets/evaluate are imported."""

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs two workers on the machine's cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# ----------------------------------------------------------------------------------------------- the fault tests' runs
# Session-wide: several test files compare against the same uninterrupted reference runs (faults_harness).


@pytest.fixture(scope="session")
def every_step_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference: a checkpoint after each of the 10 steps."""
    from .faults_harness import EVERY_STEP, finished, train_run, write_config

    root = tmp_path_factory.mktemp("every_step")
    finished(train_run(write_config(root, cifar10_path, EVERY_STEP), root / "out"))
    return root / "out"


@pytest.fixture(scope="session")
def best_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with load_best_model_at_end (checkpoints and evaluations at steps 5, 10)."""
    from .faults_harness import BEST_AT_END, finished, train_run, write_config

    root = tmp_path_factory.mktemp("best")
    finished(train_run(write_config(root, cifar10_path, BEST_AT_END), root / "out"))
    return root / "out"


@pytest.fixture(scope="session")
def ema_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with training.ema_decay: a checkpoint after each of the 10 steps."""
    from .faults_harness import EMA, EVERY_STEP, finished, train_run, write_config

    root = tmp_path_factory.mktemp("ema")
    finished(train_run(write_config(root, cifar10_path, EVERY_STEP, EMA), root / "out"))
    return root / "out"


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory) -> Path:
    """The tiny model, untrained, 3 labels, as save_pretrained writes it (weights, config, our code)."""
    from modeling_vit_scratch import ViTScratchForImageClassification

    from .helpers import tiny_config

    folder = tmp_path_factory.mktemp("saved") / "model"
    ViTScratchForImageClassification(tiny_config(num_labels=3)).save_pretrained(folder)
    return folder


@pytest.fixture
def faults_seed(request) -> int:
    """The kill timings' seed (FAULTS_SEED, else a fixed default): printed, and named in the report of a failure."""
    from .faults_harness import faults_seed as seed

    request.node.faults_seed = seed()
    print(f"FAULTS_SEED={request.node.faults_seed} (set FAULTS_SEED to draw other kill timings)")
    return request.node.faults_seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and hasattr(item, "faults_seed"):
        report.sections.append(("kill timings", f"drawn with FAULTS_SEED={item.faults_seed}: rerun with "
                                                f"FAULTS_SEED={item.faults_seed} to draw the same"))
    return report
