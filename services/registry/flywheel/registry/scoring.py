"""Scoring a model and the trivial baseline on an evaluation slice of raw labelled records: no I/O.

Each model computes its features with its own pinned feature set, so a champion and a
candidate trained on different feature-set versions are judged on the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.metrics import balanced_accuracy_score, log_loss

from flywheel.common.evaluation import classification_metrics
from flywheel.common.featuresets import FeatureSet


def metrics_of(y_true: Any, y_pred: Any, proba: Any, classes: Any) -> dict[str, float]:
    """The classification metrics, with balanced accuracy and log loss (the gates' metrics).

    >>> m = metrics_of([0, 1, 1, 0], [0, 1, 0, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]], [0, 1])
    >>> round(m["balanced_accuracy"], 2), round(m["log_loss"], 2)
    (0.75, 0.4)
    """
    metrics = classification_metrics(y_true, y_pred, proba)
    metrics.setdefault("balanced_accuracy", float(balanced_accuracy_score(y_true, y_pred)))
    metrics.setdefault("log_loss", float(log_loss(y_true, proba, labels=list(classes))))
    return metrics


def baseline_metrics(y_true: Any) -> dict[str, float]:
    """The trivial baseline's metrics: always the majority class, with the classes' shares as probabilities.

    Its majority is the slice's own, which flatters the baseline (a stricter gate) when the
    run did not report its baseline (``baseline_<metric>``, the majority of its training rows).

    >>> b = baseline_metrics([0, 0, 0, 1])
    >>> b["accuracy"], b["balanced_accuracy"], b["f1"], b["roc_auc"]
    (0.75, 0.5, 0.0, 0.5)
    """
    y = np.asarray(y_true)
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(y), 1)), y)
    x = np.zeros((len(y), 1))
    return metrics_of(y, dummy.predict(x), dummy.predict_proba(x), dummy.classes_)


def reported_baseline(metrics: dict[str, float]) -> dict[str, float]:
    """The baseline figures a run reported with its metrics (``baseline_<metric>``), but its log loss.

    A run's baseline answers its majority class with certainty, whose log loss is huge; the
    trivial baseline of a probability is the classes' shares (``baseline_metrics``), so that one stays.

    >>> reported_baseline({"accuracy": 0.8, "baseline_accuracy": 0.74, "baseline_log_loss": 9.3})
    {'accuracy': 0.74}
    """
    reported = {k.removeprefix("baseline_"): v for k, v in metrics.items() if k.startswith("baseline_")}
    return {k: v for k, v in reported.items() if k != "log_loss"}


def labelled(records: pd.DataFrame, label: str) -> tuple[pd.DataFrame, pd.Series]:
    """A slice's records with a known label, and the labels as training reads them (integers)."""
    if label not in records.columns:
        raise ValueError(f"the evaluation slice has no label column {label!r} (columns: {sorted(records.columns)})")
    known = records[records[label].notna()].reset_index(drop=True)
    return known.drop(columns=[label]), known[label].astype(int)


@dataclass(frozen=True)
class Scorer:
    """A fitted classifier and the feature set it was trained with."""

    estimator: Any
    features: FeatureSet

    def score(self, records: pd.DataFrame, labels: pd.Series) -> dict[str, float]:
        """Its metrics on raw records, computing its own features."""
        x = self.features.frame(records)
        wanted = list(getattr(self.estimator, "feature_names_in_", x.columns))
        absent = sorted(set(wanted) - set(x.columns))
        if absent:
            raise ValueError(f"the model's feature set lacks the features it was fitted on: {absent}")
        x = x[wanted]
        return metrics_of(labels, self.estimator.predict(x), self.estimator.predict_proba(x), self.estimator.classes_)
