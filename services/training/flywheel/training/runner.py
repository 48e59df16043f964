"""One training run end to end, in a worker thread: resolve data, fit, log to MLflow, report.

Returns the event to publish (``ModelTrained`` or ``TrainingFailed``), or raises what a retry
may cure; retrying and publishing are the orchestrator's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import structlog
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from threadpoolctl import threadpool_limits

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.evaluation import task_of
from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import FeatureSetArchive, log_feature_set
from flywheel.common.modelspec import ModelSpec, load_model_spec, spec_path
from flywheel.common.offline import LABEL_COLUMNS, LabelJoin, attach_labels
from flywheel.common.tracking import Tags
from flywheel.common.trainingdata import TrainingData, record_training_data
from flywheel.schemas import DatasetManifest, Lineage, ModelTrained, TrainingFailed, TrainModel
from flywheel.training.arrivals import Arrivals
from flywheel.training.rebuild import RebuildRefused, code_refusal, compare, pinned_versions
from flywheel.training.recorded import SPEC_ARTIFACT, built
from flywheel.training.trainer import Progress, Trained, TrainingError, fit_and_evaluate
from flywheel.training.window import ROW, VERSION, WindowError, chain, in_time_bounds, ingested_after

log = structlog.get_logger(__name__)

PRODUCER = "training"
EVAL_ARTIFACT = "eval/eval.parquet"
MERGED_TAG = "flywheel.merged_request_ids"
JOB_TAG = "flywheel.training_run"
FINGERPRINT_TAG = "flywheel.fingerprint"
WINDOW_TAG = "flywheel.window"
MODEL_URI_TAG = "flywheel.model_uri"
FAILURE_TAG = "flywheel.failure_reason"
REBUILD_OF_TAG = "flywheel.rebuild_of"
REBUILD_FINGERPRINT_TAG = "flywheel.rebuild.fingerprint"  # not FINGERPRINT_TAG: an audit never answers a repeat
COMPARISON_ARTIFACT = "rebuild/comparison.json"
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
    fit_threads: int = 1
    drift_fresh_rows: int = 0
    drift_fresh_timeout_s: float = 0.0
    labels: DatasetCatalog | None = None  # sealed label batches; None: the records' own labels only
    arrivals: Arrivals = field(default_factory=Arrivals)


def causation_chain(request: TrainModel) -> list[str]:
    """Event ids from the trigger to this request, oldest first."""
    return [*request.causation_chain, str(request.event_id)]


def resolve_spec(ctx: RunContext, request: TrainModel) -> tuple[ModelSpec, FeatureSet]:
    if request.rebuild is not None:
        return pinned_spec(ctx, request)
    named = request.model_spec or champion_spec(ctx, request)
    spec = load_model_spec(ctx.datasets_dir, request.dataset, named).with_overrides(request.params)
    features = load_feature_set(ctx.datasets_dir, request.dataset)
    if spec.feature_set and spec.feature_set != features.feature_set:
        raise TrainingError(f"spec wants feature set {spec.feature_set!r}, features.yaml is {features.feature_set!r}")
    return spec, features


def champion_spec(ctx: RunContext, request: TrainModel) -> str | None:
    """For a request naming no spec (a drift or scheduled retrain): the one the champion was trained with,
    so that an online champion is retrained as one; None (the dataset's default) without a champion,
    or when that spec's file is gone."""
    if ctx.mlflow is None:  # a context that reads data only (no run, no champion to ask)
        return None
    try:
        version = ctx.mlflow.get_model_version_by_alias(request.model_name, "champion")
        named = ctx.mlflow.get_run(version.run_id).data.tags.get(Tags.MODEL_SPEC)
    except MlflowException:
        return None
    return named if named and spec_path(ctx.datasets_dir, request.dataset, named).exists() else None


def pinned_spec(ctx: RunContext, request: TrainModel) -> tuple[ModelSpec, FeatureSet]:
    """A rebuild's spec as its run resolved it, and the feature-set version it recorded (kept in the archive)."""
    assert request.rebuild is not None
    spec = ModelSpec.model_validate(request.rebuild.spec)
    features = load_feature_set(ctx.datasets_dir, request.dataset)
    wanted = request.rebuild.feature_set_version
    if wanted is not None and features.version != wanted:
        archived = FeatureSetArchive(ctx.catalog.store).get(request.dataset, wanted)
        if archived is None:
            raise TrainingError(f"feature set version {wanted!r} is neither current nor archived")
        features = archived
    return spec, features


def resolve_versions(catalog: DatasetCatalog, request: TrainModel, spec: ModelSpec) -> list[DatasetManifest]:
    """The versions a run reads, oldest first: the requested one (default: the newest) and its chain,
    less those wholly older than the window's time bounds; a rebuild's, exactly as recorded."""
    try:
        if request.rebuild is not None:
            return pinned_versions(catalog.manifests(request.dataset), request.rebuild.dataset_versions)
        return in_time_bounds(chain(catalog.manifests(request.dataset), request.dataset_version), spec.window)
    except (WindowError, RebuildRefused) as exc:
        raise TrainingError(f"{exc} (dataset {request.dataset!r})") from exc


def drift_cut(catalog: DatasetCatalog, request: TrainModel, versions: list[DatasetManifest]) -> set[str] | None:
    """On a drift retrain, which of ``versions`` were ingested after the drift; None for any other run.
    A rebuild's is the cut its version recorded: the drift's moment is not the rebuild's."""
    if request.rebuild is not None:
        return set(request.rebuild.drift_cut) if request.rebuild.drift_cut is not None else None
    if request.trigger != "drift":
        return None
    loaded = {m.version for m in versions}
    return {m.version for m in ingested_after(catalog.manifests(request.dataset), request.occurred_at)} & loaded


def labelled(
    ctx: RunContext,
    dataset: str,
    versions: list[DatasetManifest],
    label: str,
    features: FeatureSet,
    pinned: list[str] | None = None,
) -> tuple[pd.DataFrame, LabelJoin, list[str]]:
    """The versions' records (each with its version and position in it) with the outcomes of every
    label batch sealed so far (``pinned``: of exactly those batches, a rebuild's); the batches used."""
    frames = [ctx.catalog.load(dataset, m.version) for m in versions]
    frame = pd.concat(
        [f.assign(**{VERSION: m.version, ROW: range(len(f))}) for f, m in zip(frames, versions, strict=True)],
        ignore_index=True,
    )
    batches = ctx.labels.manifests(dataset) if ctx.labels is not None else []
    start = min((m.time_min for m in versions if m.time_min is not None), default=None)
    if start is not None:  # an outcome is observed after its record: older batches label none of these
        batches = [b for b in batches if b.time_max is None or b.time_max >= start]
    if pinned is not None:
        batches = pinned_versions(ctx.labels.manifests(dataset) if ctx.labels is not None else [], pinned)
    loaded = [ctx.labels.load(dataset, b.version) for b in batches] if ctx.labels is not None else []
    labels = pd.concat(loaded, ignore_index=True) if loaded else pd.DataFrame(columns=list(LABEL_COLUMNS))
    frame, join = attach_labels(
        frame, labels, entity_key=features.entity_key, timestamp=features.timestamp, label=label
    )
    return frame, join, [b.version for b in batches]


async def fresh_data(ctx: RunContext, request: TrainModel, progress: Progress) -> list[DatasetManifest] | None:
    """After drift, the newest version still holds the old concept: wait for labelled data from after it.

    Returns the versions ingested after the drift (the request is dated at it) once their records
    hold ``drift_fresh_rows`` labelled rows (labels arrive late, on their own), or None when the
    wait does not apply or times out (the run then trains on its window as it is, and the log
    says so). "After" is on the ingestion clock (``window.ingested_after``): a manifest's
    ``created_at`` against the drift's ``occurred_at``, both wall-clock, never the records' own
    timestamps, which may be years old. Woken by each announcement on ``datasets.versioned``;
    awaited on the event loop, never in a training thread, so waiting holds no worker.
    """
    if request.trigger != "drift" or request.dataset_version is not None or ctx.drift_fresh_rows <= 0:
        return None
    deadline = time.monotonic() + ctx.drift_fresh_timeout_s
    have = 0
    while True:
        heard = ctx.arrivals.heard[request.dataset]
        try:
            fresh, have = await asyncio.to_thread(labelled_since, ctx, request)
        except Exception as exc:  # the store away for a moment: keep waiting, the deadline bounds it
            log.warning("reading fresh data failed while waiting for it", error=repr(exc))
            fresh = []
        if fresh and have >= ctx.drift_fresh_rows:
            return fresh
        progress(f"waiting for {ctx.drift_fresh_rows} labelled rows recorded after the drift ({have} so far)", 0.01)
        if not await ctx.arrivals.next(request.dataset, deadline - time.monotonic(), since=heard):
            log.warning(
                "not enough labelled data after the drift in time; training on the window as it is",
                dataset=request.dataset,
                waited_s=ctx.drift_fresh_timeout_s,
                labelled_rows=have,
            )
            return None


def labelled_since(ctx: RunContext, request: TrainModel) -> tuple[list[DatasetManifest], int]:
    """The versions ingested after the request's moment, and how many labelled rows they hold."""
    fresh = ingested_after(ctx.catalog.manifests(request.dataset), request.occurred_at)
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


@dataclass
class Prepared:
    """A run's inputs, resolved before anything is written: spec, data and the fingerprint of both."""

    spec: ModelSpec
    features: FeatureSet
    versions: list[DatasetManifest]
    frame: pd.DataFrame
    join: LabelJoin
    label_batches: list[str]
    after: set[str] | None
    fingerprint: str


def prepare(ctx: RunContext, request: TrainModel, progress: Progress) -> Prepared:
    """Resolve the spec and read the window's data; raises what ``PERMANENT`` names when it cannot."""
    spec, features = resolve_spec(ctx, request)
    progress("resolving data", 0.02)
    versions = resolve_versions(ctx.catalog, request, spec)
    pinned = request.rebuild.label_batches if request.rebuild is not None else None
    frame, join, batches = labelled(ctx, request.dataset, versions, spec.label, features, pinned)
    after = drift_cut(ctx.catalog, request, versions)
    fingerprint = run_fingerprint(
        dataset=request.dataset,
        versions=[m.version for m in versions],
        labelled_rows=labelled_digest(frame, spec.label),  # not the batch list: a new batch may label nothing here
        after=after,
        spec=spec.model_dump(mode="json"),
        code_version=ctx.code_version,
        feature_set_version=features.version,
    )
    return Prepared(spec, features, versions, frame, join, batches, after, fingerprint)


def labelled_digest(frame: pd.DataFrame, label: str) -> str:
    """A hash of which rows are labelled and how: ``(version, row, label)`` of every labelled row.

    >>> frame = pd.DataFrame({VERSION: ["a", "a", "b"], ROW: [0, 1, 0], "y": [1, None, 0]})
    >>> labelled_digest(frame, "y") == labelled_digest(frame.iloc[::-1], "y")
    True
    >>> labelled_digest(frame, "y") == labelled_digest(frame.assign(y=[1, 1, 0]), "y")
    False
    """
    rows = frame.loc[frame[label].notna()]
    keys = rows[VERSION].astype(str) + ":" + rows[ROW].astype(str) + ":" + rows[label].astype(str)
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def run_fingerprint(**inputs: Any) -> str:
    """What makes two runs the same run: a hash of their inputs (data versions, the labelled rows, the
    drift's cut, the whole spec with its window, params and seed, the code and feature-set versions).

    >>> a = run_fingerprint(versions=["v1"], after={"v1"}, spec={"seed": 1})
    >>> a == run_fingerprint(spec={"seed": 1}, after={"v1"}, versions=["v1"]), a == run_fingerprint(versions=["v2"])
    (True, False)
    """
    canonical = {k: sorted(v) if isinstance(v, set) else v for k, v in inputs.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:32]


def train(
    ctx: RunContext,
    request: TrainModel,
    merged: list[TrainModel],
    run_label: str,
    progress: Progress,
    fresh: list[DatasetManifest] | None = None,
) -> ModelTrained | TrainingFailed:
    """Train the model the request asks for on its spec's window, or answer with an identical earlier run.

    A permanent failure becomes a ``TrainingFailed`` with why; any other exception is raised
    for the caller to retry. Either way the MLflow run, once opened, is ended: FINISHED, or
    FAILED with the reason in its ``flywheel.failure_reason`` tag. ``fresh``: what the wait for
    post-drift data found (None: no wait, or it timed out), recorded with the window.
    """
    started = time.perf_counter()
    rebuild = request.rebuild
    # checked where it runs too: the replica that took the request may run other code
    if rebuild and (refused := code_refusal(rebuild.code_version, ctx.code_version, rebuild.force)):
        return failure(request, merged, f"rebuild of v{rebuild.model_version} refused: {refused}")
    try:
        prepared = prepare(ctx, request, progress)
    except PERMANENT as exc:
        return failure(request, merged, reason_of(exc))
    progress("loaded", 0.05)
    experiment = experiment_id(ctx.mlflow, f"{ctx.experiment_prefix}/{request.model_name}")
    earlier = find_repeat(ctx.mlflow, experiment, prepared.fingerprint) if rebuild is None else None
    if earlier is not None:
        return repeated(ctx.mlflow, earlier, request, merged, experiment, time.perf_counter() - started)
    end_interrupted_runs(ctx.mlflow, experiment, merged)
    tags = run_tags(ctx, request, merged, run_label, prepared)
    run = mlflow.start_run(experiment_id=experiment, run_name=f"{request.model_name}-{run_label[:8]}", tags=tags)
    status = "FAILED"
    try:
        # in this thread, where the fit, its scoring and MLflow's signature run (threadpoolctl limits the caller's)
        with threadpool_limits(limits=ctx.fit_threads):
            try:
                trained = fit_and_evaluate(
                    prepared.frame,
                    prepared.spec,
                    prepared.features,
                    after=prepared.after,
                    importance_repeats=ctx.importance_repeats,
                    progress=progress,
                )
            except PERMANENT as exc:
                mlflow.set_tag(FAILURE_TAG, reason_of(exc))
                newest = prepared.versions[-1].version
                return failure(request, merged, reason_of(exc), run_id=run.info.run_id, dataset_version=newest)
            progress("logging to MLflow", 0.85)
            lineage, model_uri = log_run(ctx, request, prepared, trained, fresh)
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
        rebuild_of=rebuild.model_version if rebuild is not None else None,
        producer=PRODUCER,
        **request.caused(),
    )


