"""The figures a run writes beside the model: training curves, confusion matrix, augmentation preview.

Figures use matplotlib's object API (`matplotlib.figure.Figure`), which needs no pyplot and no GUI backend. The
plotting functions return their Figure as well, so that tests (and notebooks) can check what was drawn.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from vit_scratch.atomic import PathLike, atomic_path

ANNOTATED_CLASSES = 20  # up to this many classes, every confusion-matrix cell shows its number; beyond, unreadable
MAX_FIGURE_INCHES = 14  # the confusion matrix's wider side at any class count (1400 px at 100 dpi)
MIN_TICK_FONT = 5.0  # points: tick labels that would be smaller are thinned out (every k-th class) instead
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


def _save(fig: Figure, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _points(entries: list[dict], key: str) -> list[tuple[int, float]]:
    return [(entry["step"], entry[key]) for entry in entries if key in entry and "step" in entry]
