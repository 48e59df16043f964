"""Training's HTTP routes: request a run, follow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, Field, JsonValue

from flywheel.common.kafka import publish_event
from flywheel.common.modelspec import load_model_spec
from flywheel.schemas import TrainModel
from flywheel.training.handlers import PRODUCER
from flywheel.training.runs import RunBook, RunRecord


class TrainRequest(BaseModel):
    """Train a model; everything but the dataset has a default."""

    dataset: str
    model_name: str | None = Field(default=None, description="None: the spec's model_name.")
    dataset_version: str | None = Field(default=None, description="None: the newest version.")
    model_spec: str | None = Field(default=None, description="None: datasets/<dataset>/model.yaml.")
    params: dict[str, JsonValue] = {}
    reason: str = ""


class TrainAccepted(BaseModel):
    request_id: str
    model_name: str
    status: str = "accepted"


def create_router(broker: KafkaBroker, runs: RunBook, datasets_dir: Path) -> APIRouter:
    router = APIRouter(tags=["training"])

    @router.post("/train", status_code=202, response_model=TrainAccepted)
    async def post_train(body: Annotated[TrainRequest, Body()]) -> TrainAccepted:
        """Request a training run; it is published on ``training.requested`` and coalesced per model."""
        try:
            spec = load_model_spec(datasets_dir, body.dataset, body.model_spec).with_overrides(body.params)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, f"invalid model spec or params: {exc}") from exc
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
        await publish_event(broker, request)
        return TrainAccepted(request_id=str(request.event_id), model_name=request.model_name)

    @router.get("/runs", response_model=list[RunRecord])
    async def get_runs(
        model_name: Annotated[str | None, Query()] = None, status: Annotated[str | None, Query()] = None
    ) -> list[RunRecord]:
        """Recent training runs, newest first, optionally of one model or status."""
        return runs.list(model_name, status)

    @router.get("/runs/{run_id}", response_model=RunRecord)
    async def get_run(run_id: str) -> RunRecord:
        """One run with its stage and progress; by the service's run id or the MLflow run id."""
        record = runs.get(run_id)
        if record is None:
            raise HTTPException(404, f"no training run {run_id!r} (runs are kept in memory, newest only)")
        return record

    return router
