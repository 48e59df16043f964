"""Classification and regression metrics, computed one way for training's report and the registry's gates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sklearn.base import is_regressor
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from flywheel.common.modelspec import REGRESSION_METRICS

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "balanced_accuracy", "log_loss")
# better lower: a loss or an error in the label's units; every other metric is better higher
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
# error metrics in the label's own units: a margin on them is a fraction of the reference figure
IN_LABEL_UNITS = frozenset({"rmse", "mae"})


def metrics_of_task(task: str) -> tuple[str, ...]:
    """The metrics a model of ``task`` reports.

    >>> metrics_of_task("regression")
    ('rmse', 'mae', 'r2')
    """
    return REGRESSION_METRICS if task == "regression" else METRICS


def task_of(model: Any) -> str:
    """``regression`` for a fitted regressor (or a pipeline ending in one), else ``classification``.

    An object scikit-learn cannot ask (no estimator tags) is taken for a classifier, as before
    regression existed.

    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> task_of(LinearRegression()), task_of(LogisticRegression()), task_of(object())
    ('regression', 'classification', 'classification')
    """
    try:
        return "regression" if is_regressor(model) else "classification"
    except (AttributeError, TypeError):
        return "classification"


def quality_metric(task: str) -> str:
    """The figure a task's live answers are judged by on their labels: accuracy, or the mean absolute error.

    >>> quality_metric("classification"), quality_metric("regression")
    ('accuracy', 'mae')
    """
    return "mae" if task == "regression" else "accuracy"


def label_type(task: str) -> type:
    """How labels are read for a model of ``task``: class numbers, or a regressor's values."""
    return float if task == "regression" else int


def number(value: Any) -> float | None:
    """A JSON number or a numeric string as a finite float; None for anything else (a boolean too).

    >>> number(3), number("4.5"), number(" -7 "), number("seven"), number(True), number("nan"), number(None)
    (3.0, 4.5, -7.0, None, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        parsed = float(value)
    except (ValueError, OverflowError):
        return None
    return parsed if math.isfinite(parsed) else None


def answer_error(task: str, predicted: Any, label: Any) -> float | None:
    """How far one answer was from its label: a classifier's 1.0 wrong or 0.0 right, a regressor's absolute
    error. None when a regressor's answer or label is no number: no error can be measured.

    The one rule serving's rollouts, monitoring's error stream and the demo's figures share.

    >>> [answer_error("classification", 1, label) for label in ("1", 1.0, 0)]
    [0.0, 0.0, 1.0]
    >>> [answer_error("regression", answer, label) for answer, label in ((12.5, "10"), (None, 10), (2, True))]
    [2.5, None, None]
    """
    if task == "regression":
        value, truth = number(predicted), number(label)
        if value is None or truth is None:
            return None
        error = abs(value - truth)
        return error if math.isfinite(error) else None
    same = str(predicted) == str(label) or (number(predicted) is not None and number(predicted) == number(label))
    return 0.0 if same else 1.0


def p99(latencies_ms: Iterable[float]) -> float:
    """The 99th percentile of answer latencies (nearest rank), 0 for none: serving's rollout figures and
    monitoring's latency alert take it the same way.

    >>> p99(range(1, 101)), p99([5.0]), p99([])
    (100, 5.0, 0.0)
    """
    ordered = sorted(latencies_ms)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Root mean squared error, mean absolute error (both in the label's units) and R².

    >>> regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0])
    {'rmse': 0.3535533905932738, 'mae': 0.25, 'r2': 0.9}
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    r2 = r2_score(y_true, y_pred) if len(y_true) > 1 else float("nan")
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2),
    }


def classification_metrics(y_true: Any, y_pred: Any, proba: Any) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and ROC AUC (binary: of class 1; else weighted one-vs-rest),
    balanced accuracy (the mean recall of the classes: 0.5 for "always the majority") and log loss.

    ``proba``'s columns are the classes 0..k-1 (a model's ``predict_proba``).

    >>> m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    >>> {k: round(v, 2) for k, v in m.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'accuracy': 0.75, 'precision': 1.0, 'recall': 0.5, 'f1': 0.67, 'balanced_accuracy': 0.75,
     'log_loss': 0.4, 'roc_auc': 1.0}
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    binary = proba.ndim == 2 and proba.shape[1] == 2
    average = "binary" if binary else "weighted"
    metrics = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, average=average, zero_division=0),
        "recall": recall_score(y_true, y_pred, average=average, zero_division=0),
        "f1": f1_score(y_true, y_pred, average=average, zero_division=0),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "log_loss": log_loss(y_true, proba, labels=list(range(proba.shape[1]))) if proba.ndim == 2 else float("nan"),
    }
    if len(np.unique(y_true)) < 2:
        metrics["roc_auc"] = float("nan")
    elif binary:
        metrics["roc_auc"] = roc_auc_score(y_true, proba[:, 1])
    else:
        metrics["roc_auc"] = roc_auc_score(y_true, proba, multi_class="ovr", average="weighted")
    return {k: float(v) for k, v in metrics.items()}


def score_model(model: Any, features: Any, y_true: Any) -> dict[str, float]:
    """A fitted model's metrics on labelled features: a regressor's errors, a classifier's rates."""
    if task_of(model) == "regression":
        return regression_metrics(y_true, model.predict(features))
    return classification_metrics(y_true, model.predict(features), model.predict_proba(features))


