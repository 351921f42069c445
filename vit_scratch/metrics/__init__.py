"""Evaluation metrics for the Trainer, as local `evaluate` modules (no Hub download, works offline).

Each metric lives in `METRICS_DIR/<name>/<name>.py`, the layout `evaluate.load(<folder>)` expects.
Note that `evaluate.load` (0.4.6) copies each script into its modules cache
(`$HF_MODULES_CACHE/evaluate_modules/metrics/<name>/<hash>/`, default `~/.cache/huggingface/modules`) and
imports it from there, whatever `cache_dir` says; `cache_dir` only holds `<name>/default/`, left empty here
because the metrics keep their inputs in memory.
"""

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str, cache_dir: str | os.PathLike | None = None) -> evaluate.EvaluationModule:
    """Load the local metric `METRICS_DIR/name` by path, keeping predictions in memory (no arrow cache files)."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"no local metric {name!r}: {path / (name + '.py')} does not exist")
    return evaluate.load(str(path), keep_in_memory=True, cache_dir=None if cache_dir is None else str(cache_dir))


def build_compute_metrics(
    top_k: int = 5, *, cache_dir: str | os.PathLike | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `Trainer(compute_metrics=...)` function giving {"accuracy": ..., "top_5_accuracy": ...} from the logits.

    The metric modules are loaded once, here. With fewer than `top_k` classes, k becomes the number of classes,
    and the key follows it (e.g. "top_3_accuracy" for 3 classes).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be an integer >= 1")
    accuracy = load_metric("accuracy", cache_dir)
    top_k_accuracy = load_metric("top_k_accuracy", cache_dir)

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, (tuple, list)):  # model returned extra outputs (hidden states, attentions)
            logits = logits[0]
        logits = np.asarray(logits, dtype=np.float32)
        labels = np.asarray(eval_pred.label_ids).astype(np.int64).reshape(-1)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
        k = min(top_k, logits.shape[1])
        results = accuracy.compute(predictions=logits.argmax(axis=-1), references=labels)
        results.update(top_k_accuracy.compute(predictions=logits, references=labels, k=k))
        return results

    return compute_metrics


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
