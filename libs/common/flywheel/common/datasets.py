"""Where dataset versions live in the object store, and how to read them back.

Ingestion writes versions; training (and anyone) reads them. A version is
immutable and content-addressed: ``datasets/<dataset>/<version>/data.parquet``
beside its ``manifest.json``; ``version`` is a prefix of the data's sha256.
Each version holds the rows sealed into it and names its parent version.

Labels are data of the same kind: batches of outcomes sealed from the ``labels`` topic
live under ``labels/<dataset>/<version>/`` with the same manifest (``kind: labels``);
``DatasetCatalog.labels(store)`` reads them.
"""

from __future__ import annotations

import json

import pandas as pd

from flywheel.common.objectstore import ObjectStore
from flywheel.schemas import DatasetManifest

PREFIX = "datasets"
LABELS_PREFIX = "labels"


def data_key(dataset: str, version: str, prefix: str = PREFIX) -> str:
    return f"{prefix}/{dataset}/{version}/data.parquet"


def manifest_key(dataset: str, version: str, prefix: str = PREFIX) -> str:
    return f"{prefix}/{dataset}/{version}/manifest.json"


class DatasetCatalog:
    """Read access to the dataset versions (or, under ``labels/``, the label batches) in the object store."""

    def __init__(self, store: ObjectStore, prefix: str = PREFIX) -> None:
        self.store, self.prefix = store, prefix

    @classmethod
    def labels(cls, store: ObjectStore) -> DatasetCatalog:
        """The catalog of sealed label batches."""
        return cls(store, LABELS_PREFIX)

    def datasets(self) -> list[str]:
        """The names of the datasets (or labelled datasets) with at least one sealed version."""
        keys = self.store.list_keys(f"{self.prefix}/")
        return sorted({k.split("/")[1] for k in keys if k.endswith("/manifest.json") and k.count("/") == 3})

    def manifests(self, dataset: str) -> list[DatasetManifest]:
        """Every version's manifest of a dataset, oldest first (by creation time)."""
        keys = [k for k in self.store.list_keys(f"{self.prefix}/{dataset}/") if k.endswith("/manifest.json")]
        found = [DatasetManifest.model_validate_json(self.store.get_bytes(k)) for k in keys]
        return sorted(found, key=lambda m: (m.created_at is None, m.created_at, m.version))

    def manifest(self, dataset: str, version: str) -> DatasetManifest:
        key = manifest_key(dataset, version, self.prefix)
        if not self.store.exists(key):
            raise KeyError(f"no version {version!r} of dataset {dataset!r}")
        return DatasetManifest.model_validate_json(self.store.get_bytes(key))

    def latest(self, dataset: str) -> DatasetManifest | None:
        found = self.manifests(dataset)
        return found[-1] if found else None

    def load(self, dataset: str, version: str) -> pd.DataFrame:
        return self.store.get_parquet(data_key(dataset, version, self.prefix))

    def write(self, manifest: DatasetManifest, parquet: bytes) -> None:
        """Store a sealed version: data first, manifest last, so a manifest always has its data."""
        self.store.put_bytes(
            data_key(manifest.dataset, manifest.version, self.prefix), parquet, "application/vnd.apache.parquet"
        )
        self.store.put_bytes(
            manifest_key(manifest.dataset, manifest.version, self.prefix),
            json.dumps(manifest.model_dump(mode="json"), indent=2).encode(),
            "application/json",
        )
