"""Serving's HTTP routes: predictions, rollouts and the models it serves."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, JsonValue

from flywheel.common.contracts import DataContract
from flywheel.common.problems import problems
from flywheel.schemas import ModelApproved
from flywheel.serving.engine import Engine
from flywheel.serving.models import input_violations
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.settings import Strategy


class PredictRequest(BaseModel):
    """Records to score: raw fields as the dataset's contract names them."""

    dataset: str | None = Field(default=None, description="Which dataset's model; optional with one model.")
    records: list[dict[str, JsonValue]] = Field(min_length=1)


class Prediction(BaseModel):
    prediction_id: str
    request_id: str | None = None
    prediction: JsonValue
    probability: float | None
    model_name: str
    model_version: str
    variant: str


class PredictResponse(BaseModel):
    model_name: str
    predictions: list[Prediction]


class RolloutRequest(BaseModel):
    model_name: str
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="A registered version's number.")
    strategy: Strategy | None = None


def create_router(
    engine: Engine,
    model_of_dataset: dict[str, str],
    contracts: dict[str, DataContract],
    batch_max: int,
    prediction_log: PredictionLog,
) -> APIRouter:
    router = APIRouter(tags=["predictions"])

    def model_for(dataset: str | None) -> str:
        if dataset is None:
            if len(model_of_dataset) != 1:
                raise HTTPException(422, f"name the dataset: one of {sorted(model_of_dataset)}")
            return next(iter(model_of_dataset.values()))
        if dataset not in model_of_dataset:
            raise HTTPException(404, f"no model serves dataset {dataset[:80]!r}; served: {sorted(model_of_dataset)}")
        return model_of_dataset[dataset]

    def check_inputs(name: str, records: list[dict[str, Any]]) -> None:
        model = engine.champions[name]
        contract = contracts.get(model.dataset)
        invalid = [
            {"field": f"records.{index}.{v.column}", "rule": v.rule, "message": v.message}
            for index, record in enumerate(records)
            for v in input_violations(model, contract, record)
        ]
        if invalid:
            fields = ", ".join(p["field"] for p in invalid[:5])
            raise HTTPException(422, {"detail": f"invalid {fields}", "errors": invalid})

    async def predict_with(name: str, records: list[dict[str, Any]]) -> PredictResponse:
        if len(records) > batch_max:
            raise HTTPException(413, f"{len(records)} records exceed the limit of {batch_max}")
        if name not in engine.champions:
            raise HTTPException(503, f"model {name!r} has no champion yet: train and approve one first")
        check_inputs(name, records)
        # one id per record ties its served answer to a shadow's in the prediction log
        answers, logged = engine.score(name, records, [uuid.uuid4().hex for _ in records])
        await prediction_log.record(logged)  # waits while the log is behind: back-pressure, not loss
        return PredictResponse(model_name=name, predictions=[Prediction(**a.__dict__) for a in answers])

    @router.post("/predict", response_model=PredictResponse, responses=problems(404, 413, 503))
    async def predict(request: PredictRequest) -> PredictResponse:
        """Score records with the champion (or, during a rollout, the variant routing picks)."""
        return await predict_with(model_for(request.dataset), request.records)

    @router.post("/models/{name}/predict", response_model=PredictResponse, responses=problems(404, 413, 503))
    async def predict_model(name: str, request: PredictRequest) -> PredictResponse:
        """Score records with a named model (any model whose champion the registry announced)."""
        if name not in model_of_dataset.values() and not await engine.find_champion(name):
            raise HTTPException(
                404, f"model {name[:80]!r} has no champion in the registry; served: {sorted(engine.champions)}"
            )
        return await predict_with(name, request.records)

    @router.get("/models", tags=["rollouts"])
    async def models() -> dict[str, Any]:
        """The models served, their champion versions and whether a rollout is running."""
        dataset_of = {name: model.dataset for name, model in engine.champions.items()}
        dataset_of |= {name: dataset for dataset, name in model_of_dataset.items()}
        return {
            name: {
                "dataset": dataset,
                "champion_version": getattr(engine.champions.get(name), "version", None),
                "rollout": name in engine.rollouts,
            }
            for name, dataset in sorted(dataset_of.items())
        }

    @router.get("/rollout", tags=["rollouts"])
    async def rollout() -> dict[str, Any]:
        """The rollouts in progress (step, traffic, per-variant figures) and the recent steps."""
        return {
            "active": [r.describe() for r in engine.rollouts.values()],
            "recent": [e.model_dump(mode="json") for e in engine.history[-20:]],
        }

    @router.post("/rollouts", tags=["rollouts"], status_code=202, responses=problems(409))
    async def start_rollout(request: RolloutRequest) -> dict[str, Any]:
        """Roll out a registered version against the champion with a strategy."""
        if request.model_name not in engine.champions:
            raise HTTPException(409, f"model {request.model_name[:80]!r} has no champion to compare a candidate with")
        approved = ModelApproved(
            producer="serving-api",
            model_name=request.model_name,
            version=request.version,
            run_id="",
            model_uri=f"models:/{request.model_name}/{request.version}",
            metrics={},
            gates=[],
            champion_version=engine.champions[request.model_name].version,
        )
        started = await engine.start_rollout(approved, request.strategy)
        if started is None:
            raise HTTPException(409, f"version {request.version} is already the champion")
        if started.action == "aborted":
            raise HTTPException(422, started.reason)
        return started.model_dump(mode="json")

    return router
