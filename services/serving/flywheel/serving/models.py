"""Models as serving holds them: a scikit-learn estimator and the feature set it was trained with.

The feature set is the version pinned to the model's run, not today's ``features.yaml``: an
edited file is a new version that only models trained with it use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flywheel.common.contracts import DataContract
from flywheel.common.evaluation import task_of
from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import feature_set_of_run
from flywheel.common.modelspec import ModelSpec, RolloutSpec, load_model_spec
from flywheel.common.safemodels import TRUSTED_MODULES, load_estimator
from flywheel.common.tracking import Tags
from flywheel.schemas import Violation
from flywheel.serving.treewalk import TreeWalk

# Serving scores plain rows in the feature set's order (no per-request pandas), which is the order
# the model was fitted in; scikit-learn would warn about the missing column names on every call.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version, ready to score feature rows."""

    name: str
    version: str
    dataset: str
    estimator: Any
    features: FeatureSet
    learns_online: bool = False  # an online challenger learns from its answers: log their inputs
    spec: ModelSpec | None = None  # the spec it was trained with (None: unknown, or its file is gone)
    learning: str = "batch"  # or online: a snapshot of an online challenger

    @property
    def rollout(self) -> RolloutSpec | None:
        """How the spec it was trained with rolls it out."""
        return self.spec.rollout if self.spec is not None else None

    def takes_over_from(self, champion: ServedModel) -> bool:
        """Whether this batch model replaces the online snapshot serving blue-green, as its spec's online challenger
        says (``batch_takes_over``): the snapshot only bridged the drift until the batch recipe was retrained."""
        online = self.spec.online_challenger if self.spec is not None else None
        return self.learning == "batch" and champion.learning == "online" and bool(online and online.batch_takes_over)

    def inputs(self, record: dict[str, Any]) -> dict[str, Any]:
        """The raw inputs of ``record`` this model reads, for the prediction log of a model learnt online beside."""
        return {name: record.get(name) for name in self.features.inputs} if self.learns_online else {}

    def rows(self, records: list[dict[str, Any]]) -> list[list[float]]:
        """Feature rows of raw records, computed with this model's own feature-set version."""
        return self.features.matrix(records)

    @cached_property
    def task(self) -> str:
        """``regression`` or ``classification``: what its answers are, read off the estimator as training does."""
        return task_of(self.estimator)

    @cached_property
    def predictor(self) -> Any:
        """What scores its rows: the estimator, or its trees walked together for a few rows (``treewalk``)."""
        return TreeWalk.of(self.estimator) or self.estimator

    def score(self, rows: list[list[float]]) -> tuple[list[Any], list[float | None]]:
        """Predictions for feature rows (no pandas), and a classifier's probability of the positive class.

        A regressor's prediction is its value (a float; None where it is not finite), with no probability.
        """
        matrix = np.asarray(rows, dtype=float)
        if self.task == "regression":
            values = np.asarray(self.predictor.predict(matrix), dtype=float).reshape(len(rows))
            return [float(v) if math.isfinite(v) else None for v in values], [None] * len(rows)
        if hasattr(self.estimator, "predict_proba"):
            probabilities = self.predictor.predict_proba(matrix)
            classes = self.estimator.classes_
            picked = probabilities.argmax(axis=1)
            positive = probabilities[:, -1]
            return [_plain(classes[i]) for i in picked], [float(p) for p in positive]
        return [_plain(p) for p in self.predictor.predict(matrix)], [None] * len(rows)


def inputs_violations(
    model: ServedModel, contract: DataContract | None, records: list[dict[str, Any]]
) -> list[list[Violation]]:
    """The contract rules each record breaks in the columns the model reads (no answer can be made from one that
    breaks any), the batch checked a column at a time."""
    if contract is None:
        return [[] for _ in records]
    return contract.violations_in_many(records, model.features.inputs)


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-friendly Python values."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def served_models(datasets_dir: Path) -> dict[str, ModelSpec]:
    """Model name -> its spec, for every ``datasets/<name>/model.yaml``."""
    found = {}
    for spec_file in sorted(Path(datasets_dir).glob("*/model.yaml")):
        spec = load_model_spec(datasets_dir, spec_file.parent.name)
        found[spec.model_name] = spec
    return found


def spec_of_run(datasets_dir: Path, dataset: str, spec: str | None) -> ModelSpec | None:
    """The spec a run names; None when it names none or its file is gone or unreadable."""
    if not spec:
        return None
    try:
        return load_model_spec(datasets_dir, dataset, spec)
    except Exception:  # missing, unreadable or invalid: the model serves as any other, by serving's settings
        return None


def load_version(
    client: MlflowClient,
    datasets_dir: Path,
    name: str,
    version: str | None = None,
    alias: str | None = None,
    trusted: Iterable[str] = TRUSTED_MODULES,
) -> ServedModel | None:
    """Load a registered version (by number or alias) and warm it up; None when the alias is unset.

    Only a skops model whose types are all in ``trusted`` modules loads (``flywheel.common.safemodels``).
    """
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        return None
    run = client.get_run(found.run_id)
    dataset = run.data.tags.get("flywheel.dataset") or name
    features = feature_set_of_run(client, run, lambda: load_feature_set(datasets_dir, dataset))
    estimator = load_estimator(f"models:/{name}/{found.version}", trusted)
    tags = run.data.tags
    spec = spec_of_run(datasets_dir, dataset, tags.get(Tags.MODEL_SPEC))
    learns_online, learning = tags.get(Tags.LEARNS_ONLINE) == "true", tags.get(Tags.LEARNING, "batch")
    model = ServedModel(name, str(found.version), dataset, estimator, features, learns_online, spec, learning)
    model.score([[0.0] * len(model.features.names)])  # warm up before it takes traffic
    return model