def log_comparison(
    ctx: RunContext, request: TrainModel, metrics: dict[str, float], model_uri: str, fingerprint: str
) -> None:
    """Hold the rebuilt model against the original, with the active run: an artifact and its verdict as tags."""
    pin = request.rebuild
    assert pin is not None
    original = built(ctx.mlflow, pin.run_id, pin.model_uri, pin.code_version, pin.fingerprint)
    rebuilt = built(ctx.mlflow, mlflow.active_run().info.run_id, model_uri, ctx.code_version, fingerprint)
    rebuilt = replace(rebuilt, metrics=dict(metrics))  # as fitted, not as read back
    comparison = compare(original, rebuilt)
    mlflow.log_dict(comparison.as_dict(), COMPARISON_ARTIFACT)
    mlflow.set_tags(
        {
            "flywheel.rebuild.equal": str(comparison.equal).lower(),
            "flywheel.rebuild.metrics_equal": str(comparison.metrics_equal).lower(),
            "flywheel.rebuild.model_equal": str(comparison.model_equal).lower(),
            "flywheel.rebuild.comparison": comparison.as_tag(),
        }
    )
    log.info("rebuild compared", rebuild_of=pin.model_version, **comparison.as_dict())


def log_run(
    ctx: RunContext, request: TrainModel, prepared: Prepared, trained: Trained, fresh: list[DatasetManifest] | None
) -> tuple[Lineage, str]:
    """Log everything about a fitted run to the active MLflow run; its lineage and the model's uri."""
    trained.window["fresh_wait"] = "none" if request.trigger != "drift" else ("met" if fresh else "timed_out")
    if request.rebuild is not None:
        trained.window["fresh_wait"] = "pinned"  # the rebuilt version's data, not a wait for any
    lineage = lineage_of(ctx, request, prepared, trained)
    mlflow.log_metrics(prepared.join.as_metrics())
    mlflow.log_dict(prepared.spec.model_dump(mode="json"), SPEC_ARTIFACT)  # what a rebuild pins
    mlflow.log_param("label_batches", ",".join(prepared.label_batches)[:6000] or "none")
    FeatureSetArchive(ctx.catalog.store).put(prepared.features)
    log_feature_set(prepared.features)  # pinned: whoever loads this model computes with exactly this version
    fit_on = set(trained.train_rows["version"]) if trained.train_rows is not None else set(lineage.dataset_versions)
    versions = tuple(v for v in lineage.dataset_versions if v in fit_on)  # the versions it has rows of
    record_training_data(TrainingData(request.dataset, versions, trained.train_rows, tuple(prepared.label_batches)))
    model_uri = log_results(prepared.spec, trained, lineage)
    if request.rebuild is not None:  # before the run ends: the registry copies the verdict from its tags
        log_comparison(ctx, request, trained.metrics, model_uri, prepared.fingerprint)
    return lineage, model_uri


