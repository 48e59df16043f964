"""Fitting and evaluating one model on a dataset version: pure computation, no I/O.

Everything random is seeded from the spec, so the same rows, spec and seed give
the same model and the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split

from flywheel.common.evaluation import score_model
from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import ModelSpec

Progress = Callable[[str, float], None]


class TrainingError(ValueError):
    """The run cannot produce a model from this data (a reason for ``training.failed``)."""


@dataclass
class Trained:
    """A fitted model, its held-out evaluation and what it learnt from."""

    model: Any
    metrics: dict[str, float]
    x_train: pd.DataFrame
    x_eval: pd.DataFrame
    y_eval: pd.Series
    importance: dict[str, float] = field(default_factory=dict)
    importance_kind: str = ""


def labelled(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows whose label is known; labels arrive late, so some may not be."""
    if label not in frame.columns:
        raise TrainingError(f"label column {label!r} is not in the data (columns: {sorted(frame.columns)})")
    return frame[frame[label].notna()]


def fit_and_evaluate(
    frame: pd.DataFrame,
    spec: ModelSpec,
    features: FeatureSet,
    *,
    importance_repeats: int = 5,
    progress: Progress = lambda stage, fraction: None,
) -> Trained:
    """Split, fit the spec's estimator on the feature matrix, and score it on the held-out part."""
    rows = labelled(frame, spec.label)
    if len(rows) < spec.min_rows:
        raise TrainingError(f"too few labelled rows: {len(rows)} < {spec.min_rows}")
    y = rows[spec.label].astype(int).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise TrainingError(f"label {spec.label!r} has one class only ({classes.tolist()})")
    progress("features", 0.1)
    x = features.frame(rows.reset_index(drop=True))
    stratify = y if counts.min() >= 2 else None
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=spec.test_size, random_state=spec.seed, stratify=stratify
    )
    if spec.shuffle_labels:  # only the training labels: the evaluation stays honest
        y_train = np.random.default_rng(spec.seed).permutation(y_train)
    progress("fitting", 0.3)
    model = spec.build().fit(x_train, y_train)
    if not hasattr(model, "predict_proba"):
        raise TrainingError(f"{spec.estimator.path} has no predict_proba; serving needs probabilities")
    progress("evaluating", 0.7)
    metrics = score_model(model, x_eval, y_eval)
    importance, kind = feature_importance(model, x_eval, y_eval, spec.seed, importance_repeats)
    progress("evaluated", 0.8)
    return Trained(
        model=model,
        metrics=metrics,
        x_train=x_train,
        x_eval=x_eval,
        y_eval=pd.Series(y_eval, name=spec.label, index=x_eval.index),
        importance=importance,
        importance_kind=kind,
    )


def feature_importance(model: Any, x: pd.DataFrame, y: Any, seed: int, repeats: int) -> tuple[dict[str, float], str]:
    """The model's own importances where it has them, else permutation importance on the eval split."""
    own = getattr(model, "feature_importances_", None)
    if own is not None:
        return {n: float(v) for n, v in zip(x.columns, own, strict=True)}, "impurity"
    result = permutation_importance(model, x, y, n_repeats=repeats, random_state=seed, scoring="accuracy")
    return {n: float(v) for n, v in zip(x.columns, result.importances_mean, strict=True)}, "permutation"
