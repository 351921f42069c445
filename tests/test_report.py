"""reporting/ (figures, card), metrics.confusion_matrix and atomic.py: PNG figures, confusion matrix, model card (Hub
metadata, results table, recipe, usage), atomic JSON."""

import json
import re

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from modeling_vit_scratch.configuration_vit_scratch import ViTScratchConfig
from vit_scratch import atomic
from vit_scratch.atomic import write_json
from vit_scratch.augment import BatchAugment
from vit_scratch.config.schema import TRAINING_DEFAULTS, AugmentArguments, build_experiment
from vit_scratch.metrics import confusion_matrix
from vit_scratch.reporting import figures as report
from vit_scratch.reporting.card import HELD_OUT_SPLIT, device_name, effective_config, write_model_card
from vit_scratch.reporting.figures import plot_augmentation_preview, plot_confusion_matrix, plot_training_curves

from . import helpers
from .helpers import CIFAR10_CLASSES

CLASSES = CIFAR10_CLASSES


def assert_png(path, size=None):
    return helpers.assert_png(path, size, min_bytes=5000)


# ----------------------------------------------------------------------------------------------- training curves

EVALS = {50: 0.35, 100: 0.45, 150: 0.44, 200: 0.42}  # the best checkpoint is step 100's


def log_history(logging_steps=10) -> list[dict]:
    """What `trainer.state.log_history` holds after run.py's train() and evaluate(), shaped as Trainer logs it."""
    history = [{"loss": 2.3 * 0.99**step, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": step / 100, "step": step}
               for step in range(logging_steps, 201, logging_steps)]
    history += [{"eval_accuracy": accuracy, "eval_loss": 2.0 - step / 500, "eval_runtime": 1.0, "epoch": step / 100,
                 "step": step} for step, accuracy in EVALS.items()]
    history.sort(key=lambda e: e["step"])  # stable: at a step, the loss comes before the evaluation
    history.append({"train_runtime": 60.0, "train_samples_per_second": 100.0, "train_steps_per_second": 3.3,
                    "total_flos": 1e12, "train_loss": 1.5, "epoch": 2.0, "step": 200})  # the run summary
    history.append({"eval_accuracy": 0.45, "eval_loss": 1.8, "eval_runtime": 1.0, "epoch": 2.0, "step": 200})
    return history


def lines(ax) -> dict[str, list[tuple]]:
    """label -> the (x, y) points of each line drawn on `ax`."""
    return {line.get_label(): list(zip(line.get_xdata(), line.get_ydata(), strict=True)) for line in ax.lines}


def test_training_curves_png(tmp_path):
    path = tmp_path / "training_curves.png"
    plot_training_curves(log_history(), path)
    assert_png(path, (1000, 400))
    empty = tmp_path / "empty" / "curves.png"  # nothing logged yet: still a figure, and the folder is made
    fig = plot_training_curves([], str(empty))
    assert_png(empty, (1000, 400))
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["no data logged"] * 2


@pytest.mark.parametrize("history", [
    log_history(),  # as run.py plots it: trainer.evaluate() logged the final model after the run summary
    log_history()[:-2] + log_history()[-1:],  # the re-evaluation at the last evaluated step, and no summary
], ids=["after_the_summary", "same_step"])
def test_curves_draw_the_re_evaluation_apart(tmp_path, history):
    """The best checkpoint (step 100: 0.45), evaluated again at step 200, is no point of the validation curve."""
    _, acc_ax = plot_training_curves(history, tmp_path / "curves.png").axes
    assert lines(acc_ax) == {"during training": list(EVALS.items()), "final model, re-evaluated": [(200, 0.45)]}


def test_curves_mark_the_final_models_training_accuracy(tmp_path):
    """run.py's fit diagnosis (logged after the summary, before the re-evaluation) is one marker beside the curve."""
    history = log_history()
    history.insert(-1, {"train_clean_accuracy": 0.9, "train_clean_loss": 0.3, "epoch": 2.0, "step": 200})
    _, acc_ax = plot_training_curves(history, tmp_path / "curves.png").axes
    assert lines(acc_ax) == {"during training": list(EVALS.items()), "final model, re-evaluated": [(200, 0.45)],
                             "final model on training images\n(un-augmented)": [(200, 0.9)]}


def test_curves_before_the_re_evaluation(tmp_path):
    """Plotted before trainer.evaluate() (no re-evaluation logged yet): the curve alone, no marker."""
    _, acc_ax = plot_training_curves(log_history()[:-1], tmp_path / "curves.png").axes
    assert lines(acc_ax) == {"during training": list(EVALS.items())}


@pytest.mark.parametrize("logging_steps", [500, 200])  # no loss logged, and one
def test_loss_panel_falls_back_to_the_run_mean(tmp_path, logging_steps):
    """logging_steps longer than the run: the loss panel shows the summary's train_loss, and its legend says so."""
    loss_ax, _ = plot_training_curves(log_history(logging_steps), tmp_path / "curves.png").axes
    ((label, points),) = lines(loss_ax).items()
    assert points == [(200, 1.5)] and label.startswith("mean training loss of the run")
    assert loss_ax.get_legend() is not None and not loss_ax.texts  # no "no data logged"


def test_loss_panel_draws_the_logged_losses(tmp_path):
    loss_ax, _ = plot_training_curves(log_history(), tmp_path / "curves.png").axes
    assert [step for step, _ in lines(loss_ax)["training loss"]] == list(range(10, 201, 10))


# ----------------------------------------------------------------------------------------------- confusion matrix

def test_confusion_matrix_by_hand():
    predictions = [0, 1, 2, 2, 1, 0, 2]
    references = [0, 1, 1, 2, 2, 2, 2]
    matrix = confusion_matrix(predictions, references, num_classes=4)
    expected = [[1, 0, 0, 0],  # true 0: predicted 0
                [0, 1, 1, 0],  # true 1: predicted 1, 2
                [1, 1, 2, 0],  # true 2: predicted 0, 1, 2, 2
                [0, 0, 0, 0]]  # true 3: never seen
    np.testing.assert_array_equal(matrix, expected)
    assert np.issubdtype(matrix.dtype, np.integer) and matrix.sum() == len(predictions)
    assert confusion_matrix(np.array([], dtype=int), [], 2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0, 4], [0, 1], num_classes=4)
    with pytest.raises(ValueError, match="references"):
        confusion_matrix([0, 1], [0], num_classes=4)


