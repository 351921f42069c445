"""A loss that becomes NaN or inf stops the run naming the step, and no checkpoint of the diverged model is written."""


import torch

from .faults_harness import EVERY_STEP, FINAL_FILES, checkpoints, finished, train_run, weights, write_config


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
