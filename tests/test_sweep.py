"""bench/sweep.py: every committed sweep file runs at tiny size on the CPU (a device's minutes are never spent on a
variant that crashes), its outputs hold what the issue asks, and a failing variant is recorded without stopping
the others. bench/steps.py's bare loop (the Trainer's yardstick) learns."""

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from .helpers import PNG_MAGIC, REPO, TINY

sys.path.insert(0, str(REPO / "bench"))
from steps import bare_train, evaluate  # noqa: E402

SWEEPS = sorted((REPO / "bench" / "sweeps").glob("*.json"))


def sweep(path: Path, out_dir: Path, cifar10_path: Path, capsys) -> tuple[int, str]:
    """`bench/sweep.py PATH --tiny` in this process, on one thread: (exit status, what it printed)."""
    import sweep as sweep_module

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = sweep_module.main([str(path), "--tiny", "--dataset", str(cifar10_path), "--out-dir", str(out_dir)])
    finally:
        torch.set_num_threads(threads)
    return status, capsys.readouterr().out


@pytest.fixture
def variant_folders(monkeypatch) -> list[list[str]]:
    """What each variant's temporary output folder holds when the sweep deletes it, in order."""
    import sweep as sweep_module

    held = []

    class Recorded(tempfile.TemporaryDirectory):
        def __exit__(self, *exc):
            held.append(sorted(p.name for p in Path(self.name).iterdir()))
            return super().__exit__(*exc)

    monkeypatch.setattr(sweep_module.tempfile, "TemporaryDirectory", Recorded)
    return held


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_committed_sweep_runs_tiny(tmp_path, cifar10_path, path, capsys, variant_folders):
    assert SWEEPS, "bench/sweeps/ holds no sweep"
    status, out = sweep(path, tmp_path, cifar10_path, capsys)
    assert status == 0
    report = json.loads((tmp_path / "sweep.json").read_text())
    names = [v["name"] for v in json.loads(path.read_text())["variants"]]
    assert [row["name"] for row in report["variants"]] == names and report["tiny"] is True
    # A variant's folder is thrown away: it gets no model, figures or card (only its config, as every run does).
    assert variant_folders == [["experiment.json"] if row["path"] == "trainer" else [] for row in report["variants"]]
    for row in report["variants"]:
        assert "error" not in row, row
        for key in ("test_accuracy", "eval_accuracy", "train_clean_accuracy"):
            assert 0.0 <= row[key] <= 1.0, (row["name"], key)
        assert row["train_final_loss"] > 0 and row["epochs"] == 2 and not row["schedule_cut"]
        assert row["curve"] and all(0.0 <= acc <= 1.0 for _, _, acc in row["curve"])
        if row["path"] == "trainer":  # an evaluation every epoch (tiny keeps the config's eval strategy)
            assert [step for _, step, _ in row["curve"]] == [4, 8]
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    assert "| variant | path | test |" in out


def test_failing_variant_is_recorded_and_the_sweep_goes_on(tmp_path, cifar10_path, capsys):
    spec = {"config": "configs/cifar10_cpu.json", "budget_minutes": 2,
            "variants": [{"name": "typo", "set": {"training.learnig_rate": 0.1}},
                         {"name": "good", "set": {"dataset.augmentation.policy": "autoaugment"}}]}
    path = tmp_path / "sweep_spec.json"
    path.write_text(json.dumps(spec))
    status, _ = sweep(path, tmp_path / "out", cifar10_path, capsys)
    assert status == 1
    typo, good = json.loads((tmp_path / "out" / "sweep.json").read_text())["variants"]
    assert "unknown key training.learnig_rate" in typo["error"]
    assert "error" not in good and 0.0 <= good["test_accuracy"] <= 1.0


