"""Feature-set versions pinned to models, and kept immutable in the object store.

A feature set's version is its content hash (``FeatureSet.version``). Two places keep
every version a model was trained with, so an edited ``features.yaml`` never changes what
an existing model is fed:

- **with the model**: training logs the whole definition as the run artifact
  ``feature_set.json`` and tags the run ``flywheel.feature_set_version`` with its hash.
  ``feature_set_of_run`` reads it back, checked against the tag: serving scores a model
  with it, monitoring computes the model's reference with it.
- **in the object store**: ``feature-sets/<dataset>/<version>.json``, written once by
  whoever meets a version first (training, the features service on start). A reader
  that holds no run (the features service, asked for a version) finds any version here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import structlog
from mlflow import MlflowClient

from flywheel.common.featuresets import FeatureSet, pinned
from flywheel.common.objectstore import ObjectStore
from flywheel.common.tracking import Tags

log = structlog.get_logger(__name__)

ARTIFACT = "feature_set.json"
PREFIX = "feature-sets"


def log_feature_set(features: FeatureSet) -> None:
    """Pin the feature set to the active MLflow run: its whole definition and its version tag."""
    mlflow.log_dict(features.definition(), ARTIFACT)
    mlflow.set_tags({Tags.FEATURE_SET: features.feature_set, Tags.FEATURE_SET_VERSION: features.version})


def feature_set_of_run(client: MlflowClient, run: Any, legacy: Callable[[], FeatureSet]) -> FeatureSet:
    """The feature set a run's model was trained with, exactly (checked against the run's version tag).

    A run logged before feature sets were pinned has no definition: ``legacy()`` (today's
    ``features.yaml``) is the best there is, and the log says so.
    """
    run_id = run.info.run_id
    if ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        log.warning("model trained before feature sets were pinned; using today's definition", run_id=run_id)
        return legacy()
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, ARTIFACT, tmp)
        definition = json.loads(Path(path).read_text())
    version = run.data.tags.get(Tags.FEATURE_SET_VERSION) or definition.get("version", "")
    return pinned(definition, version)


class FeatureSetArchive:
    """Every feature-set version met so far, immutable, at ``feature-sets/<dataset>/<version>.json``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def key(dataset: str, version: str) -> str:
        return f"{PREFIX}/{dataset}/{version}.json"

    def put(self, features: FeatureSet) -> str:
        """Keep a version (once: the same version is the same content); its key."""
        key = self.key(features.dataset, features.version)
        if not self.store.exists(key):
            body = json.dumps(features.definition(), indent=2, sort_keys=True).encode()
            self.store.put_bytes(key, body, "application/json")
        return key

    def get(self, dataset: str, version: str) -> FeatureSet | None:
        """A kept version, checked against its name; None when it was never kept."""
        key = self.key(dataset, version)
        if not self.store.exists(key):
            return None
        return pinned(json.loads(self.store.get_bytes(key)), version)

    def versions(self, dataset: str) -> list[str]:
        """The versions kept for a dataset (in key order, not time order)."""
        prefix = f"{PREFIX}/{dataset}/"
        return [k[len(prefix) : -len(".json")] for k in self.store.list_keys(prefix) if k.endswith(".json")]
