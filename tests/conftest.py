"""Test-wide set-up: no network, ever. Set before transformers/datasets/evaluate are imported."""

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs two workers on the machine's cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from . import faults_harness  # noqa: E402
from .helpers import CIFAR10, PYTHON, REPO, check_ok, run, subprocess_env, tiny_run_args  # noqa: E402,F401

# `make test`'s two workers take whole files in the order collected (--dist loadfile --no-loadscope-reorder): the
# slowest files first, so that the two end together (one taken last would leave the other worker idle), then the rest
# in name order. Ordered by the seconds each file took under `make test` (2 cores); a stale list only costs time.
SLOWEST_FIRST = ["test_preemption.py", "test_multinode.py", "test_train_e2e.py", "test_write_failures.py",
                 "test_demo.py", "test_sweep.py", "test_export.py", "test_resume_sigkill.py",
                 "test_damaged_checkpoints.py", "test_validate_predict.py", "test_storage.py", "test_structure.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: name order within a rank


@pytest.fixture(scope="session")
def cifar10_path() -> Path:
    """The local copy of uoft-cs/cifar10 (Hub layout); tests use slices of it."""
    if not CIFAR10.is_dir():
        pytest.fail(f"local CIFAR-10 not found at {CIFAR10} (expected ../shared/datasets/cifar10 beside the repo)")
    return CIFAR10


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def shared_run(tmp_path_factory, name: str, build, output: str = "out"):
    """A finished run that only gets read, made once per session: under `make test`'s two workers by whichever asks
    first, while the other waits on a lock and then reads the same folder. `build(folder)` makes it (the run's
    output_dir: folder/`output`, yielded); the digest of its files, taken then, is checked again when each worker's
    session ends, so a test that writes into a shared run fails (it would change what other tests, perhaps on the
    other worker, read)."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the folder every worker's basetemp is in
    folder, done = root / name, root / f"{name}.digest"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when build() fails
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            folder.mkdir()
            build(folder)
            done.write_text(_tree_digest(folder))
    yield folder / output
    assert _tree_digest(folder) == done.read_text(), f"a test changed the shared run {folder}: copy it first"


@pytest.fixture(scope="session")
def python_run(tmp_path_factory, cifar10_path) -> Path:
    """The tiny run, once per session, for every test that only reads a finished run: `python train.py`, one
    process, global batch 16, 4 steps (helpers.tiny_run_args); its stderr is kept beside the output folder."""

    def build(root: Path):
        proc = check_ok(run([PYTHON, "train.py", *tiny_run_args(cifar10_path, root / "out")]))
        (root / "stderr.txt").write_text(proc.stderr)

    yield from shared_run(tmp_path_factory, "python_run", build)


# ----------------------------------------------------------------------------------------------- the fault tests' runs
# Session-wide: several test files compare against the same uninterrupted reference runs (faults_harness).


def _reference_run(tmp_path_factory, cifar10_path, name: str, *layers: dict):
    def build(root: Path):
        h = faults_harness
        h.finished(h.train_run(h.write_config(root, cifar10_path, *layers), root / "out"))

    yield from shared_run(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def every_step_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference: a checkpoint after each of the 10 steps."""
    yield from _reference_run(tmp_path_factory, cifar10_path, "every_step", faults_harness.EVERY_STEP)


@pytest.fixture(scope="session")
def best_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with load_best_model_at_end (checkpoints and evaluations at steps 5, 10)."""
    yield from _reference_run(tmp_path_factory, cifar10_path, "best", faults_harness.BEST_AT_END)


@pytest.fixture(scope="session")
def ema_run(tmp_path_factory, cifar10_path) -> Path:
    """The uninterrupted reference with training.ema_decay: a checkpoint after each of the 10 steps."""
    yield from _reference_run(tmp_path_factory, cifar10_path, "ema", faults_harness.EVERY_STEP, faults_harness.EMA)


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
