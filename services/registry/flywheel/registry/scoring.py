"""Scoring a model and the trivial baseline on an evaluation slice of raw labelled records: no I/O.

Each model computes its features with its own pinned feature set, so a champion and a
candidate trained on different feature-set versions are judged on the same records. The
metrics are ``flywheel.common.evaluation``'s, the ones training reports: a classifier's rates,
a regressor's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor

from flywheel.common.evaluation import label_type, score_model, task_of
from flywheel.common.featuresets import FeatureSet


def trivial_model(task: str) -> Any:
    """What any model of ``task`` must beat: the classes' shares (predicting the majority), or the mean."""
    return DummyRegressor(strategy="mean") if task == "regression" else DummyClassifier(strategy="prior")


def baseline_metrics(y_true: Any, task: str = "classification") -> dict[str, float]:
    """The trivial baseline's metrics on a slice's labels: always the majority class, with the classes'
    shares as probabilities; for regression, always the mean.

    Its majority (or mean) is the slice's own, which flatters the baseline (a stricter gate) when
    the run did not report its baseline (``baseline_<metric>``, the majority or the mean of its
    training rows); the mean of the slice itself is the constant with the least error on it.

    >>> b = baseline_metrics([0, 0, 0, 1])
    >>> b["accuracy"], b["balanced_accuracy"], b["f1"], b["roc_auc"]
    (0.75, 0.5, 0.0, 0.5)
    >>> baseline_metrics([1.0, 2.0, 3.0, 6.0], "regression")
    {'rmse': 1.8708286933869707, 'mae': 1.5, 'r2': 0.0}
    """
    y = np.asarray(y_true)
    x = np.zeros((len(y), 1))
    return score_model(trivial_model(task).fit(x, y), x, y)


def reported_baseline(metrics: dict[str, float]) -> dict[str, float]:
    """The baseline figures a run reported with its metrics (``baseline_<metric>``), but its log loss.

    A run's baseline answers its majority class with certainty, whose log loss is huge; the
    trivial baseline of a probability is the classes' shares (``baseline_metrics``), so that one stays.
    A regression run's baseline is the mean of its training rows, every figure of which stands.

    >>> reported_baseline({"accuracy": 0.8, "baseline_accuracy": 0.74, "baseline_log_loss": 9.3})
    {'accuracy': 0.74}
    >>> reported_baseline({"rmse": 2.1, "baseline_rmse": 3.0, "baseline_r2": -0.02})
    {'rmse': 3.0, 'r2': -0.02}
    """
    reported = {k.removeprefix("baseline_"): v for k, v in metrics.items() if k.startswith("baseline_")}
    return {k: v for k, v in reported.items() if k != "log_loss"}


def labelled(records: pd.DataFrame, label: str, task: str = "classification") -> tuple[pd.DataFrame, pd.Series]:
    """A slice's records with a known label, and the labels as training reads them (class numbers, or values)."""
    if label not in records.columns:
        raise ValueError(f"the evaluation slice has no label column {label!r} (columns: {sorted(records.columns)})")
    known = records[records[label].notna()].reset_index(drop=True)
    return known.drop(columns=[label]), known[label].astype(label_type(task))


@dataclass(frozen=True)
class Scorer:
    """A fitted model (classifier or regressor) and the feature set it was trained with."""

    estimator: Any
    features: FeatureSet

    @property
    def task(self) -> str:
        return task_of(self.estimator)

    def score(self, records: pd.DataFrame, labels: pd.Series) -> dict[str, float]:
        """Its metrics on raw records, computing its own features."""
        x = self.features.frame(records)
        wanted = list(getattr(self.estimator, "feature_names_in_", x.columns))
        absent = sorted(set(wanted) - set(x.columns))
        if absent:
            raise ValueError(f"the model's feature set lacks the features it was fitted on: {absent}")
        return score_model(self.estimator, x[wanted], labels)