def lineage_of(ctx: RunContext, request: TrainModel, prepared: Prepared, trained: Trained) -> Lineage:
    """What the model is made from: every version read, the window as chosen, the slices held out."""
    spec, features = prepared.spec, prepared.features
    return Lineage(
        dataset=request.dataset,
        dataset_version=prepared.versions[-1].version,
        dataset_versions=[m.version for m in prepared.versions],
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
        task=spec.task,
        train_rows=len(trained.x_train),
        eval_rows=len(trained.x_eval),
        eval_slices={name: slice_artifact(name) for name in trained.slices},
        window=trained.window,
        fingerprint=prepared.fingerprint,
        drift_cut=sorted(prepared.after) if prepared.after is not None else None,
    )


def slice_artifact(name: str) -> str:
    """The run artifact path of a held-out slice: ``eval/recent.parquet``, ``eval/before.parquet``."""
    return f"eval/{name}.parquet"


def find_repeat(client: MlflowClient, experiment: str, fingerprint: str) -> Any | None:
    """The newest finished run of this experiment with this fingerprint, if any."""
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def own_requests(run: Any, merged: list[TrainModel]) -> bool:
    """Whether ``run`` was run for any of these very requests (its outcome lost to a crash)."""
    ours = {str(r.event_id) for r in merged}
    return bool(ours & set(UUID_PATTERN.findall(run.data.tags.get(MERGED_TAG, ""))))


