"""Serving walks a boosted model's trees together for a few rows, and answers as scikit-learn does, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier

from flywheel.serving.treewalk import BUDGET, TreeWalk


def data(rows: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five features, one of them missing a tenth of the time, and a target that needs several splits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    x[rng.random(rows) < 0.1, 2] = np.nan
    signal = x[:, 0] + np.where(np.isnan(x[:, 2]), 1.5, x[:, 2]) * x[:, 1] + rng.normal(scale=0.3, size=rows)
    return x, signal


def unseen(rows: int) -> np.ndarray:
    x, _ = data(rows, seed=1)
    x[0, :] = [np.inf, -np.inf, np.nan, 0.0, 1e300]  # the edges of a comparison go the same way too
    return x


def fitted(model, target: str):
    x, signal = data()
    y = {
        "binary": np.where(signal > 0, "yes", "no"),
        "multiclass": np.digitize(signal, [-1.0, 0.0, 1.0]),
        "regression": signal,
        "counts": np.round(np.exp(signal)),
    }[target]
    return model.fit(x, y)


@pytest.mark.parametrize(
    ("model", "target"),
    [
        (HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0), "binary"),
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), "multiclass"),
        (HistGradientBoostingRegressor(max_iter=60, random_state=0), "regression"),
        (HistGradientBoostingRegressor(max_iter=40, loss="poisson", random_state=0), "counts"),
    ],
)
def test_the_walk_answers_exactly_as_scikit_learn_for_every_batch_it_covers(model, target):
    estimator = fitted(model, target)
    walk = TreeWalk.of(estimator)
    assert walk is not None and walk.depth > 1
    most = BUDGET // walk.depth
    for rows in (1, 2, 7, most):
        x = unseen(rows)
        assert walk.covers(x)
        assert np.array_equal(walk.predict(x), estimator.predict(x))
        if target in ("binary", "multiclass"):
            assert np.array_equal(walk.predict_proba(x), estimator.predict_proba(x))
    assert not walk.covers(unseen(most + 1))  # a bigger batch goes to the estimator, with the same answers
    assert np.array_equal(walk.predict(unseen(most + 1)), estimator.predict(unseen(most + 1)))


def test_a_tree_that_is_one_leaf_answers_its_value():
    x, _ = data()
    estimator = HistGradientBoostingRegressor(max_iter=5).fit(x, np.full(len(x), 3.0))  # nothing to split on
    walk = TreeWalk.of(estimator)
    assert walk is not None
    assert np.array_equal(walk.predict(unseen(3)), estimator.predict(unseen(3)))


def test_rows_of_the_wrong_width_or_none_get_the_estimators_own_error():
    walk = TreeWalk.of(fitted(HistGradientBoostingClassifier(max_iter=10), "binary"))
    with pytest.raises(ValueError, match="features"):
        walk.predict_proba(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="0 sample"):
        walk.predict(np.zeros((0, 5)))


def test_models_the_walk_does_not_cover_are_scored_by_the_estimator():
    x, signal = data()
    categorical = np.column_stack([x[:, :4], (x[:, 4] > 0).astype(float) + (x[:, 4] > 1)])
    with_categories = HistGradientBoostingClassifier(max_iter=10, categorical_features=[4])
    assert TreeWalk.of(with_categories.fit(categorical, signal > 0)) is None
    assert TreeWalk.of(RandomForestClassifier(n_estimators=3).fit(x[:, :2], signal > 0)) is None
    assert TreeWalk.of(HistGradientBoostingClassifier()) is None  # not fitted
