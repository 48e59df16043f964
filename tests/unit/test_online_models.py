"""River online models as a model kind: trained row by row, saved without pickle, loaded as serving loads them.

A real MLflow (a local SQLite store) and the training runner; only the object store is in memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import get_model_info

from flywheel.common.featuresets import load_feature_set
from flywheel.common.modelspec import ModelSpec
from flywheel.common.safemodels import load_estimator
from flywheel.common.tracking import Tags
from flywheel.training.runner import TrainingError, trusted_types
from tests.unit import test_training_oot
from tests.unit.test_ingestion_versions import MemoryStore
from tests.unit.test_training_oot import DATASETS, HISTORY, agrawal, context, put, request, run_once

tracking = test_training_oot.tracking  # the same real MLflow (SQLite) per test


@pytest.fixture
def one_concept() -> MemoryStore:
    store = MemoryStore()
    put(store, "v1", agrawal(1200, 0, seed=3, start=HISTORY), HISTORY, None)
    return store


def test_a_river_model_learns_row_by_row_and_is_saved_with_skops_and_served_as_any_model(one_concept, tracking):
    client, _ = tracking
    ctx = context(one_concept, tracking, models=("online",))
    trained = run_once(ctx, request("online", model_spec="online"))

    info = get_model_info(trained.model_uri)
    flavour = info.flavors["sklearn"]
    assert flavour["serialization_format"] == "skops"  # never pickle
    assert "flywheel.common.online.OnlineClassifier" in flavour["skops_trusted_types"]
    assert any(t.startswith("river.tree.") for t in flavour["skops_trusted_types"])
    run = client.get_run(trained.run_id)
    assert run.data.params["estimator"] == "river.tree.HoeffdingTreeClassifier"
    assert run.data.tags[Tags.MODEL_SPEC] == "online"

    # loaded as serving and the registry load every model: the wrapped river tree, answering a matrix
    model = load_estimator(trained.model_uri)
    assert type(model).__name__ == "OnlineClassifier" and type(model.model_).__name__ == "HoeffdingTreeClassifier"
    rows = agrawal(200, 0, seed=9, start=HISTORY)
    matrix = np.asarray(load_feature_set(DATASETS, "loans").frame(rows), dtype=float)
    probabilities = model.predict_proba(matrix)
    assert probabilities.shape == (200, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    accuracy = (model.predict(matrix) == rows["approved"].to_numpy()).mean()
    assert accuracy > 0.9 and trained.metrics["accuracy"] > trained.metrics["baseline_accuracy"], trained.metrics


def test_a_retrain_naming_no_spec_uses_the_champions_own(one_concept, tracking):
    client, _ = tracking
    ctx = context(one_concept, tracking, models=("kinds", "plain"))
    first = run_once(ctx, request("kinds", model_spec="online"))
    client.create_registered_model("kinds")
    registered = client.create_model_version("kinds", first.model_uri, first.run_id)
    client.set_registered_model_alias("kinds", "champion", registered.version)

    again = run_once(ctx, request("kinds", trigger="drift"))  # a drift retrain names no spec
    assert client.get_run(again.run_id).data.tags[Tags.MODEL_SPEC] == "online"
    other = run_once(ctx, request("plain", params={"max_iter": 20}))  # no champion: the dataset's default
    assert client.get_run(other.run_id).data.params["estimator"].startswith("sklearn.")


def test_a_river_model_skops_cannot_take_apart_fails_the_run_rather_than_being_pickled():
    spec = ModelSpec(
        model_name="m", dataset="d", label="y", estimator={"path": "river.tree.HoeffdingAdaptiveTreeClassifier"}
    )
    x = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0) % 7})
    model = spec.build().fit(x, (x["a"] > 50).astype(int))
    with pytest.raises(TrainingError, match="HoeffdingAdaptiveTreeClassifier cannot be saved safely"):
        trusted_types(model)


def test_a_river_estimator_takes_river_steps_only():
    spec = ModelSpec(
        model_name="m",
        dataset="d",
        label="y",
        pipeline=[{"path": "sklearn.preprocessing.StandardScaler"}],
        estimator={"path": "river.linear_model.LogisticRegression"},
    )
    with pytest.raises(ValueError, match="river transformers too"):
        spec.build()