def repeated(
    client: MlflowClient,
    run: Any,
    request: TrainModel,
    merged: list[TrainModel],
    experiment: str,
    took: float,
) -> ModelTrained:
    """The answer to requests an earlier identical run already answered: that run, marked ``repeat``
    (unless it was run for these very requests, and only its outcome was lost)."""
    repeat = not own_requests(run, merged)
    log.info("identical to an earlier run; answering with it", mlflow_run=run.info.run_id, repeat=repeat)
    with tempfile.TemporaryDirectory() as tmp:
        lineage = Lineage.model_validate_json(
            Path(client.download_artifacts(run.info.run_id, "lineage.json", tmp)).read_text()
        )
    return ModelTrained(
        model_name=request.model_name,
        run_id=run.info.run_id,
        model_uri=run.data.tags[MODEL_URI_TAG],
        metrics={k: v for k, v in run.data.metrics.items() if "." not in k},
        lineage=lineage,
        duration_s=round(took, 3),
        experiment_id=experiment,
        merged_requests=len(merged),
        request_ids=[str(r.event_id) for r in merged],
        repeat=repeat,
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
        "holdout": spec.holdout,
        "label": spec.label,
        "shuffle_labels": spec.shuffle_labels,
        "dataset_versions": ",".join(lineage.dataset_versions)[:6000],
        "train_rows": lineage.train_rows,
        "eval_rows": lineage.eval_rows,
    }
    params.update({f"window.{k}": v for k, v in lineage.window.items()})
    params.update({f"estimator.{k}": v for k, v in spec.estimator.params.items()})
    for i, step in enumerate(spec.pipeline):
        params.update({f"step{i}.{k}": v for k, v in step.params.items()})
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}


