"""What a finished run writes beside the model: training curves, confusion matrix, model card, JSON results.

Figures use matplotlib's object API (`matplotlib.figure.Figure`), which needs no pyplot and no GUI backend. The
plotting functions return their Figure as well, so that tests (and notebooks) can check what was drawn.
"""

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from matplotlib.figure import Figure

from vit_scratch.config.schema import TRAINING_DEFAULTS

PathLike = str | os.PathLike

TAGS = ["image-classification", "vision-transformer", "vit_scratch", "custom_code"]
# TrainingArguments the card's recipe always shows (besides the keys the config set and TRAINING_DEFAULTS): the
# hyperparameters a reader compares runs by. The other ~150 fields are transformers' defaults and would bury them.
RECIPE_KEYS = ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
               "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "optim",
               "max_grad_norm", "label_smoothing_factor", "bf16", "fp16", "seed"]
ANNOTATED_CLASSES = 20  # up to this many classes, every confusion-matrix cell shows its number; beyond, unreadable
MAX_FIGURE_INCHES = 14  # the confusion matrix's wider side at any class count (1400 px at 100 dpi)
MIN_TICK_FONT = 5.0  # points: tick labels that would be smaller are thinned out (every k-th class) instead
PLACEHOLDER = "path/to/output_dir"  # the usage snippet's model when the card knows no Hub id
HELD_OUT_SPLIT = "train (held-out validation)"  # the card's split name for dataset.validation_size's hold-out
CLEAN_TRAIN_PREFIX = "train_clean"  # metrics of the final model on un-augmented training images (run.py)


class TrainingLog(NamedTuple):
    """`Trainer.state.log_history` sorted into what the curves draw; every point is (step, value)."""

    losses: list[tuple[int, float]]  # the training loss, logged every `logging_steps`
    evaluations: list[tuple[int, float]]  # validation accuracy, evaluated during training
    re_evaluations: list[tuple[int, float]]  # validation accuracy of the final model, evaluated after training
    summary: dict | None  # what Trainer logs when train() ends: train_loss (the run's mean), train_runtime, ...
    clean_train: list[tuple[int, float]]  # accuracy of the final model on un-augmented training images


def read_log_history(log_history: list[dict]) -> TrainingLog:
    """Split `log_history` at the run summary (the entry with `train_runtime`).

    After training, `trainer.evaluate()` logs the final model (with load_best_model_at_end, the best checkpoint) at
    the last step: on the validation curve it would jump at the last step to an earlier epoch's value. So an
    evaluation after the summary, or at a step evaluated already, is a re-evaluation; this holds whether the
    history is read before or after that call.
    """
    end = next((i for i, entry in enumerate(log_history) if "train_runtime" in entry), len(log_history))
    during, after = log_history[:end], log_history[end + 1:]
    evaluations, re_evaluations = [], _points(after, "eval_accuracy")
    for step, accuracy in _points(during, "eval_accuracy"):
        repeated = any(step == seen for seen, _ in evaluations)
        (re_evaluations if repeated else evaluations).append((step, accuracy))
    summary = log_history[end] if end < len(log_history) else None
    return TrainingLog(_points(during, "loss"), evaluations, re_evaluations, summary,
                       _points(after, f"{CLEAN_TRAIN_PREFIX}_accuracy"))


