"""One training run end to end, in a worker thread: resolve data, fit, log to MLflow, report.

Returns the event to publish (``ModelTrained`` or ``TrainingFailed``), or raises what a retry
may cure; retrying and publishing are the orchestrator's.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import structlog
from mlflow import MlflowClient
from mlflow.models import infer_signature

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import FeatureSetArchive, log_feature_set
from flywheel.common.modelspec import ModelSpec, load_model_spec
from flywheel.common.offline import LABEL_COLUMNS, LabelJoin, attach_labels
from flywheel.common.tracking import Tags
from flywheel.schemas import DatasetManifest, Lineage, ModelTrained, TrainingFailed, TrainModel
from flywheel.training.arrivals import Arrivals
from flywheel.training.trainer import Progress, Trained, TrainingError, fit_and_evaluate

log = structlog.get_logger(__name__)

PRODUCER = "training"
EVAL_ARTIFACT = "eval/eval.parquet"
MERGED_TAG = "flywheel.merged_request_ids"
JOB_TAG = "flywheel.training_run"
FAILURE_TAG = "flywheel.failure_reason"
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class RunContext:
    """What a run needs from the outside world, built once by the composition root."""

    catalog: DatasetCatalog
    mlflow: MlflowClient
    datasets_dir: Path
    code_version: str
    experiment_prefix: str = "flywheel"
    importance_repeats: int = 5
    drift_fresh_rows: int = 0
    drift_fresh_timeout_s: float = 0.0
    labels: DatasetCatalog | None = None  # sealed label batches; None: the records' own labels only
    arrivals: Arrivals = field(default_factory=Arrivals)


def causation_chain(request: TrainModel) -> list[str]:
    """Event ids from the trigger to this request, oldest first."""
    return [*request.causation_chain, str(request.event_id)]


def resolve_spec(ctx: RunContext, request: TrainModel) -> tuple[ModelSpec, FeatureSet]:
    spec = load_model_spec(ctx.datasets_dir, request.dataset, request.model_spec).with_overrides(request.params)
    features = load_feature_set(ctx.datasets_dir, request.dataset)
    if spec.feature_set and spec.feature_set != features.feature_set:
        raise TrainingError(f"spec wants feature set {spec.feature_set!r}, features.yaml is {features.feature_set!r}")
    return spec, features


def resolve_versions(catalog: DatasetCatalog, dataset: str, version: str | None, window: int) -> list[DatasetManifest]:
    """The requested version (default: newest) and the ``window - 1`` versions before it, oldest first."""
    manifests = catalog.manifests(dataset)
    if not manifests:
        raise TrainingError(f"no dataset version of {dataset!r} yet")
    if version is None:
        end = len(manifests) - 1
    else:
        found = [i for i, m in enumerate(manifests) if m.version == version]
        if not found:
            raise TrainingError(f"no version {version!r} of dataset {dataset!r}")
        end = found[0]
    return manifests[max(0, end - window + 1) : end + 1]


def versions_since(manifests: list[DatasetManifest], since: datetime) -> list[DatasetManifest]:
    """The versions whose every record is from ``since`` on (by the records' own time).

    A version that straddles the moment holds rows of the old concept: it is left out, or a
    retrain after drift would learn both concepts at once.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def m(v, minute): return DatasetManifest(dataset="d", version=v, content_hash=v, row_count=1,
    ...     columns={}, uri="", time_min=t0 + timedelta(minutes=minute))
    >>> [v.version for v in versions_since([m("a", -5), m("b", 1), m("c", 2)], t0)]
    ['b', 'c']
    """
    return [m for m in manifests if m.time_min is not None and m.time_min >= since]


def labelled(
    ctx: RunContext, dataset: str, versions: list[DatasetManifest], label: str, features: FeatureSet
) -> tuple[pd.DataFrame, LabelJoin, list[str]]:
    """The versions' records with the outcomes of every label batch sealed so far; the batches used."""
    frame = pd.concat([ctx.catalog.load(dataset, m.version) for m in versions], ignore_index=True)
    batches = ctx.labels.manifests(dataset) if ctx.labels is not None else []
    start = min((m.time_min for m in versions if m.time_min is not None), default=None)
    if start is not None:  # an outcome is observed after its record: older batches label none of these
        batches = [b for b in batches if b.time_max is None or b.time_max >= start]
    loaded = [ctx.labels.load(dataset, b.version) for b in batches] if ctx.labels is not None else []
    labels = pd.concat(loaded, ignore_index=True) if loaded else pd.DataFrame(columns=list(LABEL_COLUMNS))
    frame, join = attach_labels(
        frame, labels, entity_key=features.entity_key, timestamp=features.timestamp, label=label
    )
    return frame, join, [b.version for b in batches]


async def fresh_data(ctx: RunContext, request: TrainModel, progress: Progress) -> list[DatasetManifest] | None:
    """After drift, the newest version still holds the old concept: wait for labelled data from after it.

    Returns the versions sealed since the request (the drift's moment) once their records hold
    ``drift_fresh_rows`` labelled rows (labels arrive late, on their own), or None when the wait
    does not apply or times out (then the newest versions are used, and the log says so). Woken
    by each announcement on ``datasets.versioned``; awaited on the event loop, never in a
    training thread, so waiting holds no worker.
    """
    if request.trigger != "drift" or request.dataset_version is not None or ctx.drift_fresh_rows <= 0:
        return None
    deadline = time.monotonic() + ctx.drift_fresh_timeout_s
    have = 0
    while True:
        try:
            fresh, have = await asyncio.to_thread(_labelled_since, ctx, request)
        except Exception as exc:  # the store away for a moment: keep waiting, the deadline bounds it
            log.warning("reading fresh data failed while waiting for it", error=repr(exc))
            fresh = []
        if fresh and have >= ctx.drift_fresh_rows:
            return fresh
        progress(f"waiting for {ctx.drift_fresh_rows} labelled rows recorded after the drift ({have} so far)", 0.01)
        if not await ctx.arrivals.next(request.dataset, deadline - time.monotonic()):
            log.warning(
                "not enough labelled data after the drift in time; training on the newest versions",
                dataset=request.dataset,
                waited_s=ctx.drift_fresh_timeout_s,
                labelled_rows=have,
            )
            return None


def _labelled_since(ctx: RunContext, request: TrainModel) -> tuple[list[DatasetManifest], int]:
    fresh = versions_since(ctx.catalog.manifests(request.dataset), request.occurred_at)
    if not fresh or sum(m.row_count for m in fresh) < ctx.drift_fresh_rows:
        return fresh, 0
    spec, features = resolve_spec(ctx, request)
    frame, _, _ = labelled(ctx, request.dataset, fresh, spec.label, features)
    return fresh, int(frame[spec.label].notna().sum())


PERMANENT: tuple[type[Exception], ...] = (
    TrainingError,
    FileNotFoundError,
    ValueError,
    KeyError,
    TypeError,
    ImportError,
    AttributeError,
)
"""What a retry cannot fix: bad data, spec or params (``params={"foo": 1}`` raises TypeError in the fit).
Anything else (the object store or MLflow away) may be transient, so it is raised for the caller to retry."""


def reason_of(exc: BaseException) -> str:
    return (str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}")[:4000]


def failure(request: TrainModel, merged: list[TrainModel], reason: str, **fields: Any) -> TrainingFailed:
    """The ``TrainingFailed`` that ends these requests, with why."""
    return TrainingFailed(
        model_name=request.model_name,
        reason=reason,
        request_ids=[str(r.event_id) for r in merged],
        producer=PRODUCER,
        **{"dataset_version": request.dataset_version, **fields},
        **request.caused(),
    )


def train(
    ctx: RunContext,
    request: TrainModel,
    merged: list[TrainModel],
    run_label: str,
    progress: Progress,
    versions: list[DatasetManifest] | None = None,
) -> ModelTrained | TrainingFailed:
    """Train the model the request asks for (on ``versions`` when given).

    A permanent failure becomes a ``TrainingFailed`` with why; any other exception is raised
    for the caller to retry. Either way the MLflow run, once opened, is ended: FINISHED, or
    FAILED with the reason in its ``flywheel.failure_reason`` tag.
    """
    started = time.perf_counter()
    try:
        spec, features = resolve_spec(ctx, request)
        progress("resolving data", 0.02)
        versions = versions or resolve_versions(
            ctx.catalog, request.dataset, request.dataset_version, spec.window_versions
        )
        frame, join, label_batches = labelled(ctx, request.dataset, versions, spec.label, features)
    except PERMANENT as exc:
        dataset_version = versions[-1].version if versions else request.dataset_version
        return failure(request, merged, reason_of(exc), dataset_version=dataset_version)
    progress("loaded", 0.05)
    experiment = experiment_id(ctx.mlflow, f"{ctx.experiment_prefix}/{request.model_name}")
    end_interrupted_runs(ctx.mlflow, experiment, merged)
    tags = run_tags(ctx, request, merged, run_label, spec, features, versions)
    run = mlflow.start_run(experiment_id=experiment, run_name=f"{request.model_name}-{run_label[:8]}", tags=tags)
    status = "FAILED"
    try:
        try:
            trained = fit_and_evaluate(
                frame, spec, features, importance_repeats=ctx.importance_repeats, progress=progress
            )
        except PERMANENT as exc:
            mlflow.set_tag(FAILURE_TAG, reason_of(exc))
            return failure(
                request, merged, reason_of(exc), run_id=run.info.run_id, dataset_version=versions[-1].version
            )
        lineage = Lineage(
            dataset=request.dataset,
            dataset_version=versions[-1].version,
            dataset_versions=[m.version for m in versions],
            code_version=ctx.code_version,
            model_spec=spec.spec_name,
            params=spec.estimator.params,
            seed=spec.seed,
            trigger_event_id=causation_chain(request)[0],
            feature_set=features.feature_set,
            feature_set_version=features.version,
            causation_chain=causation_chain(request),
            eval_artifact=EVAL_ARTIFACT,
            label=spec.label,
            train_rows=len(trained.x_train),
            eval_rows=len(trained.x_eval),
        )
        progress("logging to MLflow", 0.85)
        mlflow.log_metrics(join.as_metrics())
        mlflow.log_param("label_batches", ",".join(label_batches)[:6000] or "none")
        FeatureSetArchive(ctx.catalog.store).put(features)
        log_feature_set(features)  # pinned: whoever loads this model computes with exactly this version
        model_uri = log_results(spec, trained, lineage)
        status = "FINISHED"
    finally:
        mlflow.end_run(status)
    progress("logged", 1.0)
    return ModelTrained(
        model_name=request.model_name,
        run_id=run.info.run_id,
        model_uri=model_uri,
        metrics=trained.metrics,
        lineage=lineage,
        duration_s=round(time.perf_counter() - started, 3),
        experiment_id=experiment,
        merged_requests=len(merged),
        request_ids=[str(r.event_id) for r in merged],
        producer=PRODUCER,
        **request.caused(),
    )


def end_interrupted_runs(client: MlflowClient, experiment: str, merged: list[TrainModel]) -> list[str]:
    """End KILLED the runs a crash left RUNNING for any of these requests (they are run again now)."""
    ours = {str(r.event_id) for r in merged}
    found = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'", max_results=200)
    killed = []
    for stale in found:
        if ours & set(UUID_PATTERN.findall(stale.data.tags.get(MERGED_TAG, ""))):
            client.set_tag(stale.info.run_id, FAILURE_TAG, "interrupted; its requests were run again")
            client.set_terminated(stale.info.run_id, "KILLED")
            killed.append(stale.info.run_id)
    if killed:
        log.warning("ended interrupted MLflow runs", runs=killed, experiment=experiment)
    return killed


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by another replica
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_params(spec: ModelSpec, lineage: Lineage) -> dict[str, Any]:
    params: dict[str, Any] = {
        "estimator": spec.estimator.path,
        "pipeline": ",".join(s.path for s in spec.pipeline) or "none",
        "seed": spec.seed,
        "test_size": spec.test_size,
        "window_versions": spec.window_versions,
        "label": spec.label,
        "shuffle_labels": spec.shuffle_labels,
        "dataset_versions": ",".join(lineage.dataset_versions),
        "train_rows": lineage.train_rows,
        "eval_rows": lineage.eval_rows,
    }
    params.update({f"estimator.{k}": v for k, v in spec.estimator.params.items()})
    for i, step in enumerate(spec.pipeline):
        params.update({f"step{i}.{k}": v for k, v in step.params.items()})
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}


