"""Accuracy: the fraction of predicted class ids that equal the reference class ids.

A local `evaluate` module (no Hub download): `evaluate.load("<this folder or this file>")`.
Self-contained on purpose: `evaluate.load` copies this file into its modules cache and imports it from there.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy is the proportion of correct predictions among all examples:
    accuracy = (number of predictions equal to their reference) / (number of examples)
It ranges from 0.0 to 1.0 (higher is better).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` or `np.ndarray` of `int`, shape (N,)): predicted class ids (e.g. the argmax of the logits).
    references (`list` or `np.ndarray` of `int`, shape (N,)): true class ids.
Returns:
    `dict`: {"accuracy": float in [0, 1]}.
Example:
    >>> accuracy = evaluate.load("vit_scratch/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#accuracy-score"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape or predictions.ndim != 1:
            raise ValueError(f"predictions {predictions.shape} and references {references.shape} must be equal 1-D")
        if predictions.size == 0:
            raise ValueError("accuracy of zero examples is undefined")
        return {"accuracy": float(np.mean(predictions == references))}
