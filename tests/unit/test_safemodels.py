"""Models load safely: skops with the deployment's allow-list, never a pickle, whatever MLmodel says."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from flywheel.common.safemodels import TRUSTED_MODULES, UnsafeModel, load_estimator

X = np.random.default_rng(0).random((60, 3))
Y = (X[:, 0] > 0.5).astype(int)


@pytest.fixture(autouse=True)
def no_pickle_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here relies on MLflow's all-or-nothing switch."""
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)


def saved(model, path: Path, serialization: str = "skops") -> str:
    """Saved as training saves it; its MLmodel lists every type it holds as trusted."""
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model)) if serialization == "skops" else None
    mlflow.sklearn.save_model(model, str(path), serialization_format=serialization, skops_trusted_types=trusted)
    return str(path)


def test_a_trained_model_loads_and_answers_as_it_was_saved(tmp_path: Path):
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, Y)
    loaded = load_estimator(saved(model, tmp_path / "m"))
    assert loaded.predict_proba(X).tolist() == model.predict_proba(X).tolist()


def test_a_type_outside_the_trusted_modules_is_refused_even_when_its_mlmodel_trusts_it(tmp_path: Path):
    """``os.system`` in a FunctionTransformer would run a command on predict: listed as trusted in its
    own MLmodel (MLflow's loader would honour that), it is refused before it is loaded."""
    model = make_pipeline(FunctionTransformer(os.system), HistGradientBoostingClassifier(max_iter=5).fit(X, Y))
    uri = saved(model, tmp_path / "m")
    with pytest.raises(UnsafeModel, match=r"posix\.system"):
        load_estimator(uri)
    assert load_estimator(uri, [*TRUSTED_MODULES, "posix"]).steps[0][1].func is os.system  # an operator may widen it


def test_a_pickled_model_is_refused(tmp_path: Path):
    uri = saved(HistGradientBoostingClassifier(max_iter=5).fit(X, Y), tmp_path / "m", "cloudpickle")
    with pytest.raises(UnsafeModel, match="only skops"):
        load_estimator(uri)