def run_tags(
    ctx: RunContext,
    request: TrainModel,
    merged: list[TrainModel],
    run_label: str,
    spec: ModelSpec,
    features: FeatureSet,
    versions: list[DatasetManifest],
) -> dict[str, str]:
    """The run's tags, known before the fit: what it trains on, why, and which requests it ends."""
    chain = causation_chain(request)
    return {
        Tags.DATASET: request.dataset,
        Tags.DATASET_VERSION: versions[-1].version,
        Tags.CODE_VERSION: ctx.code_version,
        Tags.FEATURE_SET: features.feature_set or "",
        Tags.FEATURE_SET_VERSION: features.version or "",
        Tags.MODEL_SPEC: spec.spec_name,
        Tags.TRIGGER_EVENT_ID: chain[0],
        Tags.CORRELATION_ID: str(request.correlation_id),
        Tags.CAUSATION_CHAIN: json.dumps(chain),
        Tags.SEED: str(spec.seed),
        MERGED_TAG: json.dumps([str(r.event_id) for r in merged])[:5000],
        JOB_TAG: run_label,
        "flywheel.model_name": request.model_name,
        "flywheel.trigger": request.trigger,
        "flywheel.label": spec.label,
    }


def log_results(spec: ModelSpec, trained: Trained, lineage: Lineage) -> str:
    """Log params, metrics, the eval split, importances and the model to the active run; the model's uri."""
    x_train, x_eval = trained.x_train, trained.x_eval
    mlflow.log_params(run_params(spec, lineage))
    mlflow.log_metrics(trained.metrics)
    mlflow.log_metrics({f"importance.{k}": v for k, v in trained.importance.items()})
    mlflow.log_dict({"kind": trained.importance_kind, "importance": trained.importance}, "feature_importance.json")
    mlflow.log_dict(lineage.model_dump(mode="json"), "lineage.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(EVAL_ARTIFACT).name
        x_eval.assign(**{spec.label: trained.y_eval.to_numpy()}).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(Path(EVAL_ARTIFACT).parent))
    example = x_train.head(5)
    info = mlflow.sklearn.log_model(
        trained.model,
        name="model",
        signature=infer_signature(example, trained.model.predict_proba(example)),
        input_example=example,
        # skops, not pickle; the types it must trust are the ones this very run produced.
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(trained.model),
    )
    return info.model_uri


def trusted_types(model: Any) -> list[str]:
    """The non-default types skops must trust to load this model (we built it, so we trust them)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_progress(record_update: Callable[[str, float], None], **context: Any) -> Progress:
    """A progress callback that updates the run record and logs each stage."""

    def progress(stage: str, fraction: float) -> None:
        record_update(stage, fraction)
        log.info("training progress", stage=stage, progress=round(fraction, 2), **context)

    return progress