def random_matrix(num_classes, images, seed=0):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, num_classes, size=images)
    predictions = np.where(rng.random(images) < 0.7, references, rng.integers(0, num_classes, size=images))
    return confusion_matrix(predictions, references, num_classes)


def test_confusion_matrix_png_10_classes(tmp_path):
    matrix = random_matrix(10, 1000)
    matrix[3] = 0  # a class never seen: a row of zeros, not a division by zero
    path = tmp_path / "confusion_matrix.png"
    fig = plot_confusion_matrix(matrix, CLASSES, path)
    assert_png(path, (900, 800))
    ax = fig.axes[0]
    fractions = ax.images[0].get_array()
    np.testing.assert_allclose(fractions.sum(axis=1), [1] * 3 + [0] + [1] * 6)  # rows normalised
    np.testing.assert_allclose(fractions[0], matrix[0] / matrix[0].sum())
    assert len(ax.texts) == 100 and ax.texts[0].get_text() == f"{matrix[0, 0] / matrix[0].sum():.2f}"
    assert [label.get_text() for label in ax.get_xticklabels()] == CLASSES
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(matrix, CLASSES[:3], path)


@pytest.mark.parametrize("num_classes", [100, 400])
def test_confusion_matrix_png_many_classes(tmp_path, num_classes):
    """At most 1400 px a side, no per-cell numbers; small tick labels, thinned out when they would be unreadable."""
    names = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "confusion_matrix.png"
    fig = plot_confusion_matrix(random_matrix(num_classes, 20 * num_classes), names, path)
    width, height = assert_png(path)
    assert width <= 1400 and height <= 1400
    ax = fig.axes[0]
    assert not ax.texts
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label):  # as saved: nothing pushed off the figure's edges
        assert fig.bbox.contains(*text.get_window_extent().min) and fig.bbox.contains(*text.get_window_extent().max)
    labels = ax.get_yticklabels()
    assert all(report.MIN_TICK_FONT <= label.get_fontsize() < 9 for label in labels)
    if num_classes == 100:
        assert [label.get_text() for label in labels] == names
    else:
        assert 50 < len(labels) < num_classes and labels[1].get_text() != names[1]


