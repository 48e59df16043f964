"""An online challenger's proposal logged as an MLflow run, like any candidate: ``ModelTrained`` caused by the drift.

The run has what the registry gates and serving loads from every run: the model (skops, no pickle),
its pinned feature set, the held-out ``recent`` slice (the raw records of the window the frozen copy
never learnt, with their labels), the metrics on it beside the trivial baseline's, the lineage and
the rows it learnt (``training_data/learned.parquet``: monitoring's reference for its data drift).
It is tagged with the *batch* spec, so the drift's batch retrain, and any later one, trains with
the batch recipe, and ``flywheel.learning=online``. Its fingerprint names the drift and the last
label learnt: logging the same proposal twice answers with the first run.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import mlflow
import pandas as pd

from flywheel.common.featuresets import FeatureSet
from flywheel.common.featureversions import FeatureSetArchive, log_feature_set
from flywheel.common.modelspec import ModelSpec
from flywheel.common.tracking import Tags
from flywheel.common.trainingdata import TrainingData, record_training_data
from flywheel.schemas import Lineage, ModelTrained
from flywheel.training.challenger import Proposal, Row
from flywheel.training.recorded import SPEC_ARTIFACT
from flywheel.training.runner import (
    EVAL_ARTIFACT,
    FINGERPRINT_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    RunContext,
    experiment_id,
    find_repeat,
    log_results,
    run_fingerprint,
    slice_artifact,
)
from flywheel.training.trainer import Trained, label_values, score_slice, trivial_baseline

RECENT = "recent"


def records(rows: list[Row], label: str) -> pd.DataFrame:
    """The rows' raw inputs with their label: what a held-out slice holds."""
    return pd.DataFrame([{**r.inputs, label: r.label} for r in rows])


def fingerprint_of(spec: ModelSpec, proposal: Proposal) -> str:
    last = proposal.learned[-1].label_id if proposal.learned else ""
    return run_fingerprint(
        learning="online", drift=proposal.drift_id, number=proposal.number, last=last, spec=spec.model_dump(mode="json")
    )


def trained_of(spec: ModelSpec, features: FeatureSet, proposal: Proposal) -> Trained:
    """The proposal as a run's results: scored with the trivial baseline on the window it never learnt."""
    learned = records(proposal.learned, spec.label)
    window = records(proposal.window, spec.label)
    x_learned = features.frame(learned)
    baseline = trivial_baseline(spec).fit(x_learned, label_values(learned, spec))
    x_eval, y_eval, metrics = score_slice(proposal.model, baseline, window, spec, features)
    return Trained(
        model=proposal.model,
        metrics=metrics,
        x_train=x_learned,
        x_eval=x_eval,
        y_eval=pd.Series(y_eval, name=spec.label, index=x_eval.index),
        slices={RECENT: window},
        slice_metrics={RECENT: metrics},
        window={
            "drift": "online",
            "learned_rows": len(learned),
            "held_out_rows": len(window),
            "judged_on": proposal.metric,
            **{f"{name}_{proposal.metric}": round(value, 6) for name, value in proposal.scores.items()},
        },
    )


def lineage_of(
    ctx: RunContext, spec: ModelSpec, features: FeatureSet, proposal: Proposal, trained: Trained, fingerprint: str
) -> Lineage:
    return Lineage(
        dataset=spec.dataset,
        dataset_version="",
        code_version=ctx.code_version,
        model_spec=spec.spec_name,
        params=spec.online_challenger.estimator.params if spec.online_challenger else {},
        seed=spec.seed,
        trigger_event_id=proposal.drift_id,
        feature_set=features.feature_set,
        feature_set_version=features.version,
        causation_chain=[proposal.drift_id],
        eval_artifact=EVAL_ARTIFACT,
        label=spec.label,
        task=spec.task,
        train_rows=len(trained.x_train),
        eval_rows=len(trained.x_eval),
        eval_slices={RECENT: slice_artifact(RECENT)},
        window=trained.window,
        fingerprint=fingerprint,
        learning="online",
        online={
            "drift_event_id": proposal.drift_id,
            "snapshot": proposal.number,
            "labels_learned": len(proposal.learned),
            "held_out": len(proposal.window),
            "first_label_at": _first(proposal.learned, "at"),
            "last_label_at": _last(proposal.learned, "at"),
            "first_label_event_id": _first(proposal.learned, "label_id"),
            "last_label_event_id": _last(proposal.learned, "label_id"),
            "judged_on": proposal.metric,
            "scores": proposal.scores,
        },
    )


