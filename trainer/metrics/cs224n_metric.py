# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
CS224N evaluation metrics as an `evaluate` module shipped with the project.

`evaluate.load("accuracy")` needs the Hub; this file is loaded by path instead and works offline (`HF_HUB_OFFLINE=1`,
`HF_EVALUATE_OFFLINE=1`):

```python
metric = evaluate.load("<repo>/trainer/metrics/cs224n_metric.py", "accuracy")
metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])  # {"accuracy": 0.666...}
metric = evaluate.load("<repo>/trainer/metrics/cs224n_metric.py", "pearson")
metric.compute(predictions=[0.1, 2.0, 4.5], references=[0.0, 2.5, 5.0])  # {"pearson": ...}
```

Config names, which are also the result keys (a task's head names its metric):

- "accuracy": mean of `prediction == reference` over integer labels (int64).
- "pearson": Pearson's r in float64 (inputs are stored as float64, not float32). When the predictions or the
  references are constant (zero variance) r is undefined; this metric returns 0.0 there instead of NaN (a constant
  predictor carries no linear information), so a model selection by "best dev score" never sees NaN. Fewer than 2
  pairs raise a `ValueError`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """CS224N default-project metrics: accuracy (classification) and Pearson correlation (regression)."""

_CITATION = """\
@misc{cs224n-minbert,
  title={CS224N Default Final Project: minBERT and Downstream Tasks},
  howpublished={Stanford University},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (accuracy: ints) or scores (pearson: floats).
    references: gold labels / scores, same length.
Returns:
    {"accuracy": float} or {"pearson": float}
Examples:
    >>> metric = evaluate.load("trainer/metrics/cs224n_metric.py", "accuracy")
    >>> metric.compute(predictions=[1, 0], references=[1, 1])
    {'accuracy': 0.5}
"""

METRICS = ("accuracy", "pearson")


def pearson_r(predictions, references) -> float:
    """Pearson's r in float64; 0.0 when either side has zero variance."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"predictions and references must be 1-D of equal length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError(f"pearson needs at least 2 pairs, got {x.size}")
    xc = x - x.mean()
    yc = y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if not np.isfinite(denom):
        raise ValueError("pearson: non-finite predictions or references")
    if denom == 0.0:
        return 0.0
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cs224nMetric(evaluate.Metric):
    """Accuracy or Pearson correlation, chosen by the config name."""

    def _metric_name(self) -> str:
        if self.config_name not in METRICS:
            raise KeyError(f"Unknown config name {self.config_name!r} for cs224n_metric; choose one of {METRICS}")
        return self.config_name

    def _info(self):
        if self._metric_name() == "accuracy":
            dtype = "int64"
        else:
            dtype = "float64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
        )

    def _compute(self, predictions, references):
        name = self._metric_name()
        if name == "accuracy":
            p = np.asarray(predictions)
            r = np.asarray(references)
            if p.shape != r.shape:
                raise ValueError(f"predictions and references differ in shape: {p.shape} vs {r.shape}")
            if p.size == 0:
                raise ValueError("accuracy of zero examples is undefined")
            return {"accuracy": float(np.mean(p == r))}
        return {"pearson": pearson_r(predictions, references)}
