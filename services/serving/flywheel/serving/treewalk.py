"""A histogram gradient-boosting model's trees walked all together, for a few rows.

scikit-learn predicts one tree at a time, and each tree costs a call (~8 µs here) whatever the rows: a single
record's answer from the loans model's 200 trees takes ~1.6 ms, nearly all of it calls. Walking every tree at
once with numpy, one level of all of them per step, answers it in ~35 µs. Per row the walk costs more than
scikit-learn's compiled loop, so it only takes batches whose rows times the trees' depth stay under ``BUDGET``
(about half of where the two cross on this machine); bigger ones go to the estimator.

The answers are scikit-learn's own, to the bit: the same comparisons (a missing value goes the way the split
learnt), the leaves added in the same order from the same baseline, and the estimator's own link from raw
scores to probabilities or values. A model the walk does not cover (categorical splits, a preprocessor, not a
histogram gradient-boosting model) is always scored by the estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

BUDGET = 512  # rows x depth: the loans model (depth 4) is walked up to 128 rows; the two cross at ~250


class TreeWalk:
    """The estimator's ``predict`` / ``predict_proba``, walking its trees together when a batch is small."""

    def __init__(self, estimator: Any, nodes: np.ndarray, sizes: list[int]) -> None:
        self.estimator = estimator
        self.trees = len(sizes)
        self.classes = estimator.n_trees_per_iteration_
        self.roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        offset = np.repeat(self.roots, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        itself = np.arange(len(nodes), dtype=np.intp)
        # a node's children side by side, right then left, so that a step is one lookup: children[2 * node + left];
        # a leaf leads to itself, so every tree can take the same number of steps
        self.children = np.empty(2 * len(nodes), dtype=np.intp)
        self.children[0::2] = np.where(leaf, itself, nodes["right"].astype(np.intp) + offset)
        self.children[1::2] = np.where(leaf, itself, nodes["left"].astype(np.intp) + offset)
        self.feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.value = nodes["value"]
        self.depth = int(nodes["depth"].max())
        self.baseline = np.broadcast_to(estimator._baseline_prediction, (1, self.classes)).astype(self.value.dtype)

    @classmethod
    def of(cls, estimator: Any) -> TreeWalk | None:
        """The walk of a fitted histogram gradient-boosting model with numeric splits only; None for any other."""
        if not isinstance(estimator, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
            return None
        predictors = getattr(estimator, "_predictors", None)
        if not predictors or getattr(estimator, "_preprocessor", None) is not None:
            return None
        trees = [predictor.nodes for iteration in predictors for predictor in iteration]
        nodes = np.concatenate(trees)
        if nodes["is_categorical"][~nodes["is_leaf"].astype(bool)].any():
            return None
        return cls(estimator, nodes, [len(tree) for tree in trees])

    def covers(self, matrix: np.ndarray) -> bool:
        """Whether the walk scores these rows: some but few enough, with as many features as the model was fitted
        with (the estimator says what is wrong with any other)."""
        return (
            matrix.ndim == 2
            and matrix.shape[1] == self.estimator.n_features_in_
            and 0 < matrix.shape[0] * max(self.depth, 1) <= BUDGET
        )

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """The raw scores, (rows, trees per iteration): the baseline plus each tree's leaf, in the trees' order."""
        flat = matrix.ravel()
        starts = (np.arange(matrix.shape[0]) * matrix.shape[1])[:, None]  # each row's first value in ``flat``
        missing = bool(np.isnan(flat).any())
        node = np.broadcast_to(self.roots, (matrix.shape[0], self.trees))
        for _ in range(self.depth):
            value = flat[starts + self.feature[node]]
            left = value <= self.threshold[node]  # False for a missing value, which goes the way its split learnt
            if missing:
                left |= np.isnan(value) & self.missing_left[node]
            node = self.children[2 * node + left]
        leaves = self.value[node]
        raw = np.empty((matrix.shape[0], self.classes), dtype=self.value.dtype)
        for k in range(self.classes):  # a running sum, as scikit-learn adds one tree at a time
            start = np.broadcast_to(self.baseline[:, k], (len(raw), 1))
            raw[:, k] = np.cumsum(np.concatenate([start, leaves[:, k :: self.classes]], axis=1), axis=1)[:, -1]
        return raw

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if not self.covers(matrix):
            return self.estimator.predict_proba(matrix)
        return self.estimator._loss.predict_proba(self.raw(matrix))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if not self.covers(matrix):
            return self.estimator.predict(matrix)
        raw = self.raw(matrix)
        if isinstance(self.estimator, HistGradientBoostingRegressor):
            return self.estimator._loss.link.inverse(raw.ravel())
        encoded = (raw.ravel() > 0).astype(int) if self.classes == 1 else np.argmax(raw, axis=1)
        return self.estimator.classes_[encoded]
