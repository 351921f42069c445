"""Several machines, as a multi-node GPU cluster launches them, on localhost: two `accelerate launch --num_machines 2
--machine_rank 0|1 --main_process_ip 127.0.0.1` launchers, one process each, started at the same time from
configs/accelerate/multi_node.yaml (the file users copy) with its values overridden on the command line.

That file's `distributed_type: MULTI_GPU` is what makes this work without a GPU too: it selects torchrun's launcher
(static rendezvous on the main machine's port, gloo on CPU; train.py sets training.use_cpu). `--cpu` or a
`distributed_type: MULTI_CPU` config select accelerate's simple launcher instead, whose single process per machine
never joins the others without mpirun: each trains alone (world_size 1) into the same output_dir.

Both "machines" share one output_dir, as on most clusters; only the global main process writes it
(save_on_each_node is False), so rank 1, which is its machine's local rank 0, must write nothing there but its
checkpoints' rng_state_1.pth. Each launcher gets its own working directory, which must stay empty.
"""

import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from .helpers import (
    ACCELERATE,
    GLOBAL_BATCH,
    REPO,
    STEPS,
    TIMEOUT,
    TRAIN_IMAGES,
    assert_png,
    free_port,
    log_history,
    read_json,
    subprocess_env,
    tiny_run_args,
    train_in_process,
)

pytestmark = pytest.mark.slow  # two machines' launchers; `make test` runs it, `-m 'not slow'` skips it
MULTI_NODE = str(REPO / "configs" / "accelerate" / "multi_node.yaml")
MACHINES = 2  # one process each
TRACE_SCRIPT = REPO / "tests" / "trace_batches.py"
EPOCHS = 2
LAST = EPOCHS * STEPS  # 8 steps of 2 x 8 images, a checkpoint (and an evaluation) after each epoch
CHECKPOINTS = [f"checkpoint-{step}" for step in range(STEPS, LAST + 1, STEPS)]  # save_total_limit 2 keeps both
# Two epochs; the splits' lengths (32 validation and test images, 64 training) tell the training batches apart in
# the traces. With an average of the weights, every process keeps its own and evaluates its shard of the validation
# set with it: batches of 16, so each process evaluates 16 real images (never only padding).
COMMON = ["--training.max_steps", str(LAST), "--dataset.max_eval_samples", "32", "--dataset.max_test_samples", "32"]
EMA = ["--training.ema_decay", "0.5", "--training.per_device_eval_batch_size", "16"]


