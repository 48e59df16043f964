"""Classification metrics, computed one way for training's report and the registry's gates."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "balanced_accuracy", "log_loss")


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
    """A fitted classifier's metrics on labelled features."""
    return classification_metrics(y_true, model.predict(features), model.predict_proba(features))
