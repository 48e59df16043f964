"""Training's HTTP routes: request a run, rebuild a version, follow runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from faststream.kafka import KafkaBroker
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field, JsonValue

from flywheel.common.auth import Credentials
from flywheel.common.kafka import publish_event
from flywheel.common.modelspec import load_model_spec
from flywheel.common.problems import problems
from flywheel.common.tracking import is_missing
from flywheel.schemas import NAME_MAX, Rebuild, TrainModel
from flywheel.training.handlers import PRODUCER
from flywheel.training.rebuild import RebuildRefused, code_refusal
from flywheel.training.recorded import read_pin
from flywheel.training.runs import RunBook, RunRecord

NAME = NAME_MAX  # the events' bound: a request the API accepts is one the topic accepts
MAX_REQUEST_BYTES = 256 * 1024  # it travels as one Kafka message


class TrainRequest(BaseModel):
    """Train a model; everything but the dataset has a default."""

    dataset: str = Field(max_length=NAME)
    model_name: str | None = Field(default=None, max_length=NAME, description="None: the spec's model_name.")
    dataset_version: str | None = Field(default=None, max_length=NAME, description="None: the newest version.")
    model_spec: str | None = Field(default=None, max_length=NAME, description="None: datasets/<dataset>/model.yaml.")
    params: dict[str, JsonValue] = Field(default={}, max_length=100)
    reason: str = Field(default="", max_length=2000)


class TrainAccepted(BaseModel):
    request_id: str
    model_name: str
    status: str = "accepted"


async def accepted(broker: KafkaBroker, request: TrainModel) -> TrainAccepted:
    """Publish a training request on ``training.requested``: 413 when too large for one message, 503 when
    the broker is unavailable."""
    if len(request.to_bytes()) > MAX_REQUEST_BYTES:
        raise HTTPException(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes of JSON")
    try:
        await publish_event(broker, request)
    except Exception as exc:  # the broker is unavailable: not the request's fault
        raise HTTPException(503, f"could not publish the request: {type(exc).__name__}: {exc}"[:300]) from exc
    return TrainAccepted(request_id=str(request.event_id), model_name=request.model_name)


def create_router(broker: KafkaBroker, runs: RunBook, datasets_dir: Path, credentials: Credentials) -> APIRouter:
    router = APIRouter(tags=["training"])

    @router.post(
        "/train",
        status_code=202,
        response_model=TrainAccepted,
        dependencies=[Depends(credentials.require("operator"))],
        responses=problems(401, 403, 404, 413, 503),
    )
    async def post_train(body: Annotated[TrainRequest, Body()]) -> TrainAccepted:
        """Request a training run; it is published on ``training.requested`` and coalesced per model."""
        known = sorted(p.name for p in datasets_dir.iterdir() if p.is_dir())
        if body.dataset not in known:  # by name only: no path, no "..", nothing the OS refuses
            raise HTTPException(404, f"no model spec for dataset {body.dataset!r}: no such dataset; known: {known}")
        try:
            spec = load_model_spec(datasets_dir, body.dataset, body.model_spec).with_overrides(body.params)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, f"invalid model spec or params: {exc}"[:1000]) from exc
        request = TrainModel(
            producer=PRODUCER,
            model_name=body.model_name or spec.model_name,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            model_spec=body.model_spec,
            params=body.params,
            trigger="api",
            reason=body.reason,
        )
        return await accepted(broker, request)

    @router.get("/runs", response_model=list[RunRecord])
    async def get_runs(
        model_name: Annotated[str | None, Query()] = None, status: Annotated[str | None, Query()] = None
    ) -> list[RunRecord]:
        """Recent training runs, newest first, optionally of one model or status."""
        return runs.list(model_name, status)

    @router.get("/runs/{run_id}", response_model=RunRecord, responses=problems(404))
    async def get_run(run_id: str) -> RunRecord:
        """One run with its stage and progress; by the service's run id or the MLflow run id."""
        record = runs.get(run_id)
        if record is None:
            raise HTTPException(404, f"no training run {run_id[:80]!r} (runs are kept in memory, newest only)")
        return record

    return router


class RebuildRequest(BaseModel):
    """Rebuild a registered version from its recorded inputs."""

    model_name: str = Field(min_length=1, max_length=NAME)
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="The registered version to rebuild.")
    force: bool = Field(default=False, description="Rebuild even when the running code version differs.")
    reason: str = Field(default="", max_length=2000)


def create_rebuild_router(
    broker: KafkaBroker, mlflow: MlflowClient, datasets_dir: Path, running_code: str, credentials: Credentials
) -> APIRouter:
    router = APIRouter(tags=["training"])

    @router.post(
        "/rebuild",
        status_code=202,
        response_model=TrainAccepted,
        dependencies=[Depends(credentials.require("operator"))],
        responses=problems(401, 403, 404, 409, 413, 503),
    )
    async def post_rebuild(body: Annotated[RebuildRequest, Body()]) -> TrainAccepted:
        """Retrain a version on exactly its recorded data, spec, seed and code; registered as its audit."""
        try:
            pinned = await asyncio.to_thread(read_pin, mlflow, body.model_name, body.version, datasets_dir, body.force)
        except MlflowException as exc:
            if is_missing(exc):  # a name MLflow refuses, or cannot find
                raise HTTPException(404, f"no version {body.version} of model {body.model_name!r}") from exc
            raise HTTPException(503, f"MLflow failed: {exc.message[:300]}") from exc
        except RebuildRefused as exc:
            raise HTTPException(409, f"cannot rebuild {body.model_name} v{body.version}: {exc}"[:1000]) from exc
        except OSError as exc:
            raise HTTPException(503, f"a backend is unreachable: {exc}"[:300]) from exc
        refused = code_refusal(pinned.code_version, running_code, body.force)
        if refused:
            raise HTTPException(409, f"cannot rebuild {body.model_name} v{body.version}: {refused}")
        request = rebuild_request(body, pinned)
        return await accepted(broker, request)

    return router


def rebuild_request(body: RebuildRequest, pinned: Rebuild) -> TrainModel:
    """The training request of a rebuild: its pins say what to train on; the dataset names the topic key's model."""
    spec = pinned.spec
    return TrainModel(
        producer=PRODUCER,
        model_name=body.model_name,
        dataset=str(spec["dataset"]),
        dataset_version=pinned.dataset_versions[-1],
        model_spec=str(spec.get("spec_name") or "") or None,
        trigger="manual",
        reason=body.reason or f"rebuild of v{body.version}",
        rebuild=pinned,
    )