def _first(rows: list[Row], field: str) -> Any:
    return getattr(rows[0], field) if rows else None


def _last(rows: list[Row], field: str) -> Any:
    return getattr(rows[-1], field) if rows else None


def log_snapshot(ctx: RunContext, spec: ModelSpec, features: FeatureSet, proposal: Proposal) -> ModelTrained:
    """Log the proposal as a run of the model's experiment; the ``ModelTrained`` the drift caused."""
    started = time.perf_counter()
    drift = proposal.cause
    online_spec = spec.challenger()
    fingerprint = fingerprint_of(spec, proposal)
    experiment = experiment_id(ctx.mlflow, f"{ctx.experiment_prefix}/{spec.model_name}")
    trained = trained_of(online_spec, features, proposal)
    lineage = lineage_of(ctx, spec, features, proposal, trained, fingerprint)
    earlier = find_repeat(ctx.mlflow, experiment, fingerprint)
    if earlier is not None:
        run_id, model_uri = earlier.info.run_id, earlier.data.tags[MODEL_URI_TAG]
    else:
        run_id, model_uri = _log(ctx, spec, online_spec, features, proposal, trained, lineage, experiment, fingerprint)
    return ModelTrained(
        event_id=uuid.uuid5(uuid.UUID(proposal.drift_id), f"online:{proposal.number}"),
        model_name=spec.model_name,
        run_id=run_id,
        model_uri=model_uri,
        metrics=trained.metrics,
        lineage=lineage,
        duration_s=round(time.perf_counter() - started, 3),
        experiment_id=experiment,
        producer=PRODUCER,
        **(drift.caused() if drift is not None else {}),
    )


def _log(
    ctx: RunContext,
    spec: ModelSpec,
    online_spec: ModelSpec,
    features: FeatureSet,
    proposal: Proposal,
    trained: Trained,
    lineage: Lineage,
    experiment: str,
    fingerprint: str,
) -> tuple[str, str]:
    drift = proposal.cause
    tags = {
        Tags.DATASET: spec.dataset,
        Tags.CODE_VERSION: ctx.code_version,
        Tags.FEATURE_SET: features.feature_set or "",
        Tags.FEATURE_SET_VERSION: features.version or "",
        Tags.MODEL_SPEC: spec.spec_name,  # the batch recipe: what a retrain of this champion trains with
        Tags.TRIGGER_EVENT_ID: proposal.drift_id,
        Tags.CORRELATION_ID: str(drift.correlation_id) if drift is not None else "",
        Tags.CAUSATION_CHAIN: json.dumps([proposal.drift_id]),
        Tags.SEED: str(spec.seed),
        Tags.LEARNS_ONLINE: "true",
        Tags.LEARNING: "online",
        FINGERPRINT_TAG: fingerprint,
        "flywheel.model_name": spec.model_name,
        "flywheel.trigger": "drift",
        "flywheel.label": spec.label,
        "flywheel.task": spec.task,
    }
    name = f"{spec.model_name}-online-{proposal.drift_id[:8]}-{proposal.number}"
    run = mlflow.start_run(experiment_id=experiment, run_name=name, tags=tags)
    status = "FAILED"
    try:
        mlflow.log_dict(online_spec.model_dump(mode="json"), SPEC_ARTIFACT)
        FeatureSetArchive(ctx.catalog.store).put(features)
        log_feature_set(features)
        learned = records(proposal.learned, spec.label)
        record_training_data(TrainingData(spec.dataset, (), None, (), learned=learned))
        model_uri = log_results(online_spec, trained, lineage)
        status = "FINISHED"
    finally:
        mlflow.end_run(status)
    return run.info.run_id, model_uri
