"""report.py: PNG figures, confusion matrix, model card, atomic JSON."""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from modeling_vit_scratch.training import report
from modeling_vit_scratch.training.augment import BatchAugment
from modeling_vit_scratch.training.config import AugmentArguments
from modeling_vit_scratch.training.report import (
    confusion_matrix,
    plot_augmentation_preview,
    plot_confusion_matrix,
    plot_training_curves,
    write_json,
    write_model_card,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def assert_png(path, size):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size


def log_history() -> list[dict]:
    history = [{"loss": 2.3 * 0.99**step, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": step / 100, "step": step}
               for step in range(10, 210, 10)]
    history += [{"eval_accuracy": 0.3 + step / 1000, "eval_loss": 2.0 - step / 500, "eval_runtime": 1.0,
                 "epoch": step / 100, "step": step} for step in (50, 100, 150, 200)]
    history.append({"train_loss": 1.5, "train_runtime": 60.0, "epoch": 2.0, "step": 200})  # the run summary
    return sorted(history, key=lambda e: e["step"])


def test_training_curves_png(tmp_path):
    path = tmp_path / "training_curves.png"
    plot_training_curves(log_history(), path)
    assert_png(path, (1000, 400))
    empty = tmp_path / "empty" / "curves.png"  # nothing logged yet: still a figure, and the folder is made
    plot_training_curves([], str(empty))
    assert_png(empty, (1000, 400))


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


def test_confusion_matrix_png(tmp_path):
    rng = np.random.default_rng(0)
    references = rng.integers(0, 10, size=1000)
    predictions = np.where(rng.random(1000) < 0.7, references, rng.integers(0, 10, size=1000))
    matrix = confusion_matrix(predictions, references, 10)
    path = tmp_path / "confusion_matrix.png"
    plot_confusion_matrix(matrix, CLASSES, path)
    assert_png(path, (900, 800))
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(matrix, CLASSES[:3], path)


CONFIG = {"dataset": {"name": "uoft-cs/cifar10", "validation_size": 5000, "augmentation": {"mixup_alpha": 0.8}},
          "model": {"hidden_size": 192, "num_hidden_layers": 12, "patch_size": 4},
          "training": {"learning_rate": 0.001, "num_train_epochs": 200, "bf16": True, "output_dir": "runs/vit"}}
RESULTS = {"eval_accuracy": 0.91234, "eval_top_5_accuracy": 0.99712, "eval_loss": 0.3301, "test_accuracy": 0.90567,
           "test_top_5_accuracy": 0.99654, "test_loss": 0.3412, "train_runtime": 3600.5,
           "train_samples_per_second": 2777.7, "world_size": 1}


def read_card(path):
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "no YAML front matter"
    return yaml.safe_load(match.group(1)), text[match.end():]


@pytest.mark.parametrize("repo_id", ["someone/vit-scratch-cifar10", None])
def test_model_card(tmp_path, repo_id):
    folder = tmp_path / "vit-cifar10"
    write_model_card(folder, model_name="vit-scratch-cifar10", results=RESULTS, config=CONFIG,
                     dataset_name="uoft-cs/cifar10", class_names=CLASSES,
                     repo_id=repo_id, curves_png="training_curves.png", confusion_png="confusion_matrix.png")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]
    meta, body = read_card(folder / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == ["image-classification", "vision-transformer", "vit_scratch", "custom_code"]
    assert meta["datasets"] == ["uoft-cs/cifar10"] and meta["metrics"] == ["accuracy"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert entry["name"] == "vit-scratch-cifar10"
    assert result["task"]["type"] == "image-classification" and result["dataset"]["split"] == "test"
    assert result["metrics"] == [{"type": "accuracy", "value": 0.90567, "name": "test accuracy"}]

    assert "| Test accuracy | 0.9057 |" in body and "| Validation top-5 accuracy | 0.9971 |" in body
    assert "| world_size | 1 |" in body and "| Training images/s | 2777.7 |" in body
    assert "![training curves](training_curves.png)" in body
    assert "![confusion matrix](confusion_matrix.png)" in body
    assert "augmentation preview" not in body  # only when given
    repo = repo_id or "vit-cifar10"
    assert f'AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True)' in body
    assert f'AutoImageProcessor.from_pretrained("{repo}")' in body
    assert f'pipeline("image-classification", model="{repo}", trust_remote_code=True)' in body
    (config_block,) = re.findall(r"```json\n(.*?)\n```", body, re.S)
    assert json.loads(config_block) == CONFIG


def test_model_card_without_test_split(tmp_path):
    path = tmp_path / "card" / "README.md"
    results = {k: v for k, v in RESULTS.items() if not k.startswith("test_")}
    write_model_card(path, model_name="m", results=results, config=CONFIG, dataset_name=str(tmp_path),
                     class_names=CLASSES, repo_id=None,
                     curves_png="a.png", confusion_png="b.png")
    meta, body = read_card(path)
    assert meta["model-index"][0]["results"][0]["dataset"]["split"] == "validation"
    assert "datasets" not in meta  # a local path is no Hub dataset id
    assert "Test accuracy" not in body and 'from_pretrained("card", trust_remote_code=True)' in body


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

    monkeypatch.setattr(report.os, "replace", crash)  # fails after the temp file is written
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


def test_model_card_shows_the_preview(tmp_path):
    write_model_card(tmp_path, model_name="m", results=RESULTS, config=CONFIG, dataset_name="uoft-cs/cifar10",
                     class_names=CLASSES, repo_id=None, curves_png="a.png", confusion_png="b.png",
                     preview_png="augmentation_preview.png")
    _, body = read_card(tmp_path / "README.md")
    assert "![augmentation preview](augmentation_preview.png)" in body