# ----------------------------------------------------------------------------------------------- model card

CONFIG = {"dataset": {"name": "uoft-cs/cifar10", "validation_size": 5000, "augmentation": {"mixup_alpha": 0.8}},
          "model": {"hidden_size": 192, "num_hidden_layers": 12, "patch_size": 4},
          "training": {"learning_rate": 0.001, "num_train_epochs": 200, "bf16": True, "output_dir": "runs/vit"}}
RESULTS = {"eval_accuracy": 0.91234, "eval_top_5_accuracy": 0.99712, "eval_loss": 0.3301, "eval_runtime": 2.5,
           "eval_samples_per_second": 2000.0, "test_accuracy": 0.90567, "test_top_5_accuracy": 0.99654,
           "test_loss": 0.3412, "train_runtime": 190.2, "train_wall_seconds": 196.4, "train_loss": 0.8,
           "train_samples_per_second": 2777.7, "train_total_flos": 1.5e15, "epoch": 200.0, "world_size": 2,
           "num_parameters": 10_437_898, "seed": 0, "train_images": 45000, "eval_images": 5000, "test_images": 10000}
TABLE = [("Test accuracy (10,000 images)", "90.57%"),
         ("Test top-5 accuracy (10,000 images)", "99.65%"),
         ("Test loss", "0.3412"),
         ("Validation accuracy (5,000 images)", "91.23%"),
         ("Validation top-5 accuracy (5,000 images)", "99.71%"),
         ("Validation loss", "0.3301"),
         ("Training time", "3 min 16 s"),  # train_wall_seconds, not train_runtime
         ("Training throughput", "2,777.7 images/s"),
         ("Hardware", "NVIDIA H100 80GB HBM3, world size 2"),
         ("Parameters", "10.4 M"),
         ("Training images", "45,000"),
         ("Epochs", "200"),
         ("Seed", "0")]


def card(folder, results=RESULTS, **kwargs) -> tuple[ModelCard, str]:
    """Write a card into `folder` (or the .md file) as run.py does, `kwargs` overriding; return it parsed."""
    args = dict(model_name="vit-scratch-cifar10", results=results, config=CONFIG, dataset_name="uoft-cs/cifar10",
                class_names=CLASSES, repo_id=None, curves_png="training_curves.png",
                confusion_png="confusion_matrix.png", hardware="NVIDIA H100 80GB HBM3", config_file="experiment.json")
    write_model_card(folder, **{**args, **kwargs})
    loaded = ModelCard.load(folder if folder.suffix == ".md" else folder / "README.md")
    return loaded, loaded.text


def table(body) -> list[tuple[str, str]]:
    (rows,) = re.findall(r"\| Metric \| Value \|\n\|---\|---\|\n((?:\|.*\|\n)+)", body)
    return [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows.splitlines()]


def test_model_card_metadata_parses_back(tmp_path):
    loaded, _ = card(tmp_path / "vit-cifar10")
    assert sorted(p.name for p in (tmp_path / "vit-cifar10").iterdir()) == ["README.md"]
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.tags == ["image-classification", "vision-transformer", "vit_scratch", "custom_code"]
    assert data.datasets == ["uoft-cs/cifar10"] and data.metrics == ["accuracy"]
    assert data.model_name == "vit-scratch-cifar10"
    results = {(r.dataset_split, r.metric_type): r for r in data.eval_results}
    assert {key: r.metric_value for key, r in results.items()} == {
        ("test", "accuracy"): 0.90567, ("test", "top_5_accuracy"): 0.99654, (HELD_OUT_SPLIT, "accuracy"): 0.91234}
    for r in data.eval_results:
        assert (r.task_type, r.dataset_type, r.dataset_name) == ("image-classification", "uoft-cs/cifar10",
                                                                  "uoft-cs/cifar10")
    (test_entry, validation_entry) = data.to_dict()["model-index"][0]["results"]  # test first: the headline
    assert test_entry["dataset"]["split"] == "test" and validation_entry["dataset"]["split"] == HELD_OUT_SPLIT


