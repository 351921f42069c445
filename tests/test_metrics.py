"""The local `evaluate` metric modules and `build_compute_metrics`, against plain numpy."""

import socket

import evaluate
import numpy as np
import pytest
from transformers import EvalPrediction

from vit_scratch.metrics import METRICS_DIR, build_compute_metrics, load_metric


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Offline env vars, no sockets, and an empty working directory; yields the metrics' cache_dir."""
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield tmp_path / "cache"
    assert list(cwd.iterdir()) == [], "metrics wrote into the working directory"


def random_logits(seed: int, n: int = 1000, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    assert all(len(np.unique(row)) == k for row in logits), "ties in the test data"
    return logits, rng.integers(0, k, size=n)


def numpy_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


def numpy_top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def test_modules_load_by_path_offline(offline):
    assert evaluate.config.HF_EVALUATE_OFFLINE
    for name in ("accuracy", "top_k_accuracy"):
        for path in (METRICS_DIR / name, METRICS_DIR / name / f"{name}.py"):  # the folder, or the script itself
            metric = evaluate.load(str(path), keep_in_memory=True, cache_dir=str(offline))
            assert isinstance(metric, evaluate.Metric)
            assert metric.name == name and metric.citation and metric.description
    # keep_in_memory: the cache dir only gets empty <name>/default/ folders, no arrow or lock files
    assert [p for p in offline.rglob("*") if p.is_file()] == []
    assert load_metric("accuracy", offline).compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {
        "accuracy": 0.75}
    with pytest.raises(FileNotFoundError):
        load_metric("f1", offline)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_metrics_matches_numpy(offline, seed):
    logits, labels = random_logits(seed)
    results = build_compute_metrics(cache_dir=offline)(EvalPrediction(predictions=logits, label_ids=labels))
    assert results == {"accuracy": pytest.approx(numpy_accuracy(logits, labels), abs=1e-12),
                       "top_5_accuracy": pytest.approx(numpy_top_k(logits, labels, 5), abs=1e-12)}
    assert 0 < results["accuracy"] < results["top_5_accuracy"] < 1


def test_top_k_module_for_each_k(offline):
    logits, labels = random_logits(3, n=500, k=10)
    top_k = load_metric("top_k_accuracy", offline)
    for k in (1, 2, 5, 9):
        assert top_k.compute(predictions=logits, references=labels, k=k) == {
            f"top_{k}_accuracy": pytest.approx(numpy_top_k(logits, labels, k), abs=1e-12)}
    assert top_k.compute(predictions=logits, references=labels, k=1)["top_1_accuracy"] == pytest.approx(
        numpy_accuracy(logits, labels), abs=1e-12)
    assert top_k.compute(predictions=logits, references=labels, k=10) == {"top_10_accuracy": 1.0}
    assert top_k.compute(predictions=logits.tolist(), references=labels.tolist()) == {  # lists; k defaults to 5
        "top_5_accuracy": pytest.approx(numpy_top_k(logits, labels, 5), abs=1e-12)}
    with pytest.raises(ValueError, match="k=0"):
        top_k.compute(predictions=logits, references=labels, k=0)


def test_fewer_classes_than_top_k(offline):
    logits, labels = random_logits(4, n=200, k=3)
    results = build_compute_metrics(top_k=5, cache_dir=offline)(EvalPrediction(predictions=logits, label_ids=labels))
    assert results == {"accuracy": pytest.approx(numpy_accuracy(logits, labels), abs=1e-12), "top_3_accuracy": 1.0}
    # the module itself: k beyond the number of classes counts every example as a hit
    top_k = load_metric("top_k_accuracy", offline)
    assert top_k.compute(predictions=logits, references=labels, k=7) == {"top_7_accuracy": 1.0}


def test_all_correct_and_all_wrong(offline):
    compute_metrics = build_compute_metrics(cache_dir=offline)
    labels = np.arange(100) % 10
    correct = np.eye(10, dtype=np.float32)[labels] * 5 + np.linspace(0, 1, 10, dtype=np.float32)
    assert compute_metrics(EvalPrediction(predictions=correct, label_ids=labels)) == {
        "accuracy": 1.0, "top_5_accuracy": 1.0}
    wrong = -correct  # the true class scores lowest
    assert compute_metrics(EvalPrediction(predictions=wrong, label_ids=labels)) == {
        "accuracy": 0.0, "top_5_accuracy": 0.0}


def test_tuple_predictions_and_repeated_calls(offline):
    compute_metrics = build_compute_metrics(cache_dir=offline)
    logits, labels = random_logits(5, n=300)
    extra = np.zeros((300, 4, 8), dtype=np.float32)  # e.g. hidden states the model also returned
    first = compute_metrics(EvalPrediction(predictions=(logits, extra), label_ids=labels))
    assert first == compute_metrics(EvalPrediction(predictions=logits, label_ids=labels.reshape(-1, 1)))
    assert first["accuracy"] == pytest.approx(numpy_accuracy(logits, labels), abs=1e-12)


def test_ties_count_in_the_examples_favour(offline):
    top_k = load_metric("top_k_accuracy", offline)
    flat = np.zeros((4, 10), dtype=np.float32)
    assert top_k.compute(predictions=flat, references=[0, 3, 6, 9], k=1) == {"top_1_accuracy": 1.0}


def test_bad_arguments(offline):
    with pytest.raises(ValueError, match="top_k"):
        build_compute_metrics(top_k=0, cache_dir=offline)
    compute_metrics = build_compute_metrics(cache_dir=offline)
    with pytest.raises(ValueError, match="expected logits"):
        compute_metrics(EvalPrediction(predictions=np.zeros((4, 10)), label_ids=np.zeros(5, dtype=int)))

