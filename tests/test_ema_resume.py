"""The average of the weights (training.ema_decay) in checkpoints and the saved model, exact after SIGKILL and
--resume, and a resume with another EMA setting refused. (The average's maths: test_ema.py.)"""

import random
import shutil
import signal
import time

import pytest
import torch

from .faults_harness import (
    EMA,
    EVERY_STEP,
    MAX_STEPS,
    TRAINING_WEIGHTS,
    assert_same_run,
    assert_same_weights,
    checkpoints,
    finished,
    main_in_process,
    model_metrics,
    step_logs,
    step_seconds,
    train_run,
    wait_for,
    weights,
    write_config,
)


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


def test_sigkill_then_resume_with_ema_gives_the_uninterrupted_run(ema_run, tmp_path, cifar10_path, faults_seed):
    """Killed a random 0-0.6 step times after checkpoint-6 appears, resumed: every checkpoint (the average and the
    training weights), the final weights, metrics and each step's numbers equal the uninterrupted run's."""
    step_time = step_seconds(ema_run)
    config = write_config(tmp_path, cifar10_path, EVERY_STEP, EMA)
    out = tmp_path / "out"
    run = train_run(config, out, name="killed")
    wait_for(lambda: (out / "checkpoint-6").exists(), run, "checkpoint-6")
    time.sleep(random.Random(faults_seed).uniform(0, 0.6) * step_time)
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, run.text()[-4000:]
    print(f"FAULTS_SEED={faults_seed}: killed after {checkpoints(out)[-1]}")
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