@pytest.mark.parametrize("spec, message", [
    ({"config": "configs/cifar10_cpu.json", "budget_minutes": 1, "variants": []}, "no variants"),
    ({"config": "configs/cifar10_cpu.json", "variants": [{"name": "a"}]}, "no budget_minutes"),
    ({"config": "configs/cifar10_cpu.json", "budget_minutes": 1, "variants": [{"name": "a"}, {"name": "a"}]},
     "unique name"),
    ({"config": "configs/cifar10_cpu.json", "budget_minutes": 1, "variants": [{"name": "a", "path": "fast"}]},
     "path must be one of"),
    ({"config": "configs/cifar10_cpu.json", "budget": 1, "variants": [{"name": "a"}]}, "unknown key 'budget'"),
])
def test_bad_sweep_files_are_refused_before_any_work(tmp_path, spec, message):
    import sweep as sweep_module

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SystemExit, match=message):
        sweep_module.main([str(path), "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bare_loop_learns_and_counts_steps_as_the_trainer(cifar10_path):
    """The yardstick must itself train: 3 epochs of a small model on 512 images beat chance on those images, and
    it runs exactly the Trainer's number of steps (ceil(epochs x full batches))."""
    from vit_scratch.augment import BatchAugment
    from vit_scratch.config.schema import build_experiment
    from vit_scratch.data import load_image_data
    from vit_scratch.training.run import planned_steps

    experiment = build_experiment({
        "dataset": {"name": str(cifar10_path), "validation_size": 64, "max_train_samples": 512,
                    "max_test_samples": 64},
        # wider than helpers.TINY: it must reach > 20% training accuracy in 20 steps
        "model": {**TINY, "hidden_size": 48, "intermediate_size": 96},
        "training": {"output_dir": "unused", "num_train_epochs": 2.5, "per_device_train_batch_size": 64,
                     "learning_rate": 3e-3, "logging_steps": 5, "use_cpu": True, "seed": 0}})
    data = load_image_data(experiment.dataset, 32, 3)
    assert planned_steps(experiment.training, len(data.train)) == (8, 20)  # ceil(2.5 x 8)
    torch.manual_seed(0)
    model, info = bare_train(experiment, data, "cpu")
    assert info["steps"] == 20 and 0 < info["final_loss"] < 2.3
    augment = BatchAugment(experiment.dataset.augmentation, data.mean, data.std, 10)
    assert evaluate(model, augment, data.train, 256, bf16=False)["accuracy"] > 0.2
    stopped, info = bare_train(experiment, data, "cpu", should_stop=lambda: True)
    assert info["steps"] == 1  # a budget that is already over still runs one step, then stops


def test_readme_results_table_is_what_time_to_accuracy_writes():
    """The README's results table is bench/results.json rendered by time_to_accuracy.py, never edited by hand."""
    import time_to_accuracy

    rows = json.loads(time_to_accuracy.RESULTS.read_text())
    assert time_to_accuracy.readme_table(rows) in (REPO / "README.md").read_text()


def test_best_of_starts_from_the_earlier_variant_with_the_best_validation_accuracy():
    import sweep as sweep_module

    rows = [{"name": "a", "set": {"training.learning_rate": 0.001, "model.hidden_size": 64}, "eval_accuracy": 0.5},
            {"name": "b", "set": {"training.learning_rate": 0.002}, "eval_accuracy": 0.6, "test_accuracy": 0.1},
            {"name": "c", "set": {}, "error": "RuntimeError: boom"}]
    variant = {"name": "best + EMA", "best_of": ["a", "b", "c"], "set": {"training.ema_decay": 0.999}}
    resolved = sweep_module.resolve_best_of(variant, rows)
    assert resolved["base"] == "b"
    assert resolved["set"] == {"training.learning_rate": 0.002, "training.ema_decay": 0.999}
    with pytest.raises(RuntimeError, match="none of them finished"):
        sweep_module.resolve_best_of({"name": "x", "best_of": ["c"]}, rows)


def test_winner_writes_the_best_variant_with_epochs_sized_to_the_budget(tmp_path, monkeypatch):
    """bench/winner.py on a sweep.json as a device would return it: the highest validation accuracy wins (not the
    highest test accuracy), and its epochs fill the budget left after start-up and final evaluations."""
    import winner

    monkeypatch.chdir(REPO)
    sweep_file = REPO / "bench" / "sweeps" / "gpu_visit.json"
    names = [v["name"] for v in json.loads(sweep_file.read_text())["variants"]]
    # First variant: imports/decode/compile 40 s, then 1.0 s per epoch; second (the winner): compile 20 s, 0.8 s/epoch.
    rows = [{"name": names[0], "path": "trainer", "set": {"training.learning_rate": 0.001}, "eval_accuracy": 0.80,
             "test_accuracy": 0.85, "wall_seconds": 95.0, "curve": [[41.0 + i, 97 * (i + 1), 0.5] for i in range(50)]},
            {"name": names[1], "path": "trainer", "set": {"training.learning_rate": 0.002, "model.hidden_size": 256,
                                                          "model.intermediate_size": 512,
                                                          "model.num_attention_heads": 4},
             "eval_accuracy": 0.82, "test_accuracy": 0.81, "wall_seconds": 70.0,
             "curve": [[20.8 + 0.8 * i, 97 * (i + 1), 0.5] for i in range(50)]},
            {"name": names[2], "path": "trainer", "error": "RuntimeError: boom", "set": {}}]
    report = {"sweep": str(sweep_file.relative_to(REPO)), "hardware": "NVIDIA H200", "variants": rows}
    (tmp_path / "sweep.json").write_text(json.dumps(report))
    out = tmp_path / "cifar10_fast.json"
    assert winner.main([str(tmp_path / "sweep.json"), "--budget-minutes", "5", "--into", str(out)]) == 0
    config = json.loads(out.read_text())
    # start-up 40 s + the winner's compilation 20 s, tail 70 - 60 = 10 s: 0.95 * (300 - 15 - 60 - 10) / 0.8
    assert config["training"]["num_train_epochs"] == 255
    assert config["training"]["learning_rate"] == 0.002 and config["model"]["hidden_size"] == 256
    assert config["dataset"]["augmentation"]["policy"] == "autoaugment"  # the sweep's own set
    assert config["training"]["logging_steps"] == 50  # the sweep's bookkeeping stays out of the recipe
    assert config["training"]["bf16"] is True and config["training"]["torch_compile_mode"] == "reduce-overhead"
