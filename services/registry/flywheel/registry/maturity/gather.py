"""Gathering the maturity evidence from the running system: manifests in MinIO, versions and runs in MLflow,
events on Kafka. Reads only; the judging is ``flywheel.registry.maturity.report``'s.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog
from mlflow.exceptions import MlflowException

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.history import read_events
from flywheel.common.tracking import Tags
from flywheel.registry.maturity.evidence import DataVersion, Evidence, TrainedVersion
from flywheel.registry.modelstore import ModelStore
from flywheel.schemas import (
    ALERTS,
    MODELS_CHAMPION,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    PREDICTIONS,
    RECORDS_REJECTED,
    Topic,
)

log = structlog.get_logger(__name__)

FINGERPRINT = "flywheel.fingerprint"  # training's run tag (flywheel.training.runner.FINGERPRINT_TAG)
TRIGGER = "flywheel.trigger"
CHAMPION_AT_GATE = "flywheel.champion_at_gate"
VERSIONS_PER_MODEL = 50  # the newest: enough to show what a model's loop does, bounded on a long-lived registry
# Busy topics are read from their newest messages only: evidence needs recent examples, not the whole log.
NEWEST_PER_PARTITION = {PREDICTIONS.name: 200, RECORDS_REJECTED.name: 200}
FULL_TOPICS = (MODELS_ROLLOUT, MODELS_CHAMPION, MONITORING_DRIFT, ALERTS)


class ObjectStoreFailed(OSError):
    """The object store could not list or read manifests (the route answers 503)."""


def trained_version(described: dict[str, Any], run: Any | None) -> TrainedVersion:
    """A version as ``ModelStore.describe_version`` shows it, with what its run (if MLflow still has it) recorded."""
    tags = run.data.tags if run is not None else {}
    return TrainedVersion(
        model_name=described["name"],
        version=described["version"],
        run_id=described["run_id"],
        created_at=datetime.fromisoformat(described["created_at"]),
        status=described["status"],
        gates={str(g.get("gate")): bool(g.get("passed")) for g in described["gates"]},
        champion_at_gate=described["tags"].get(CHAMPION_AT_GATE) or None,
        trigger=tags.get(TRIGGER),
        dataset=tags.get(Tags.DATASET) or described["tags"].get(Tags.DATASET),
        dataset_version=tags.get(Tags.DATASET_VERSION),
        params=len(run.data.params) if run is not None else 0,
        metrics=len(run.data.metrics) if run is not None else 0,
        code_version=tags.get(Tags.CODE_VERSION),
        seed=tags.get(Tags.SEED),
        fingerprint=tags.get(FINGERPRINT),
        feature_set_version=tags.get(Tags.FEATURE_SET_VERSION) or None,
    )


def registered_versions(store: ModelStore, model: str | None) -> list[TrainedVersion]:
    """The newest versions of ``model`` (raises ``NotFound`` for an unknown one), or of every model."""
    found = []
    for name in [model] if model else store.names():
        for described in store.describe(name)["versions"][:VERSIONS_PER_MODEL]:
            try:
                run = store.run(described["run_id"])
            except MlflowException as exc:  # a deleted run: the version still counts, without its run's record
                log.info("run of a version unreadable", model_name=name, run_id=described["run_id"], error=str(exc))
                run = None
            found.append(trained_version(described, run))
    return found


def sealed_versions(catalogs: list[DatasetCatalog], datasets: set[str] | None) -> list[DataVersion]:
    """Every sealed version's manifest (records and label batches) of ``datasets`` (None: of all datasets)."""
    try:
        return [
            DataVersion(
                dataset=m.dataset,
                version=m.version,
                rows=m.row_count,
                created_at=m.created_at,
                kind=m.kind,
                contract_version=m.contract_version,
            )
            for catalog in catalogs
            for dataset in catalog.datasets()
            if datasets is None or dataset in datasets
            for m in catalog.manifests(dataset)
        ]
    except Exception as exc:  # MinIO's client raises its own errors, not OSError
        raise ObjectStoreFailed(f"the object store failed listing dataset versions: {exc}"[:300]) from exc


async def topic_events(bootstrap_servers: str, topic: Topic) -> list[Any]:
    last = NEWEST_PER_PARTITION.get(topic.name)
    return [e async for e in read_events(bootstrap_servers, topic, **({"last": last} if last else {}))]


async def gather(
    store: ModelStore, catalog: DatasetCatalog, bootstrap_servers: str, model: str | None = None
) -> Evidence:
    """The evidence of the whole deployment, or of one model and the datasets it was trained on."""
    versions = await asyncio.to_thread(registered_versions, store, model)
    datasets = {v.dataset for v in versions if v.dataset} if model else None
    catalogs = [catalog, DatasetCatalog.labels(catalog.store)]
    sealed = asyncio.to_thread(sealed_versions, catalogs, datasets)
    topics = (*FULL_TOPICS, PREDICTIONS, RECORDS_REJECTED)
    read = await asyncio.gather(sealed, *(topic_events(bootstrap_servers, t) for t in topics))
    data, rollouts, champions, drifts, alerts, predictions, rejected = read
    return Evidence(
        datasets=tuple(data),
        versions=tuple(versions),
        rejected=tuple(rejected),
        predictions=tuple(predictions),
        rollouts=tuple(rollouts),
        champions=tuple(champions),
        drifts=tuple(drifts),
        alerts=tuple(alerts),
    )