def plot_training_curves(log_history: list[dict], path: PathLike) -> Figure:
    """Training loss (left) and validation accuracy (right) against the optimizer step, from `state.log_history`.

    The final model's re-evaluation after training is one marker beside the validation curve, not a point of it.
    With fewer than two logged losses (`logging_steps` longer than the run) a line would show nothing, so the loss
    panel shows the run's mean training loss (`train_loss` of the summary) as one point instead.
    """
    log = read_log_history(log_history)
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    if len(log.losses) >= 2:
        loss_ax.plot(*zip(*log.losses, strict=True), "-", label="training loss")
    elif log.summary is not None and "train_loss" in log.summary:
        loss_ax.plot(log.summary["step"], log.summary["train_loss"], "D",
                     label="mean training loss of the run\n(fewer than 2 losses logged)")
    elif log.losses:
        loss_ax.plot(*log.losses[0], "o", label="training loss (logged once)")
    if log.evaluations:
        acc_ax.plot(*zip(*log.evaluations, strict=True), "o-", markersize=3, label="during training")
    if log.re_evaluations:
        acc_ax.plot(*log.re_evaluations[-1], "*", markersize=12, label="final model, re-evaluated")
    if log.clean_train:  # far above validation: overfitting; close to it and low: underfitting
        acc_ax.plot(*log.clean_train[-1], "s", markersize=8, label="final model on training images\n(un-augmented)")
    for ax, title, ylabel in ((loss_ax, "Training loss", "loss"), (acc_ax, "Validation accuracy", "accuracy")):
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data logged", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


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


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: PathLike) -> Figure:
    """A heat map of `matrix` (counts; rows: true class, columns: predicted class), each row normalised to 1.

    Normalised rows make every class read alike whatever its size, with its recall on the diagonal. The figure
    grows with the class count up to MAX_FIGURE_INCHES; cells show their fraction up to ANNOTATED_CLASSES classes;
    beyond, tick labels shrink to MIN_TICK_FONT and then only every k-th class is labelled.
    """
    counts = np.asarray(matrix)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix {counts.shape} does not match {n} class names")
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(MAX_FIGURE_INCHES - 1, max(4.0, 0.6 * n + 2))  # the colour bar takes one more inch of width
    fig = Figure(figsize=(side + 1, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    font = min(9.0, 0.8 * 72 * (side - 3) / max(n, 1))  # points per class along the ~side - 3 inches of an axis
    ticks = range(0, n, math.ceil(MIN_TICK_FONT / font) if font < MIN_TICK_FONT else 1)
    labels = [class_names[i] for i in ticks]
    font = max(font, MIN_TICK_FONT)
    if n <= ANNOTATED_CLASSES:
        ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=font)
    else:
        ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"Confusion matrix, {int(counts.sum()):,} images (each row: fractions of its true class)")
    if n <= ANNOTATED_CLASSES:
        for (t, p), fraction in np.ndenumerate(fractions):
            ax.text(p, t, f"{fraction:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if fraction > 0.5 else "black")
    _save(fig, path)
    return fig


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


def effective_config(experiment, model_config=None) -> dict:
    """The configuration as run, defaults included: the model card's recipe.

    `experiment.raw` holds only what was given; a reader needs every value used. dataset: every DataArguments
    field; model: every ViTScratchConfig field (and extra keys given, such as num_labels or pretrained) of
    `model_config`, the config the model was built with (with `model.pretrained` the architecture is the
    checkpoint's, not `experiment.model`'s); training: the keys given, TRAINING_DEFAULTS and RECIPE_KEYS, as the
    TrainingArguments hold them (enums as values, tokens masked).
    """
    model = model_config if model_config is not None else experiment.model
    model_fields = {name: getattr(model, name) for name in type(model).__annotations__}
    given = {key: value for key, value in experiment.raw["model"].items() if key not in model_fields}
    training = experiment.training.to_dict()
    keys = dict.fromkeys([*RECIPE_KEYS, *TRAINING_DEFAULTS, *experiment.raw["training"]])
    return {"dataset": dataclasses.asdict(experiment.dataset), "model": {**model_fields, **given},
            "training": {key: training[key] for key in keys if key in training}}


def device_name(device: torch.device) -> str:
    """The card's hardware: the GPU's name on CUDA, else the device type ("CPU", "MPS")."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()


def write_model_card(path: PathLike, *, model_name: str, results: dict, config: dict, dataset_name: str,
                     class_names: list[str], repo_id: str | None, curves_png: str, confusion_png: str | None = None,
                     preview_png: str | None = None, hardware: str | None = None, test_split: str | None = "test",
                     config_file: str | None = None, base_model: str | None = None) -> None:
    """Write README.md (`path` is the file, or the model folder): Hub metadata, results, figures, usage, recipe.

    results: `all_results.json`'s keys (missing ones are left out of the table); config: the recipe as run
    (`effective_config`); repo_id: the Hub id the usage snippet loads, else a placeholder the reader replaces;
    hardware: what trained it (`device_name`); test_split: the dataset's split the test results are on;
    config_file: the file holding the configuration as given, linked from the card; base_model: the weights
    training started from (`model.pretrained`), a Hub id in the metadata and named in the text. The metadata is
    built with huggingface_hub's ModelCardData, so the Hub (and `ModelCard.load`) read the results back as
    eval_results.
    """
    path = Path(path)
    if path.suffix.lower() != ".md":
        path = path / "README.md"
    hub_dataset = _hub_id(dataset_name)
    eval_results = _eval_results(results, hub_dataset or Path(dataset_name).name, hub_dataset is not None,
                                 test_split or "test")
    metadata = ModelCardData(library_name="transformers", pipeline_tag="image-classification", tags=TAGS,
                             datasets=[hub_dataset] if hub_dataset else None, metrics=["accuracy"],
                             base_model=_hub_id(base_model) if base_model else None,
                             model_name=model_name if eval_results else None, eval_results=eval_results or None)
    dataset = f"[`{hub_dataset}`](https://huggingface.co/datasets/{hub_dataset})" if hub_dataset else \
        f"a local dataset (`{Path(dataset_name).name}`)"
    rows = "\n".join(f"| {label} | {value} |" for label, value in _results_rows(results, hardware))
    best = config.get("training", {}).get("load_best_model_at_end")
    final = "the best checkpoint (`load_best_model_at_end`)" if best else "the model at the last step"
    figures = [f"![training curves]({curves_png})\n\nTraining loss and validation accuracy against the optimizer "
               f"step; the star is the final model, {final}, evaluated again after training."]
    if confusion_png:
        figures.append(f"![confusion matrix]({confusion_png})\n\nOn the test split; each row is a true class, "
                       "divided by its number of images (the diagonal is each class's recall).")
    if preview_png:
        figures.append(f"![augmentation preview]({preview_png})\n\nThe training images after the augmentation of the "
                       "configuration below (`augmentation_preview.png`, written at the start of training).")
    body = f"""
# {model_name}

A Vision Transformer written from scratch (model type `vit_scratch`, custom code: load it with
`trust_remote_code=True`), {f"fine-tuned from `{base_model}`" if base_model else "trained from scratch"} on
{dataset} with the Hugging Face `Trainer`.
Classes ({len(class_names)}): {", ".join(f"`{name}`" for name in class_names)}.

## Results

| Metric | Value |
|---|---|
{rows}

{_results_notes(results, config, test_split or "test")}

{chr(10).join(f"{figure}{chr(10)}" for figure in figures)}
## Usage

{_usage(repo_id)}

## Training configuration

The recipe as run, defaults included: every dataset and model field; of the `TrainingArguments`, the keys the
configuration set, this project's defaults and the main hyperparameters.{_config_link(config_file)}

```json
{json.dumps(config, indent=2, default=str)}
```
"""
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    _atomic_write(path, str(card))


def _hub_id(name: str) -> str | None:
    """`name` when it is a Hub repo id (a dataset, a model); None for a local path: nothing to the Hub's metadata."""
    if Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _eval_results(results: dict, dataset: str, on_hub: bool, test_split: str) -> list[EvalResult]:
    """The model-index: test accuracy and top-5 on the test split, validation accuracy on the images held out of
    the training split, named HELD_OUT_SPLIT so that it is never mistaken for a dataset's own "validation" split."""
    held_out = HELD_OUT_SPLIT
    wanted = [("test_accuracy", "accuracy", "Test accuracy", test_split),
              ("test_top_5_accuracy", "top_5_accuracy", "Test top-5 accuracy", test_split),
              ("eval_accuracy", "accuracy", "Validation accuracy", held_out)]
    return [EvalResult(task_type="image-classification", task_name="Image Classification",
                       dataset_type=dataset if on_hub else "local", dataset_name=dataset, dataset_split=split,
                       metric_type=metric, metric_name=name, metric_value=float(results[key]))
            for key, metric, name, split in wanted if key in results and split is not None]


def _results_rows(results: dict, hardware: str | None) -> list[tuple[str, str]]:
    """The results table as (label, value) rows in reading order: test, validation, cost of training, the run.

    Keys that are missing are left out; everything else stays in all_results.json (train_total_flos, ...).
    """

    def on(key: str) -> str:  # how many images an accuracy is on
        return f" ({results[key]:,} images)" if key in results else ""

    values = dict(results)
    world = f"world size {results['world_size']}" if "world_size" in results else None
    if hardware or world:
        values["hardware"] = ", ".join(part for part in (hardware, world) if part)
    wall = "train_wall_seconds" if "train_wall_seconds" in results else "train_runtime"
    table = [(f"Test accuracy{on('test_images')}", "test_accuracy", _percent),
             (f"Test top-5 accuracy{on('test_images')}", "test_top_5_accuracy", _percent),
             ("Test loss", "test_loss", _decimal),
             (f"Validation accuracy{on('eval_images')}", "eval_accuracy", _percent),
             (f"Validation top-5 accuracy{on('eval_images')}", "eval_top_5_accuracy", _percent),
             ("Validation loss", "eval_loss", _decimal),
             ("Training time", wall, _duration),
             ("Training throughput", "train_samples_per_second", lambda v: f"{v:,.1f} images/s"),
             ("Hardware", "hardware", str),
             ("Parameters", "num_parameters", _size),
             ("Training images", "train_images", lambda v: f"{v:,}"),
             ("Epochs", "epoch", lambda v: f"{round(v, 2):g}"),
             ("Seed", "seed", str)]
    return [(label, show(values[key])) for label, key, show in table if key in values]


def _results_notes(results: dict, config: dict, test_split: str) -> str:
    """What the table's image counts mean: validation is held out of training; the test split may be cut short."""
    notes = []
    if "eval_accuracy" in results:
        notes.append("Validation images are held out of the training split (`dataset.validation_size`).")
    if "test_accuracy" in results:
        notes.append(f"The `{test_split}` split is evaluated once, after training.")
        limit = config.get("dataset", {}).get("max_test_samples")
        if limit is not None and results.get("test_images", limit) >= limit:  # a smaller split was not cut
            notes.append(f"`dataset.max_test_samples={limit}` kept only its first {limit:,} images: compare these "
                         "test results only with results on the same images.")
    return " ".join(notes)


def _usage(repo_id: str | None) -> str:
    """The loading snippet: from the Hub id when there is one, else from a placeholder the reader replaces."""
    model = repo_id or PLACEHOLDER
    replace = "" if repo_id else (f"Replace `{PLACEHOLDER}` with the folder holding this card (the run's "
                                  "`training.output_dir`), or with the model's Hub id once it is uploaded.\n\n")
    return f"""{replace}```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

processor = AutoImageProcessor.from_pretrained("{model}")
model = AutoModelForImageClassification.from_pretrained("{model}", trust_remote_code=True)
inputs = processor(images=Image.open("image.png").convert("RGB"), return_tensors="pt")
print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])

classifier = pipeline("image-classification", model="{model}", trust_remote_code=True)
print(classifier("image.png"))
```"""


def _config_link(config_file: str | None) -> str:
    return (f" The configuration as given (config file and command-line overrides) is "
            f"[`{config_file}`]({config_file}).") if config_file else ""


def write_json(path: PathLike, data) -> None:
    """Write `data` as JSON (sorted keys, indent 2) atomically: a temp file in the same folder, then os.replace."""
    _atomic_write(Path(path), json.dumps(data, sort_keys=True, indent=2, default=_jsonable) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to, renamed over `path` only if the block succeeds: a reader
    (or a crash) never sees a half-written file. Every file this project writes beside a model goes through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        # A failed write() names no file: name the one meant (only on an OSError(errno, strerror), which shows it;
        # a one-argument OSError would lose its own text)
        if isinstance(error, OSError) and error.strerror and not error.filename:
            error.filename = str(path)
        raise


def _save(fig: Figure, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):  # numpy scalars and arrays from metrics
        return value.tolist()
    return str(value)  # paths, enums and the like


def _points(entries: list[dict], key: str) -> list[tuple[int, float]]:
    return [(entry["step"], entry[key]) for entry in entries if key in entry and "step" in entry]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _decimal(value: float) -> str:
    return f"{value:.4f}"


def _duration(seconds: float) -> str:
    """42.5 s, 3 min 16 s, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _size(count: int) -> str:
    """950, 12.2 k, 10.4 M."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)
