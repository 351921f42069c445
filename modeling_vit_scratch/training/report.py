"""What a finished run writes beside the model: training curves, confusion matrix, model card, JSON results.

Figures use matplotlib's object API (`matplotlib.figure.Figure`), which needs no pyplot and no GUI backend.
"""

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure

PathLike = str | os.PathLike

# Row labels of the results table, for the keys `Trainer` produces; other keys are shown as they are.
_LABELS = {"accuracy": "accuracy", "top_5_accuracy": "top-5 accuracy", "loss": "loss", "runtime": "runtime (s)",
           "samples_per_second": "images/s", "steps_per_second": "steps/s"}
_PREFIXES = {"eval_": "Validation ", "test_": "Test ", "train_": "Training "}


def plot_training_curves(log_history: list[dict], path: PathLike) -> None:
    """Training loss (left) and validation accuracy (right) against the optimizer step, from `state.log_history`."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e and "step" in e]
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, points, title, ylabel, style in ((loss_ax, train, "Training loss", "loss", "-"),
                                             (acc_ax, evals, "Validation accuracy", "accuracy", "o-")):
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, markersize=3)
        else:
            ax.text(0.5, 0.5, "no data logged", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: entry [t, p] = how many examples of true class t were predicted p."""
    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    ref = np.asarray(references, dtype=np.int64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"{pred.size} predictions but {ref.size} references")
    for name, ids in (("predictions", pred), ("references", ref)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} must be class ids in [0, {num_classes})")
    counts = np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: PathLike) -> None:
    """A heat map of `matrix` (rows: true class, columns: predicted class), each cell annotated with its count."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix {matrix.shape} does not match {n} class names")
    side = max(4.0, 0.6 * n + 2)
    fig = Figure(figsize=(side + 1, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (t, p), count in np.ndenumerate(matrix):
        ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black")
    _save(fig, path)


def plot_augmentation_preview(augment, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                              path: PathLike, rows: int = 8, copies: int = 8, batch: int = 64, seed: int = 0) -> None:
    """What the model trains on: `rows` training images, each as stored and then `copies` times augmented.

    augment: the run's `BatchAugment` (crop/flip, RandAugment/TrivialAugment, erasing, mixup/cutmix; on any device);
    images: uint8 (N, C, H, W) and labels (N,) of the training split. A seeded draw of `batch` of them is augmented
    as one training batch (mixing pairs image i with image batch-1-i, as in training). torch's RNG state is restored
    afterwards, so the preview changes nothing in the run. Pixels are shown denormalised: erased boxes show the
    mean colour.
    """
    device = augment.mean.device
    picked = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:batch]
    images, labels = images[picked], labels[picked]
    rows = min(rows, len(picked))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        draws = [augment(images.to(device), labels.to(device))[0][:rows].cpu() for _ in range(copies)]
    mean, std = augment.mean.cpu(), augment.std.cpu()
    shown = [images[:rows].float() / 255] + [(x * std + mean).clamp(0, 1) for x in draws]
    grid = torch.stack(shown, dim=1)  # (rows, 1 + copies, C, H, W)
    r, k, c, h, w = grid.shape
    gap = 2  # white lines between the images
    canvas = torch.ones(r, h + gap, k, w + gap, c)
    canvas[:, :h, :, :w] = grid.permute(0, 3, 1, 4, 2)  # (rows, H, 1 + copies, W, C)
    picture = canvas.reshape(r * (h + gap), k * (w + gap), c)[:-gap, :-gap].numpy()
    fig = Figure(figsize=(1.2 + 0.75 * k, 0.4 + 0.75 * r), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.imshow(picture[..., 0] if c == 1 else picture, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([j * (w + gap) + w / 2 for j in range(k)], ["stored"] + [str(j) for j in range(1, k)])
    ax.set_yticks([i * (h + gap) + h / 2 for i in range(r)], [class_names[int(y)] for y in labels[:rows]])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Training images as the model sees them (augmented copies)")
    _save(fig, path)


def write_model_card(path: PathLike, *, model_name: str, results: dict, config: dict, dataset_name: str,
                     class_names: list[str], repo_id: str | None, curves_png: str, confusion_png: str,
                     preview_png: str | None = None) -> None:
    """Write README.md (`path` is the file, or the model folder): Hub metadata, results, figures, config, usage."""
    path = Path(path)
    if path.suffix.lower() != ".md":
        path = path / "README.md"
    repo = repo_id or path.resolve().parent.name
    dataset = dataset_name
    on_hub = not Path(dataset).expanduser().exists()  # a local path means nothing to the Hub's metadata
    metadata = {"library_name": "transformers", "pipeline_tag": "image-classification",
                "tags": ["image-classification", "vision-transformer", "vit_scratch", "custom_code"],
                **({"datasets": [dataset]} if on_hub else {}), "metrics": ["accuracy"]}
    for split, prefix in (("test", "test_"), ("validation", "eval_")):  # the test result; validation if none
        if f"{prefix}accuracy" in results:
            metric = {"type": "accuracy", "value": float(results[f"{prefix}accuracy"]), "name": f"{split} accuracy"}
            metadata["model-index"] = [{"name": model_name, "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": dataset if on_hub else Path(dataset).name, "type": dataset if on_hub else "local",
                            "split": split},
                "metrics": [metric]}]}]
            break
    rows = "\n".join(f"| {_label(key)} | {_format(value)} |" for key, value in sorted(results.items()))
    usage = f"""```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

processor = AutoImageProcessor.from_pretrained("{repo}")
model = AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True)
inputs = processor(images=Image.open("image.png").convert("RGB"), return_tensors="pt")
print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])

classifier = pipeline("image-classification", model="{repo}", trust_remote_code=True)
print(classifier("image.png"))
```"""
    preview = ("\nThe training images after the augmentation of the configuration below (`augmentation_preview.png`, "
               f"written at the start of training):\n\n![augmentation preview]({preview_png})\n") if preview_png else ""
    text = f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {model_name}

A Vision Transformer written from scratch (model type `vit_scratch`, custom code: load it with
`trust_remote_code=True`), trained on `{dataset}` with the Hugging Face `Trainer`.
Classes ({len(class_names)}): {", ".join(f"`{name}`" for name in class_names)}.

## Results

| Metric | Value |
|---|---|
{rows}

![training curves]({curves_png})

![confusion matrix]({confusion_png})
{preview}
## Usage

{usage}

## Training configuration

```json
{json.dumps(config, indent=2, default=str)}
```
"""
    _atomic_write(path, text)


def write_json(path: PathLike, data) -> None:
    """Write `data` as JSON (sorted keys, indent 2) atomically: a temp file in the same folder, then os.replace."""
    _atomic_write(Path(path), json.dumps(data, sort_keys=True, indent=2, default=_jsonable) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(fig: Figure, path: PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):  # numpy scalars and arrays from metrics
        return value.tolist()
    return str(value)  # paths, enums and the like


def _label(key: str) -> str:
    for prefix, split in _PREFIXES.items():
        if key.startswith(prefix) and key[len(prefix):] in _LABELS:
            return split + _LABELS[key[len(prefix):]]
    return key


def _format(value) -> str:
    if isinstance(value, float):  # metrics and losses to 4 decimals; times and throughputs to 1
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
