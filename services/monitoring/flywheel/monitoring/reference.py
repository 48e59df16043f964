"""Loading the reference: the features of the data the champion was trained on.

The rows are exactly the champion's training rows, as training recorded them with its run
(``flywheel.common.trainingdata``: every version it read and which of their rows it fit on),
not the newest version alone. They are computed with the feature-set version pinned to the
champion's run (not today's ``features.yaml``), so the reference is what that model saw in
training, and its traffic, logged with the same version by serving, is compared like with like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import feature_set_of_run
from flywheel.common.trainingdata import load_training_data, training_data_of_run
from flywheel.monitoring.monitor import Reference

CATEGORICAL_TRANSFORMS = {"one_hot", "bucket"}
TASK_TAG = "flywheel.task"  # training's run tag; runs from before regression have none: classifiers


def judged_by(tags: dict[str, str], metrics: dict[str, float]) -> dict[str, Any]:
    """The champion's task and the training figure its labels are judged against: accuracy, or a
    regressor's MAE (both from the run's out-of-time slice, like the figures served labels give).

    >>> judged_by({}, {"accuracy": 0.9})
    {'task': 'classification', 'train_accuracy': 0.9, 'train_mae': None}
    >>> judged_by({"flywheel.task": "regression"}, {"mae": 2.5, "rmse": 3.1})
    {'task': 'regression', 'train_accuracy': None, 'train_mae': 2.5}
    """
    if tags.get(TASK_TAG) == "regression":
        return {"task": "regression", "train_accuracy": None, "train_mae": metrics.get("mae")}
    return {"task": "classification", "train_accuracy": metrics.get("accuracy"), "train_mae": None}


def categorical_features(feature_set: FeatureSet, datasets_dir: Path) -> set[str]:
    """Features that take a few discrete values: one-hot, buckets, and categorical inputs."""
    contract = load_contracts(datasets_dir).get(feature_set.dataset)
    categorical_columns = {
        name for name, rule in (contract.columns.items() if contract else []) if rule.categories is not None
    }
    return {
        f.name
        for f in feature_set.features
        if f.transform in CATEGORICAL_TRANSFORMS or (f.transform == "identity" and f.inputs[0] in categorical_columns)
    }


def load_reference(
    client: MlflowClient, catalog: DatasetCatalog, datasets_dir: Path, model_name: str
) -> Reference | None:
    """The champion's training data as per-feature samples; None while there is no champion."""
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None
    run = client.get_run(version.run_id)
    data = training_data_of_run(client, run)
    if data is None or not data.known:
        return None
    feature_set = feature_set_of_run(client, run, lambda: load_feature_set(datasets_dir, data.dataset))
    features = feature_set.frame(load_training_data(catalog.load, data))
    return Reference(
        model_name=model_name,
        model_version=str(version.version),
        dataset=data.dataset,
        dataset_version=",".join(data.versions) or "learnt online",
        features={name: features[name].to_numpy(dtype=float) for name in feature_set.names},
        categorical=categorical_features(feature_set, datasets_dir),
        feature_set_version=feature_set.version,
        **judged_by(run.data.tags, run.data.metrics),
    )