def run_tags(
    ctx: RunContext, request: TrainModel, merged: list[TrainModel], run_label: str, prepared: Prepared
) -> dict[str, str]:
    """The run's tags, known before the fit: what it trains on, why, and which requests it ends."""
    rebuild = request.rebuild
    if rebuild is None:
        identity = {FINGERPRINT_TAG: prepared.fingerprint}
    else:
        identity = {
            REBUILD_OF_TAG: rebuild.model_version,
            "flywheel.rebuild.run_id": rebuild.run_id,
            REBUILD_FINGERPRINT_TAG: prepared.fingerprint,
        }
    return {**common_tags(ctx, request, merged, run_label, prepared), **identity}


def common_tags(
    ctx: RunContext, request: TrainModel, merged: list[TrainModel], run_label: str, prepared: Prepared
) -> dict[str, str]:
    chain = causation_chain(request)
    spec, features = prepared.spec, prepared.features
    return {
        Tags.DATASET: request.dataset,
        Tags.DATASET_VERSION: prepared.versions[-1].version,
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
        WINDOW_TAG: json.dumps(spec.window.model_dump(mode="json")),
        "flywheel.model_name": request.model_name,
        "flywheel.trigger": request.trigger,
        "flywheel.label": spec.label,
        "flywheel.task": spec.task,
        Tags.LEARNING: "batch",
        Tags.LEARNS_ONLINE: str(spec.online_challenger is not None).lower(),
    }