def test_results_table_in_reading_order(tmp_path):
    _, body = card(tmp_path)
    assert table(body) == TABLE  # fixed order, formatted; no train_total_flos, runtimes or other raw keys
    assert "flos" not in body


def test_results_table_skips_missing_keys(tmp_path):
    results = {"test_accuracy": 0.5, "train_runtime": 7300.0, "num_parameters": 12_170, "epoch": 0.0625}
    _, body = card(tmp_path, results=results, hardware=None)
    assert table(body) == [("Test accuracy", "50.00%"), ("Training time", "2 h 1 min"), ("Parameters", "12.2 k"),
                           ("Epochs", "0.06")]


def test_card_text_figures_and_recipe(tmp_path):
    _, body = card(tmp_path)
    assert "[`uoft-cs/cifar10`](https://huggingface.co/datasets/uoft-cs/cifar10)" in body
    assert "![training curves](training_curves.png)" in body and "![confusion matrix](confusion_matrix.png)" in body
    assert "augmentation preview" not in body  # only when given
    assert "Validation images are held out of the training split" in body
    assert "max_test_samples" not in body  # the whole test split
    assert "[`experiment.json`](experiment.json)" in body
    (config_block,) = re.findall(r"```json\n(.*?)\n```", body, re.S)
    assert json.loads(config_block) == CONFIG


def test_card_says_when_the_test_split_was_cut(tmp_path):
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "max_test_samples": 500}}
    _, body = card(tmp_path, results={**RESULTS, "test_images": 500}, config=config)
    assert ("Test accuracy (500 images)", "90.57%") in table(body)
    assert "`dataset.max_test_samples=500` kept only its first 500 images" in body


@pytest.mark.parametrize("repo_id", ["someone/vit-scratch-cifar10", None])
def test_usage_snippet_loads_from_somewhere_real(tmp_path, repo_id):
    """The Hub id when there is one; else a placeholder the reader is told to replace (not the folder's name)."""
    _, body = card(tmp_path / "vit-cifar10", repo_id=repo_id)
    model = repo_id or "path/to/output_dir"
    assert f'AutoModelForImageClassification.from_pretrained("{model}", trust_remote_code=True)' in body
    assert f'AutoImageProcessor.from_pretrained("{model}")' in body
    assert f'pipeline("image-classification", model="{model}", trust_remote_code=True)' in body
    assert ("Replace `path/to/output_dir` with the folder holding this card" in body) == (repo_id is None)
    assert '"vit-cifar10"' not in body


def test_model_card_without_test_split(tmp_path):
    path = tmp_path / "card" / "README.md"
    results = {k: v for k, v in RESULTS.items() if not k.startswith("test_")}
    loaded, body = card(path, results=results, dataset_name=str(tmp_path), confusion_png=None, test_split=None)
    assert "datasets" not in loaded.data.to_dict()  # a local path is no Hub dataset id
    ((split, metric, value, dataset),) = [(r.dataset_split, r.metric_type, r.metric_value, r.dataset_name)
                                          for r in loaded.data.eval_results]
    assert (split, metric, value, dataset) == (HELD_OUT_SPLIT, "accuracy", 0.91234, tmp_path.name)
    assert [label for label, _ in table(body)][:3] == ["Validation accuracy (5,000 images)",
                                                       "Validation top-5 accuracy (5,000 images)", "Validation loss"]
    assert "Test" not in body and "confusion matrix" not in body and str(tmp_path) not in body


def test_model_card_shows_the_preview(tmp_path):
    _, body = card(tmp_path, preview_png="augmentation_preview.png")
    assert "![augmentation preview](augmentation_preview.png)" in body