def chance_allowance(metric: str, rows: int, baseline: Mapping[str, float], z: float = 2.326) -> float:
    """How far beyond the trivial baseline a model no better than it reaches by chance on the slice's rows, one
    in a hundred times: ``z`` standard errors of accuracy at the majority share, or of balanced accuracy at
    the classes' counts (its error is larger when one class is rare); other classification metrics none.

    A regressor that knows nothing correlates with the labels by chance, below ``z / sqrt(rows)`` ninety-nine
    times in a hundred, and at correlation r it can cut the mean's squared error by at most the share r²: so
    ``z² / rows`` of the baseline's unexplained share on ``r2``, and the matching fraction of its root,
    ``1 - sqrt(1 - z² / rows)``, on ``rmse`` (on ``mae`` alike, exactly so for normal errors).

    The registry's baseline gate allows it; training's online challenger, which predicts that gate, too.
    ``baseline``: the trivial baseline's figures on the slice (its ``accuracy`` is the majority share).

    >>> baseline = {"accuracy": 0.75, "balanced_accuracy": 0.5, "r2": 0.0}
    >>> [round(chance_allowance(metric, 300, baseline), 3) for metric in ("accuracy", "balanced_accuracy")]
    [0.058, 0.078]
    >>> round(chance_allowance("r2", 300, baseline), 4), round(chance_allowance("rmse", 300, baseline), 4)
    (0.018, 0.0091)
    """
    if metric in REGRESSION_METRICS:
        return chance_fit(metric, rows, baseline, z)
    majority = baseline.get("accuracy")
    if rows <= 0 or not _known(majority) or not 0.0 < majority < 1.0:
        return 0.0
    if metric == "accuracy":
        return z * math.sqrt(majority * (1 - majority) / rows)
    if metric == "balanced_accuracy":  # recalls of uncorrelated answers vary at most as 1/4 over each class
        minority = max(1.0, (1 - majority) * rows)
        return z * 0.25 * math.sqrt(1 / (majority * rows) + 1 / minority)
    return 0.0


def chance_fit(metric: str, rows: int, baseline: Mapping[str, float], z: float = 2.326) -> float:
    """``chance_allowance`` of a regression metric: the share of the baseline's squared error chance explains."""
    if rows <= 0:
        return 0.0
    share = min(1.0, z * z / rows)  # r² one in a hundred times; a handful of rows can show anything
    if metric == "r2":
        unexplained = baseline.get("r2")
        return share * (1 - unexplained if _known(unexplained) else 1.0)  # r2 = 1 - error / variance of the labels
    return 1 - math.sqrt(1 - share)


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