def log_results(spec: ModelSpec, trained: Trained, lineage: Lineage) -> str:
    """Log params, metrics, the held-out slices, importances and the model to the active run; the model's uri."""
    x_train, x_eval = trained.x_train, trained.x_eval
    mlflow.log_params(run_params(spec, lineage))
    mlflow.log_metrics(trained.metrics)
    for name, figures in trained.slice_metrics.items():
        mlflow.log_metrics({f"{name}.{k}": v for k, v in figures.items()})
    mlflow.log_metrics({f"importance.{k}": v for k, v in trained.importance.items()})
    mlflow.log_dict({"kind": trained.importance_kind, "importance": trained.importance}, "feature_importance.json")
    mlflow.set_tags({WINDOW_TAG: json.dumps(lineage.window)[:5000], "flywheel.window.drift": lineage.window["drift"]})
    with tempfile.TemporaryDirectory() as tmp:
        eval_split = x_eval.assign(**{spec.label: trained.y_eval.to_numpy()})
        for artifact, frame in (
            (EVAL_ARTIFACT, eval_split),
            *((slice_artifact(n), f) for n, f in trained.slices.items()),
        ):
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), str(Path(artifact).parent))
    example = x_train.head(5)
    info = mlflow.sklearn.log_model(
        trained.model,
        name="model",
        signature=infer_signature(example, answers(trained.model, example)),
        input_example=example,
        # skops, not pickle; the types it must trust are the ones this very run produced.
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(trained.model),
        pip_requirements=model_requirements(trained.model),
    )
    mlflow.log_dict(lineage.model_dump(mode="json"), "lineage.json")
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)  # last: a run with it is complete, and may answer a repeat
    return info.model_uri


LOADS_WITH = ("scikit-learn", "skops", "numpy", "scipy", "pandas")  # what loading and scoring a skops model takes


def model_requirements(model: Any) -> list[str]:
    """The packages, pinned as installed here, that load and score ``model``: scikit-learn's stack and skops,
    and river for an online model. Named rather than inferred: MLflow's inference imports the model in a
    subprocess and exports the whole uv lock, 1 s on a quiet machine and up to 10 s on a busy one.

    >>> from sklearn.tree import DecisionTreeClassifier
    >>> [r.split("==")[0] for r in model_requirements(DecisionTreeClassifier())]
    ['scikit-learn', 'skops', 'numpy', 'scipy', 'pandas']
    """
    from importlib.metadata import version

    names = [*LOADS_WITH, *(["river"] if hasattr(model, "river_estimator") else [])]
    return [f"{name}=={version(name)}" for name in names]


def answers(model: Any, rows: Any) -> Any:
    """What serving answers for rows: a classifier's probabilities, a regressor's values."""
    return model.predict(rows) if task_of(model) == "regression" else model.predict_proba(rows)


def trusted_types(model: Any) -> list[str]:
    """The non-default types skops must trust to load this model (we built it, so we trust them).

    A model skops cannot take apart into plain state (some river models hold native objects
    without it) fails the run: it is never saved as a pickle instead.
    """
    import skops.io

    try:
        return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    except (TypeError, AttributeError, RecursionError) as exc:
        inner = getattr(model, "river_estimator", model)
        raise TrainingError(f"{type(inner).__name__} cannot be saved safely (skops, no pickle): {exc}") from exc


def log_progress(record_update: Callable[[str, float], None], **context: Any) -> Progress:
    """A progress callback that updates the run record and logs each stage."""

    def progress(stage: str, fraction: float) -> None:
        record_update(stage, fraction)
        log.info("training progress", stage=stage, progress=round(fraction, 2), **context)

    return progress
