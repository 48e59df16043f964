"""River online models in the scikit-learn shape the loop already trains, saves, serves and gates.

A river estimator learns one labelled row at a time (``learn_one``), in the order training hands
the rows over (event time). Wrapped here it answers ``predict`` and ``predict_proba`` on a matrix
like any scikit-learn model, so training's evaluation, MLflow's skops serialization (no pickle:
the types to trust are listed with the model), serving and the registry's gates need no second
path. Rows reach river as dicts keyed by feature name, skipping missing values, which river's
models read as absent features; ``partial_fit`` goes on learning from where ``fit`` stopped.

>>> import pandas as pd
>>> from river import linear_model, preprocessing
>>> x = pd.DataFrame({"a": [0.0, 1.0, 0.1, 0.9] * 25, "b": [1.0, 0.0, 1.0, 0.0] * 25})
>>> y = np.array([0, 1, 0, 1] * 25)
>>> model = OnlineClassifier(preprocessing.StandardScaler() | linear_model.LogisticRegression()).fit(x, y)
>>> model.predict(np.array([[0.0, 1.0], [1.0, 0.0]])).tolist(), model.classes_.tolist()
([0, 1], [0, 1])
>>> regressor = OnlineRegressor(preprocessing.StandardScaler() | linear_model.LinearRegression())
>>> bool(abs(regressor.fit(x, x["a"] * 2).predict(x[1:2])[0] - 2.0) < 0.25)
True
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


def _tree(model: Any) -> Any:
    """The river Hoeffding tree at the end of ``model`` (a pipeline's last step), else None."""
    steps = getattr(model, "steps", None)
    final = list(steps.values())[-1] if steps else model
    return final if hasattr(final, "_deactivate_all_leaves") else None


def is_river(path: str) -> bool:
    """Whether a spec's import path names a river class."""
    return path.split(".", 1)[0] == "river"


class _Online(BaseEstimator):
    """What both kinds share: the river model, the feature names, learning row by row."""

    def __init__(self, river_estimator: Any) -> None:
        self.river_estimator = river_estimator

    def _rows(self, x: Any) -> Iterator[dict[str, float]]:
        names = self.feature_names_in_
        for row in np.asarray(x, dtype=float):
            yield {name: float(v) for name, v in zip(names, row, strict=True) if v == v}  # NaN: absent

    def _start(self, x: Any) -> None:
        self.model_ = copy.deepcopy(self.river_estimator)
        columns = getattr(x, "columns", None)
        width = np.asarray(x).shape[1]
        self.feature_names_in_ = np.array([str(c) for c in columns] if columns is not None else range(width), str)
        self.n_features_in_ = width

    def frozen(self) -> _Online:
        """A copy that learns no more: a river tree's learning state (each leaf's and each branch's split
        statistics) is dropped. Saved, a tree that learnt a thousand rows shrinks from ~200 MB of skops state
        (13 s to write) to ~0.3 MB. Its leaves answer with their majority class (where the learner's may use
        naive Bayes), so the copy, not the learner, is what is judged and served.

        >>> import pandas as pd
        >>> from river import tree
        >>> x = pd.DataFrame({"a": [0.0, 1.0, 0.1, 0.9] * 50})
        >>> learner = OnlineClassifier(tree.HoeffdingTreeClassifier(grace_period=20))
        >>> snapshot = learner.fit(x, np.array([0, 1, 0, 1] * 50)).frozen()
        >>> snapshot.predict(x[:4]).tolist(), learner.model_.n_active_leaves > 0, snapshot.model_.n_active_leaves
        ([0, 1, 0, 1], True, 0)
        """
        # the split statistics are most of a tree: copied as nothing (deepcopy's memo), not copied then dropped
        tree = _tree(self.model_)
        memo: dict[int, Any] = {}
        for node in tree._root.iter_dfs() if tree is not None and tree._root is not None else []:
            if isinstance(getattr(node, "splitters", None), dict):
                # a leaf deactivated has none; a branch of an extremely fast tree keeps them to revisit its split
                memo[id(node.splitters)] = None if hasattr(node, "deactivate") else {}
        snapshot = copy.deepcopy(self, memo)
        copied = _tree(snapshot.model_)
        if copied is not None and copied._root is not None:
            copied._deactivate_all_leaves()  # its counts of active leaves follow
        return snapshot

    def partial_fit(self, x: Any, y: Any, sample_weight: Any = None) -> _Online:
        """Learn each row once, in order; with weights, as river's ``w`` where the model takes one."""
        if sample_weight is not None and "w" not in inspect.signature(self.model_.learn_one).parameters:
            raise TypeError(f"{type(self.river_estimator).__name__} learns with no sample weight")
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        for row, target, weight in zip(self._rows(x), np.asarray(y).tolist(), weights.tolist(), strict=True):
            self.model_.learn_one(row, target, **({} if sample_weight is None else {"w": weight}))
        return self


class OnlineClassifier(ClassifierMixin, _Online):
    """A river classifier: classes and their probabilities, as scikit-learn's classifiers give them."""

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> OnlineClassifier:
        self._start(x)
        self.classes_ = np.unique(np.asarray(y))
        return self.partial_fit(x, y, sample_weight)

    def partial_fit(self, x: Any, y: Any, sample_weight: Any = None) -> OnlineClassifier:
        """Learn on; a class first seen now joins ``classes_`` (an online learner may start from one)."""
        self.classes_ = np.union1d(self.classes_, np.unique(np.asarray(y)))
        super().partial_fit(x, y, sample_weight)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        """One row per record, one column per class in ``classes_``; uniform before any learning."""
        classes = self.classes_.tolist()
        shares = np.array([[p.get(c, 0.0) for c in classes] for p in map(self.model_.predict_proba_one, self._rows(x))])
        shares = shares.reshape(-1, len(classes))
        totals = shares.sum(axis=1, keepdims=True)
        return np.where(totals > 0, shares / np.where(totals > 0, totals, 1), 1 / len(classes))

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


class OnlineRegressor(RegressorMixin, _Online):
    """A river regressor: one value per record."""

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> OnlineRegressor:
        self._start(x)
        return self.partial_fit(x, y, sample_weight)

    def predict(self, x: Any) -> np.ndarray:
        return np.array([float(self.model_.predict_one(row)) for row in self._rows(x)])


def online(river_estimator: Any, task: str) -> _Online:
    """The river estimator wrapped for its task."""
    return OnlineRegressor(river_estimator) if task == "regression" else OnlineClassifier(river_estimator)
