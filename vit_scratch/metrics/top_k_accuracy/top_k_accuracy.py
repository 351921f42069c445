"""Top-k accuracy: the fraction of examples whose true class is among the k highest-scoring classes.

A local `evaluate` module (no Hub download): `evaluate.load("<this folder or this file>")`.
Self-contained on purpose: `evaluate.load` copies this file into its modules cache and imports it from there.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Top-k accuracy counts a prediction as correct when the true class is among the k classes with the highest
scores (logits or probabilities). With k=1 it is the usual accuracy. Ties are counted in the example's favour:
the true class is in the top k when fewer than k classes score strictly higher than it. With k >= the number
of classes every example is correct.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` or `np.ndarray` of float, shape (N, K)): one score vector (e.g. logits) per example.
    references (`list` or `np.ndarray` of `int`, shape (N,)): true class ids in [0, K).
    k (`int`, default 5): how many of the highest-scoring classes count as a hit.
Returns:
    `dict`: {"top_{k}_accuracy": float in [0, 1]}, e.g. {"top_5_accuracy": 0.98}.
Example:
    >>> top_k = evaluate.load("vit_scratch/metrics/top_k_accuracy")
    >>> top_k.compute(predictions=[[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]], references=[2, 2], k=2)
    {'top_2_accuracy': 0.5}
"""

_CITATION = """\
@inproceedings{krizhevsky2012imagenet,
  title={ImageNet Classification with Deep Convolutional Neural Networks},
  author={Krizhevsky, Alex and Sutskever, Ilya and Hinton, Geoffrey E.},
  booktitle={Advances in Neural Information Processing Systems},
  volume={25},
  year={2012}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            # no format="numpy": evaluate allows it only for flat `Value` features; rows arrive as lists
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#top-k-accuracy-score"],
        )

    def _compute(self, predictions, references, k: int = 5) -> dict[str, float]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} must be an integer >= 1")
        try:
            scores = np.asarray(predictions, dtype=np.float32)
        except ValueError as err:  # rows of different lengths
            raise ValueError("predictions must be (N, K) scores: every row needs the same number of classes") from err
        references = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[0] == 0 or references.shape != (scores.shape[0],):
            raise ValueError(f"predictions {scores.shape} must be (N, K) scores, N >= 1, references (N,) class ids")
        if references.min() < 0 or references.max() >= scores.shape[1]:
            raise ValueError(f"references must be class ids in [0, {scores.shape[1]})")
        true_scores = scores[np.arange(len(references)), references]
        n_higher = (scores > true_scores[:, None]).sum(axis=1)
        return {f"top_{int(k)}_accuracy": float(np.mean(n_higher < k))}