def test_effective_config_is_the_recipe_as_run(tmp_path):
    """Every dataset and model field, defaults included; of TrainingArguments, the keys given, the project's
    defaults and the recipe's hyperparameters, not all of its fields."""
    given = {"dataset": {"name": "uoft-cs/cifar10", "augmentation": {"mixup_alpha": 0.8}},
             "model": {"hidden_size": 64, "num_attention_heads": 2, "num_labels": 10},
             "training": {"output_dir": str(tmp_path / "out"), "learning_rate": 0.002, "max_grad_norm": 0.5,
                          "adam_beta2": 0.98, "lr_scheduler_type": "cosine"}}
    experiment = build_experiment(given, seed=3)
    config = effective_config(experiment)
    assert config["dataset"]["validation_size"] == 5000 and config["dataset"]["augmentation"]["mixup_alpha"] == 0.8
    assert config["dataset"]["augmentation"]["policy"] == "none"  # resolved, not null
    assert config["model"]["hidden_size"] == 64 and config["model"]["patch_size"] == 4  # given, and a default
    assert config["model"]["num_labels"] == 10 and "id2label" not in config["model"]
    training = config["training"]
    assert training["learning_rate"] == 0.002 and training["adam_beta2"] == 0.98 and training["seed"] == 3
    assert training["lr_scheduler_type"] == "cosine"  # enums as their values
    assert training["optim"] == experiment.training.optim.value
    assert training["per_device_train_batch_size"] == 8 and training["weight_decay"] == 0.0  # recipe defaults
    assert set(TRAINING_DEFAULTS) <= set(training) and "adam_beta1" not in training and len(training) < 40
    json.dumps(config)  # JSON as it is
    built = ViTScratchConfig(hidden_size=48, num_attention_heads=3)  # e.g. model.pretrained's architecture
    assert effective_config(experiment, built)["model"]["hidden_size"] == 48
    assert device_name(torch.device("cpu")) == "CPU"


# ----------------------------------------------------------------------------------------------- JSON, preview


def test_write_json_atomic_round_trip(tmp_path):
    path = tmp_path / "all_results.json"
    data = {"zeta": 1, "alpha": {"b": [1, 2.5, None], "a": "x"}, "np": np.float32(0.5), "arr": np.arange(3)}
    write_json(path, data)
    text = path.read_text()
    assert json.loads(text) == {"zeta": 1, "alpha": {"b": [1, 2.5, None], "a": "x"}, "np": 0.5, "arr": [0, 1, 2]}
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert text.index('"alpha"') < text.index('"arr"') < text.index('"np"') < text.index('"zeta"')
    write_json(str(path), {"step": 2})  # overwrite in place
    assert json.loads(path.read_text()) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["all_results.json"]  # no temp file left behind


def test_write_json_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "all_results.json"
    write_json(path, {"step": 1})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError):  # fails while serialising, before any file is touched
        write_json(path, circular)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", crash)  # fails after the temp file is written
    with pytest.raises(OSError, match="disk gone"):
        write_json(path, {"step": 2})
    assert json.loads(path.read_text()) == {"step": 1}  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["all_results.json"]  # and the temp file is gone


@pytest.mark.parametrize("channels", [3, 1])
def test_augmentation_preview(tmp_path, channels):
    """A grid of 8 images x (stored + 8 augmented copies), drawn without touching the run's RNG state."""
    args = AugmentArguments(policy="randaugment", mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing_prob=0.5)
    augment = BatchAugment(args, (0.5,) * channels, (0.25,) * channels, 10, label_smoothing=0.1)
    images = torch.randint(0, 256, (100, channels, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100) % 10
    torch.manual_seed(7)
    before = torch.get_rng_state()
    path = tmp_path / "augmentation_preview.png"
    plot_augmentation_preview(augment, images, labels, CLASSES, path)
    assert torch.equal(torch.get_rng_state(), before)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (795, 640)
    again = tmp_path / "again.png"
    plot_augmentation_preview(augment, images, labels, CLASSES, again)  # seeded: the same picture
    assert again.read_bytes() == path.read_bytes()
