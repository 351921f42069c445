"""The training step never waits for the device, and the benchmarks that watch the step run (small sizes).

On CPU nothing ever waits, so `bench/steps.SyncTrap` uses a stand-in for CUDA's sync debug mode: inside the watched
steps, `.item()`, `.tolist()`, `.cpu()`, `.numpy()` or `bool()/int()/float()` of any tensor made there raises.
With a GPU the same test runs on CUDA under `torch.cuda.set_sync_debug_mode("error")`.
"""

import json
import sys

import pytest
import torch

from .helpers import REPO, TINY, run_as_main

sys.path.insert(0, str(REPO / "bench"))  # the benchmarks' shared step helpers
from steps import SyncError, SyncTrap, _HostReadTrap, experiment_for, random_split, trainer_seconds  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EVERYTHING_ON = {
    "dataset": {"augmentation": {"random_crop_padding": 4, "horizontal_flip": True, "policy": "randaugment",
                                 "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mix_prob": 0.5,
                                 "random_erasing_prob": 0.25}},
    # 2 layers: drop-path's rate is 0 at the first block, so one layer would leave it unexercised.
    "model": {**TINY, "num_hidden_layers": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "drop_path_rate": 0.1},
    "training": {"learning_rate": 1e-3, "lr_scheduler_type": "cosine", "warmup_steps": 2, "max_grad_norm": 1.0,
                 "label_smoothing_factor": 0.1, "logging_steps": 100, "optim": "adamw_torch", "seed": 0},
}


def run_steps(config: dict, first: int = 2, last: int = 9, batch: int = 16) -> SyncTrap:
    trap = SyncTrap(first=first, last=last, device=DEVICE)
    experiment = experiment_for(config, batch, last + 1, DEVICE)
    trainer_seconds(experiment, random_split(batch * 12), steps=last + 1 - first, warmup=first, device=DEVICE,
                    callbacks=[trap])
    return trap


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_training_steps_never_read_back_from_the_device(policy):
    config = json.loads(json.dumps(EVERYTHING_ON))
    config["dataset"]["augmentation"]["policy"] = policy
    trap = run_steps(config)
    assert trap.checked_steps == 7  # steps 3..9 ran inside the trap (sampler, batch cut, augmentation, step, callbacks)


def test_training_steps_with_an_average_of_the_weights_never_read_back_from_the_device():
    config = json.loads(json.dumps(EVERYTHING_ON))
    config["training"].update(ema_decay=0.99, ema_warmup=True)
    trap = run_steps(config)
    assert trap.checked_steps == 7


def test_the_trap_catches_a_per_step_read():
    """Negative control: transformers' own NaN filter reads the loss on every step (`torch.isnan(loss) or ...`)."""
    config = json.loads(json.dumps(EVERYTHING_ON))
    config["training"]["logging_nan_inf_filter"] = True
    with pytest.raises(Exception, match="__bool__|synchroniz"):
        run_steps(config)


def test_stand_in_flags_reads_of_new_tensors_only():
    old = torch.ones(3)
    with _HostReadTrap():
        assert old.tolist() == [1.0, 1.0, 1.0]  # made before the trap: not the step's
        new = old * 2
        for read in (lambda: new.sum().item(), lambda: bool(new[0] > 1), lambda: int(new[0]), lambda: new.tolist(),
                     lambda: new.cpu(), lambda: float(new[0]), lambda: new.numpy()):
            with pytest.raises(SyncError):
                read()
        new.add_(1)  # in-place ops make nothing new
    assert new.tolist() == [3.0, 3.0, 3.0]  # outside the trap, reading is fine


def run_bench(script: str, *args: str, tmp_path, monkeypatch) -> dict:
    """`python bench/SCRIPT.py ARGS --json OUT`, in this process (helpers.run_as_main): what it wrote."""
    out = tmp_path / f"{script}.json"
    run_as_main(f"bench/{script}.py", [*args, "--json", str(out)], monkeypatch)
    return json.loads(out.read_text())


def test_overhead_benchmark_runs(tmp_path, monkeypatch):
    # the smallest run of every part: two batch sizes (rows), one warm-up and one timed step, one repeat
    data = run_bench("overhead", "--batch-sizes", "8", "32", "--steps", "1", "--warmup", "1", "--repeats", "1",
                     tmp_path=tmp_path, monkeypatch=monkeypatch)
    assert [row["batch"] for row in data["rows"]] == [8, 32]
    for row in data["rows"]:
        assert row["bare_ms"] > 0 and row["trainer_ms"] > 0
        assert row["ratio"] == pytest.approx(row["trainer_ms"] / row["bare_ms"])


def test_gpu_report_runs_on_cpu(tmp_path, monkeypatch):
    # warm-up 3: the sync check watches its second half (one step); one timed step; batch 8
    data = run_bench("gpu_report", "--steps", "1", "--warmup", "3", "--batch-size", "8", tmp_path=tmp_path,
                     monkeypatch=monkeypatch)
    paths = [row["path"] for row in data["rows"]]
    assert paths == ["model only", "bare loop (data + augmentation)", "Trainer"]
    assert all(row["images_per_s"] > 0 and row["tflops"] >= 0 for row in data["rows"])
    summary = data["summary"][0]
    assert summary["sync_free"] is True and data["rows"][2]["sync_free_steps"] >= 1
    assert 0 < summary["trainer_over_model"] and summary["outside_model_share"] < 1
    assert data["gflop_per_image"] > 0 and (data["peak_tflops"] is None) == (DEVICE == "cpu")


def test_randomness_check_passes_at_tiny_size(tmp_path):
    """bench/gpu_checks.py: two steps fed the same batch draw different flips, crops, policy ops, erasing, mixing and
    drop-path masks (the GPU runs it compiled, under CUDA graphs; here eager on the CPU)."""
    import gpu_checks

    out = tmp_path / "checks.json"
    assert gpu_checks.main(["--config", str(REPO / "configs" / "cifar10_fast.json"), "--tiny", "--no-compile",
                            "--json", str(out)]) == 0
    checks = json.loads(out.read_text())["checks"]
    assert set(checks) == {"flip", "crop", "policy", "erasing", "mixing", "whole", "drop path"}
    assert all(row["ok"] for row in checks.values()), checks
    assert 0.3 < checks["flip"]["same_decision_share"] < 0.7 and checks["crop"]["same_offset_share"] < 0.1
    assert checks["policy"]["name"] == "randaugment" and checks["policy"]["differs_share"] > 0.8
    assert checks["mixing"]["distinct_draws_in_8_steps"] >= 3 and checks["whole"]["differs_share"] == 1.0
    assert checks["drop path"]["eval_equal"] and checks["drop path"]["train_differs_share"] > 0.05


def test_randomness_check_fails_when_a_step_repeats_its_draws(monkeypatch):
    """Negative control: the defect it looks for, made on purpose (every draw of the second step replays the first's
    random numbers), must fail every augmentation check."""
    import gpu_checks

    state = {}
    draw = gpu_checks.components

    def replaying(augment):
        inner = draw(augment)

        def repeat(images, labels):
            if "rng" not in state:
                state["rng"] = torch.get_rng_state()
            torch.set_rng_state(state["rng"])
            return inner(images, labels)
        return repeat

    monkeypatch.setattr(gpu_checks, "components", replaying)
    assert gpu_checks.main(["--config", str(REPO / "configs" / "cifar10_fast.json"), "--tiny", "--no-compile"]) == 1
