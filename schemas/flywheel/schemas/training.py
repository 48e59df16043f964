"""Training commands and their outcomes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from flywheel.schemas.envelope import Event, Name


class Rebuild(BaseModel):
    """What a rebuild pins: a registered version's recorded inputs, used as recorded, never re-resolved."""

    model_version: str = Field(description="The registered version rebuilt.")
    run_id: str = Field(description="Its MLflow run.")
    model_uri: str = Field(description="Its logged model, to compare the rebuilt one with.")
    dataset_versions: list[str] = Field(description="Every version the run read, oldest first.")
    label_batches: list[str] = Field(default=[], description="The sealed label batches the run joined.")
    drift_cut: list[str] | None = Field(
        default=None, description="The versions counted as after the drift (None: not a drift retrain)."
    )
    spec: dict[str, JsonValue] = Field(description="The model spec as the run resolved it (params included).")
    feature_set_version: str | None = None
    code_version: str = Field(description="The code version the run recorded.")
    fingerprint: str | None = Field(default=None, description="The run's fingerprint: a rebuild should match it.")
    force: bool = Field(default=False, description="Rebuild even when the running code version differs.")


class TrainModel(Event):
    """Command: train a model on a dataset version (``training.requested``)."""

    model_name: Name
    dataset: Name
    dataset_version: Name | None = Field(default=None, description="None: the newest version.")
    model_spec: Name | None = Field(default=None, description="None: the dataset's default spec.")
    params: dict[str, JsonValue] = {}
    trigger: Literal["drift", "schedule", "api", "manual"] = "api"
    reason: str = ""
    causation_chain: list[str] = Field(
        default=[], description="Ids of the events that led to this request, oldest first (e.g. the drift)."
    )
    rebuild: Rebuild | None = Field(
        default=None, description="Retrain a registered version from its recorded inputs (an audit, no candidate)."
    )


class Lineage(BaseModel):
    """What a model was made from."""

    dataset: str
    dataset_version: str
    code_version: str
    model_spec: str
    params: dict[str, JsonValue] = {}
    seed: int
    trigger_event_id: str | None = None
    dataset_versions: list[str] = Field(default=[], description="Every version trained on, oldest first.")
    feature_set: str | None = None
    feature_set_version: str | None = None
    causation_chain: list[str] = Field(
        default=[], description="Event ids from the trigger to the training request, oldest first."
    )
    eval_artifact: str | None = Field(default=None, description="Run artifact path of the held-out split.")
    label: str | None = None
    task: Literal["classification", "regression"] = Field(
        default="classification", description="What the model answers: a class (with probabilities) or a value."
    )
    train_rows: int | None = None
    eval_rows: int | None = None
    eval_slices: dict[str, str] = Field(
        default={},
        description="Held-out slices, name -> run artifact path of raw labelled records (recent: the latest rows "
        "by event time; before: pre-drift rows on a drift retrain).",
    )
    window: dict[str, JsonValue] = Field(
        default={}, description="The training window as declared and as chosen (drift mode, time range, rows)."
    )
    fingerprint: str | None = Field(
        default=None, description="Hash of data versions, label batches, window, spec, params, seed and code."
    )
    drift_cut: list[str] | None = Field(
        default=None, description="On a drift retrain, the versions counted as ingested after the drift."
    )
    learning: Literal["batch", "online"] = Field(
        default="batch",
        description="batch: fit on dataset versions; online: a snapshot of the online challenger, learnt from "
        "labelled answers (``predictions.labelled``) one at a time since a drift.",
    )
    online: dict[str, JsonValue] = Field(
        default={},
        description="An online snapshot's learning: the drift it answers, the labels it learnt, the window it was "
        "judged on (label event ids and times).",
    )


class ModelTrained(Event):
    """A training run finished and its model is logged (``training.completed``)."""

    model_name: Name
    run_id: Name
    model_uri: str
    metrics: dict[str, float]
    lineage: Lineage
    duration_s: float
    experiment_id: str | None = None
    merged_requests: int = Field(default=1, description="Requests coalesced into this run.")
    request_ids: list[str] = Field(
        default=[], description="Ids of the training requests this run ends, oldest first (empty: the causation id)."
    )
    repeat: bool = Field(
        default=False,
        description="An earlier run had the same fingerprint and answers these requests: nothing was trained, "
        "run_id is that run's, and nothing is registered again.",
    )
    rebuild_of: str | None = Field(
        default=None,
        description="The model version this run rebuilt from its recorded inputs: registered as an audit, "
        "never approved, promoted or rolled out.",
    )


class TrainingFailed(Event):
    """A training run could not finish (``training.failed``)."""

    model_name: Name
    reason: str
    run_id: Name | None = None
    dataset_version: Name | None = None
    request_ids: list[str] = Field(
        default=[], description="Ids of the training requests this run ends, oldest first (empty: the causation id)."
    )