def launch_machine(rank: int, port: int, root: Path, run_args: list[str], script: Path = REPO / "train.py",
                   **env) -> subprocess.Popen:
    """What each machine of a cluster runs, with its own --machine_rank (the yaml's other values overridden), in
    its own working directory root/machineR; its output goes to root/machineR.log."""
    cmd = [ACCELERATE, "launch", "--config_file", MULTI_NODE, "--num_machines", str(MACHINES),
           "--num_processes", str(MACHINES), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), str(script), *run_args]
    (root / f"machine{rank}").mkdir()
    with (root / f"machine{rank}.log").open("w") as log:  # a file, not a pipe: nothing blocks while waiting
        return subprocess.Popen(cmd, cwd=root / f"machine{rank}", env=subprocess_env(**env), stdout=log,
                                stderr=subprocess.STDOUT, text=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """The launcher, torchrun's agent and its worker (which torchrun starts in a session of its own), by pid."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def run_machines(root: Path, run_args: list[str], **launch) -> None:
    """Start both machines' launchers at once and wait for both; the first failure (or the timeout) kills the
    other, which would otherwise wait in the rendezvous or a collective (gloo's timeout is 30 minutes)."""
    port, procs = free_port(), []
    try:
        for rank in range(MACHINES):
            procs.append(launch_machine(rank, port, root, run_args, **launch))
        deadline = time.monotonic() + TIMEOUT
        while None in (codes := [p.poll() for p in procs]):  # every one polled, every time
            if any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p)
    codes = [p.returncode for p in procs]
    if codes != [0] * MACHINES:
        tails = "".join(f"\n--- machine {rank} (exit {code})\n{(root / f'machine{rank}.log').read_text()[-6000:]}"
                        for rank, code in enumerate(codes))
        pytest.fail(f"exit codes {codes} (negative: killed; timeout {TIMEOUT} s){tails}")


def training_batches(trace: Path, batch: int) -> dict[int, list[list[int]]]:
    """Each process's reads of the training split (64 images) in full per-device training batches (evaluation reads
    in batches of 16 or more: the fit diagnosis after training reads the same 64 images again)."""
    return {rank: [line["rows"] for line in map(json.loads, path.read_text().splitlines())
                   if line["n"] == TRAIN_IMAGES and len(line["rows"]) == batch]
            for rank, path in enumerate(sorted(trace.glob("rank*.jsonl")))}


def traced_machines(root: Path, run_args: list[str]) -> dict[int, list[list[int]]]:
    """Both machines run tests/trace_batches.py (train.py, every dataset read written down) -> each process's
    training batches."""
    (root / "trace").mkdir()
    run_machines(root, [*run_args, *COMMON, *EMA], script=TRACE_SCRIPT, VIT_SCRATCH_TRACE=str(root / "trace"))
    return training_batches(root / "trace", GLOBAL_BATCH // MACHINES)


@pytest.fixture(scope="module")
def one_process_batches(tmp_path_factory, cifar10_path) -> list[list[int]]:
    """The reference: one process (this one), images in host memory, the same global batch: its training batches."""
    from .trace_batches import trace_datasets

    root = tmp_path_factory.mktemp("one_process")
    (root / "trace").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIT_SCRATCH_TRACE", str(root / "trace"))
        patch.delenv("RANK", raising=False)
        trace_datasets(patch.setattr)
        assert train_in_process([*tiny_run_args(cifar10_path, root / "out"), *COMMON, "--dataset.storage", "host"]) == 0
    return training_batches(root / "trace", GLOBAL_BATCH)[0]


@pytest.fixture(scope="module")
def multi_node_run(tmp_path_factory, cifar10_path) -> tuple[Path, Path, dict]:
    """Two machines x 1 process x 8 images = global batch 16, images on the device, into one shared output_dir ->
    (that output_dir, the launchers' folder, each process's training batches)."""
    root = tmp_path_factory.mktemp("multi_node")
    output_dir = root / "shared" / "out"
    args = tiny_run_args(cifar10_path, output_dir, per_device_batch=GLOBAL_BATCH // MACHINES)
    batches = traced_machines(root, [*args, "--dataset.storage", "device"])
    return output_dir, root, batches


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory, cifar10_path) -> tuple[Path, dict]:
    """The same training with a relative output_dir (so each machine writes onto its own disk: its working
    directory) and images decoded by a worker per process -> (the launchers' folder, each process's training
    batches). Not a supported set-up, only a probe: with load_best_model_at_end every process reloads the best
    checkpoint from its own view of output_dir, which machine 1's disk lacks (it would evaluate and test other weights
    than machine 0: the Trainer only warns), so it is off here."""
    root = tmp_path_factory.mktemp("relative")
    args = tiny_run_args(cifar10_path, "out", per_device_batch=GLOBAL_BATCH // MACHINES)
    batches = traced_machines(root, [*args, "--training.load_best_model_at_end", "false", "--dataset.storage", "stream",
                                     "--training.dataloader_num_workers", "1"])
    return root, batches


def best_step(out: Path) -> int:
    return read_json(out / "trainer_state.json")["best_global_step"]


def test_two_machines_train_one_data_parallel_run(multi_node_run):
    out, root, _ = multi_node_run
    results = read_json(out / "all_results.json")
    assert results["world_size"] == MACHINES
    # One run over both machines: 64 images / (2 x 8) = 4 steps per epoch, each step logged once.
    history = log_history(out)
    losses = [e for e in history if "loss" in e]
    assert [e["step"] for e in losses] == list(range(1, LAST + 1))
    assert losses[0]["epoch"] == pytest.approx(1 / STEPS)
    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == LAST and state["train_batch_size"] == GLOBAL_BATCH // MACHINES  # per process
    assert read_json(out / "experiment.json")["training"]["per_device_train_batch_size"] == GLOBAL_BATCH // MACHINES
    for rank in range(MACHINES):
        assert "Traceback" not in (root / f"machine{rank}.log").read_text(), rank


def test_every_machine_evaluates_with_the_average(multi_node_run):
    """The validation loss logged during training at the best checkpoint (each process evaluating its half with its
    own average swapped in) equals the one after training, when every process holds that checkpoint's
    model.safetensors, the average. A process evaluating with its training weights instead would change the first."""
    out, _, _ = multi_node_run
    best = best_step(out)
    during = [e["eval_loss"] for e in log_history(out) if "eval_loss" in e and e["step"] == best][0]
    assert during == read_json(out / "all_results.json")["eval_loss"]
    average, trained = load_file(out / "model.safetensors"), load_file(out / f"checkpoint-{best}" /
                                                                       "training_weights.safetensors")
    assert max((average[k] - trained[k]).abs().max() for k in average) > 1e-4


def test_the_shared_output_folder_is_written_once(multi_node_run):
    out, root, _ = multi_node_run
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [f for f in files if f.endswith(".safetensors")] == [
        *(f"{c}/{name}.safetensors" for c in CHECKPOINTS for name in ("model", "training_weights")),
        "model.safetensors"]
    assert [f for f in files if f.endswith("all_results.json")] == ["all_results.json"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == CHECKPOINTS
    # Each process saves its own RNG state into each checkpoint (the one file rank 1 writes): resuming needs both.
    assert [f for f in files if "rng_state" in f] == [f"{c}/rng_state_{r}.pth" for c in CHECKPOINTS
                                                      for r in range(MACHINES)]
    # No temp files (atomic writes: `.NAME.*.tmp`) or other leftovers of two writers.
    assert not [f for f in files if f.endswith(".tmp") or Path(f).name.startswith(".")], files
    # Complete, readable files: the JSON parses, the weights load, the plots are PNGs.
    for f in files:
        if f.endswith(".json"):
            read_json(out / f)
    final = load_file(out / "model.safetensors")
    best = load_file(out / f"checkpoint-{best_step(out)}" / "model.safetensors")
    assert final.keys() == best.keys()
    for name in final:  # the final model is the best checkpoint's (load_best_model_at_end)
        assert torch.equal(final[name], best[name]), name
    for png in ("training_curves.png", "confusion_matrix.png", "augmentation_preview.png"):
        assert_png(out / png)
    for rank in range(MACHINES):
        assert not any((root / f"machine{rank}").iterdir()), f"machine {rank} wrote into its working directory"


def test_the_second_machine_writes_only_its_rng_state(multi_node_run, relative_run):
    """What each machine writes, made visible (the relative run): machine 1's process is its machine's local process
    0, and must still not write the model, results, card or plots (a write guarded by `is_local_main_process`
    instead of `is_world_process_zero` would)."""
    root, _ = relative_run
    written = [sorted(p.relative_to(root / f"machine{rank}").as_posix()
                      for p in (root / f"machine{rank}").rglob("*") if p.is_file()) for rank in range(MACHINES)]
    assert written[1] == [f"out/{c}/rng_state_1.pth" for c in CHECKPOINTS]
    assert {"out/model.safetensors", "out/all_results.json", f"out/checkpoint-{LAST}/rng_state_0.pth",
            f"out/checkpoint-{LAST}/model.safetensors"} <= set(written[0])
    # The same training as the shared run's (another storage, the same numbers): its final model (without
    # load_best_model_at_end, the average at the last step) is the shared run's last checkpoint's.
    probe, shared = load_file(root / "machine0" / "out" / "model.safetensors"), load_file(
        multi_node_run[0] / f"checkpoint-{LAST}" / "model.safetensors")
    assert probe.keys() == shared.keys()
    for name in shared:
        assert torch.equal(probe[name], shared[name]), name


@pytest.mark.parametrize("storage", ["device", "stream"])
def test_every_training_image_once_per_epoch_across_machines(storage, multi_node_run, relative_run,
                                                             one_process_batches):
    """Two machines x 1 process, 2 epochs (8 steps of 2 x 8 images), images on the device (the shared run) or
    decoded by a worker per process (the relative run): the batches the processes read (traced by
    tests/trace_batches.py, which runs train.py) together hold each of the 64 training images exactly once per
    epoch, the two processes' k-th batches are disjoint, and both read the same global batches step by step as one
    process holding the images in host memory (the same seeded sampler; device and host storage differ only in
    where the images are held, not in which are read)."""
    ranks = multi_node_run[2] if storage == "device" else relative_run[1]
    assert sorted(ranks) == list(range(MACHINES)) and [len(b) for b in ranks.values()] == [LAST] * MACHINES
    for epoch in range(EPOCHS):
        steps = range(epoch * STEPS, (epoch + 1) * STEPS)
        seen = sorted(row for rank in ranks.values() for step in steps for row in rank[step])
        assert seen == list(range(TRAIN_IMAGES)), epoch  # each image once: none missing, none twice
    for step in range(LAST):
        assert len(ranks[0][step]) == len(ranks[1][step]) == GLOBAL_BATCH // MACHINES
        global_batch = sorted(ranks[0][step] + ranks[1][step])
        assert global_batch == sorted(one_process_batches[step]), step  # the single process's k-th batch
