"""The data a model was trained on, recorded with its MLflow run: written by training, read by monitoring.

One helper for both sides, so the reference monitoring judges traffic against is exactly
the rows the model was fit on, not "the newest version" nor a comma list in a tag:

- ``training_data/versions.json``: the dataset and every version the run read, oldest first,
  and the sealed label batches joined to them (a rebuild joins exactly those again);
- ``training_data/rows.parquet``: the training rows as ``(version, row)`` pairs, ``row``
  being the row's position in that version's ``data.parquet`` (versions are immutable, so
  a position names one row for ever; no record id is needed);
- ``training_data/learned.parquet``: an online snapshot's learnt rows themselves (raw inputs and label):
  it learnt labelled answers, which lie in no dataset version;
- the tag ``flywheel.dataset_versions``: the same versions as a JSON list, for searches
  (left out when it would not fit an MLflow tag); ``flywheel.dataset_version`` stays the
  newest version alone.

A run logged before this module has neither artifact: its versions come from the
``flywheel.dataset_version`` tag (a comma list) and every row of them counts.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from flywheel.common.tracking import Tags

VERSIONS_ARTIFACT = "training_data/versions.json"
ROWS_ARTIFACT = "training_data/rows.parquet"
LEARNED_ARTIFACT = "training_data/learned.parquet"
VERSIONS_TAG = "flywheel.dataset_versions"
TAG_LIMIT = 5000
VERSION, ROW = "version", "row"


@dataclass(frozen=True)
class TrainingData:
    """Which rows of which dataset versions a model was fit on.

    >>> data = TrainingData("d", ("a", "b"), pd.DataFrame({"version": ["a", "b", "b"], "row": [1, 0, 2]}))
    >>> frames = {"a": pd.DataFrame({"x": [10, 11]}), "b": pd.DataFrame({"x": [20, 21, 22]})}
    >>> data.select(frames)["x"].tolist()
    [11, 20, 22]
    >>> TrainingData("d", ("a",)).select(frames)["x"].tolist()
    [10, 11]
    """

    dataset: str
    versions: tuple[str, ...]
    rows: pd.DataFrame | None = None  # columns version, row; None: every row of the versions
    label_batches: tuple[str, ...] | None = None  # None: not recorded (a run logged before they were)
    learned: pd.DataFrame | None = None  # an online snapshot's learnt rows (in no version)

    @property
    def known(self) -> bool:
        """Whether any rows are named: versions, or learnt rows."""
        return bool(self.versions) or self.learned is not None

    def select(self, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """The training rows out of the versions' frames (by version), in the order of ``versions``."""
        parts = []
        for version in self.versions:
            frame = frames[version].reset_index(drop=True)
            if self.rows is not None:
                positions = self.rows.loc[self.rows[VERSION] == version, ROW].astype(int).sort_values()
                frame = frame.iloc[positions.to_numpy()]
            parts.append(frame)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def row_count(self) -> int | None:
        return None if self.rows is None else len(self.rows)


def record_training_data(data: TrainingData) -> None:
    """Record the training data with the active MLflow run (artifacts and tags)."""
    recorded = {"dataset": data.dataset, "versions": list(data.versions), "rows": data.row_count}
    if data.label_batches is not None:
        recorded["label_batches"] = list(data.label_batches)
    mlflow.log_dict(recorded, VERSIONS_ARTIFACT)
    frames = {}
    if data.rows is not None:
        frames[ROWS_ARTIFACT] = pd.DataFrame(
            {VERSION: data.rows[VERSION].astype(str), ROW: data.rows[ROW].astype("int64")}
        )
    if data.learned is not None:
        frames[LEARNED_ARTIFACT] = data.learned
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, frame in frames.items():
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), str(Path(artifact).parent))
    listed = json.dumps(list(data.versions))
    tags = {Tags.DATASET: data.dataset, Tags.DATASET_VERSION: data.versions[-1] if data.versions else ""}
    if len(listed) <= TAG_LIMIT:
        tags[VERSIONS_TAG] = listed
    mlflow.set_tags(tags)


def versions_of_tags(tags: Mapping[str, str]) -> tuple[str, ...]:
    """The versions a run's tags name: the JSON list, else the (legacy) comma list of ``dataset_version``.

    >>> versions_of_tags({"flywheel.dataset_versions": '["a", "b"]', "flywheel.dataset_version": "b"})
    ('a', 'b')
    >>> versions_of_tags({"flywheel.dataset_version": "a,b"})
    ('a', 'b')
    """
    listed = tags.get(VERSIONS_TAG)
    if listed:
        return tuple(json.loads(listed))
    return tuple(v for v in tags.get(Tags.DATASET_VERSION, "").split(",") if v)


def training_data_of_run(client: Any, run: Any) -> TrainingData | None:
    """What ``run`` was trained on, read back from its artifacts (or, for older runs, its tags); None: unknown."""
    run_id, tags = run.info.run_id, run.data.tags
    dataset = tags.get(Tags.DATASET)
    if not dataset:
        return None
    listed = {a.path for a in client.list_artifacts(run_id, str(Path(VERSIONS_ARTIFACT).parent))}
    if VERSIONS_ARTIFACT not in listed:
        versions = versions_of_tags(tags)
        return TrainingData(dataset, versions) if versions else None
    with tempfile.TemporaryDirectory() as tmp:
        recorded = json.loads(Path(client.download_artifacts(run_id, VERSIONS_ARTIFACT, tmp)).read_text())
        rows = learned = None
        if ROWS_ARTIFACT in listed:
            rows = pd.read_parquet(client.download_artifacts(run_id, ROWS_ARTIFACT, tmp))
        if LEARNED_ARTIFACT in listed:
            learned = pd.read_parquet(client.download_artifacts(run_id, LEARNED_ARTIFACT, tmp))
    batches = recorded.get("label_batches")
    return TrainingData(
        recorded["dataset"],
        tuple(recorded["versions"]),
        rows,
        tuple(batches) if batches is not None else None,
        learned,
    )


def load_training_data(load: Callable[[str, str], pd.DataFrame], data: TrainingData) -> pd.DataFrame:
    """The training rows themselves; ``load(dataset, version)`` reads a version (``DatasetCatalog.load``)."""
    if data.learned is not None:
        return data.learned
    return data.select({v: load(data.dataset, v) for v in data.versions})
