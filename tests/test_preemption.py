"""SIGTERM (a preempted job): the step finishes, a checkpoint of it is saved, the process exits 143 without a
finished run's files, and --resume ends exact; in every storage and under a two-process accelerate launch."""

import json
import re
import signal
import subprocess
import time

import pytest

from .faults_harness import (
    BEST_AT_END,
    EVERY_STEP,
    FINAL_FILES,
    MAX_STEPS,
    STORAGE_ARGS,
    TIMEOUT,
    assert_same_run,
    checkpoints,
    finished,
    train_run,
    wait_for,
    write_config,
)
from .helpers import ACCELERATE, CPU_2PROC, REPO, free_port, subprocess_env


@pytest.mark.parametrize("storage", ["device", "host", "stream"])
def test_sigterm_checkpoints_exits_143_without_finishing_and_resume_is_exact(best_run, tmp_path, cifar10_path,
                                                                            storage):
    """SIGTERM in step 2 or later: the step finishes, a checkpoint of it is saved (not a periodic one: those come
    every 5 steps), the process exits 143 within seconds and writes none of a finished run's files; `--resume` (in a
    forkserver child) ends exactly like the uninterrupted run, best model included. In every storage (stream: its
    decode worker must not keep the process alive), against the device run. The device run is a plain
    `python train.py` (so both ways of starting a run must give the same numbers); host and stream are forkserver
    children, real processes too, without a fresh interpreter's imports."""
    config = write_config(tmp_path, cifar10_path, BEST_AT_END)
    out = tmp_path / "out"
    run = train_run(config, out, *STORAGE_ARGS[storage], name="terminated",
                    plain=storage == "device")
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
