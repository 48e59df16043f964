"""Serving's HTTP routes: predictions, rollouts and the models it serves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Depends, HTTPException
from pydantic import AwareDatetime, BaseModel, Field, JsonValue, model_validator

from flywheel.common.auth import Credentials, Principal
from flywheel.common.contracts import DataContract
from flywheel.common.problems import problems
from flywheel.schemas import ModelApproved, new_id
from flywheel.serving.engine import Engine
from flywheel.serving.microbatch import MicroBatches
from flywheel.serving.models import ServedModel, inputs_violations
from flywheel.serving.onlineview import Assembled, FeaturesUnavailable, OnlineView, assemble
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.registry import RegistryClient
from flywheel.serving.settings import Strategy


class EntityRequest(BaseModel):
    """An entity to score from its latest stored feature vector, plus any fields known at request time."""

    entity_id: str = Field(min_length=1, max_length=200, description="The dataset's entity key value.")
    fields: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Raw fields known at request time: a feature whose inputs are all here is computed from "
        "them (age 0) instead of read from the online store.",
    )


class PredictRequest(BaseModel):
    """Either whole records (raw fields as the dataset's contract names them) or entities (by id)."""

    dataset: str | None = Field(default=None, description="Which dataset's model; optional with one model.")
    # Any, not JsonValue: a JSON body holds JSON values only, and JsonValue's check is a Python call per value
    records: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    entities: list[EntityRequest] | None = Field(
        default=None, min_length=1, description="Entities answered from serving's view of the online store."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PredictRequest:
        if (self.records is None) == (self.entities is None):
            raise ValueError("send either records or entities, not both and not neither")
        return self


class ServedFeatures(BaseModel):
    """Where an answer by entity got its features: the stored vector's version and time, each feature's age."""

    entity_id: str
    feature_set: str | None = Field(description="Of the stored vector (None when every feature came from the request).")
    feature_set_version: str | None
    event_time: AwareDatetime | None = Field(description="The stored vector's event time.")
    age_s: dict[str, float] = Field(description="Each feature's age in seconds; 0 for a request-time value.")
    from_request: list[str] = Field(description="The features computed from the request's own fields.")


class Prediction(BaseModel):
    prediction_id: str
    request_id: str | None = None
    prediction: JsonValue = Field(description="A classifier's class, or a regression model's value (a number).")
    probability: float | None = Field(
        default=None, description="A classifier's probability of the positive class; None for a regression model."
    )
    model_name: str
    model_version: str
    variant: str
    features: ServedFeatures | None = Field(default=None, description="For an answer by entity id.")


class PredictResponse(BaseModel):
    model_name: str
    predictions: list[Prediction]


def served_features(entity_id: str, found: Assembled) -> ServedFeatures:
    stored = found.stored
    return ServedFeatures(
        entity_id=entity_id,
        feature_set=stored.feature_set if stored else None,
        feature_set_version=stored.feature_set_version if stored else None,
        event_time=stored.event_time if stored else None,
        age_s={name: round(age, 3) for name, age in found.ages_s.items()},
        from_request=found.from_request,
    )


class RolloutRequest(BaseModel):
    model_name: str
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="A registered version's number.")
    strategy: Strategy | None = None


log = structlog.get_logger(__name__)


async def _refuse_everyone() -> Principal:
    """A router built without credentials (a test's) lets no one roll out."""
    raise HTTPException(401, "no credentials are configured here")


def create_router(
    engine: Engine,
    model_of_dataset: dict[str, str],
    contracts: dict[str, DataContract],
    batch_max: int,
    prediction_log: PredictionLog,
    view: OnlineView | None = None,
    feature_max_age_s: float | None = None,
    registry: RegistryClient | None = None,
    credentials: Credentials | None = None,
) -> APIRouter:
    router = APIRouter(tags=["predictions"])
    view = view if view is not None else OnlineView()
    batches = MicroBatches(engine.score, batch_max)  # concurrent requests share a model call

    def model_for(dataset: str | None) -> str:
        if dataset is None:
            if len(model_of_dataset) != 1:
                raise HTTPException(422, f"name the dataset: one of {sorted(model_of_dataset)}")
            return next(iter(model_of_dataset.values()))
        if dataset not in model_of_dataset:
            raise HTTPException(404, f"no model serves dataset {dataset[:80]!r}; served: {sorted(model_of_dataset)}")
        return model_of_dataset[dataset]

    def check_inputs(
        model: ServedModel, records: list[dict[str, Any]], where: str = "records", partial: bool = False
    ) -> None:
        """422 naming each invalid input field; ``partial``: only the fields present are checked."""
        contract = contracts.get(model.dataset)
        invalid = [
            {"field": f"{where}.{index}.{v.column}", "rule": v.rule, "message": v.message}
            for index, (record, violations) in enumerate(
                zip(records, inputs_violations(model, contract, records), strict=True)
            )
            for v in violations
            if not partial or v.column in record
        ]
        if invalid:
            fields = ", ".join(p["field"] for p in invalid[:5])
            raise HTTPException(422, {"detail": f"invalid {fields}", "errors": invalid})

    def from_online_store(
        model: ServedModel, entities: list[EntityRequest]
    ) -> tuple[list[dict[str, Any]], list[Assembled]]:
        """Each entity's record from the view (request-time fields first); 404 unknown, 409 stale or incomplete."""
        check_inputs(model, [e.fields for e in entities], where="entities", partial=True)
        now = datetime.now(UTC)
        assembled, refused = [], []
        for index, entity in enumerate(entities):
            stored = view.get(model.dataset, entity.entity_id)
            try:
                assembled.append(
                    assemble(model.features, entity.entity_id, stored, entity.fields, now, feature_max_age_s)
                )
            except FeaturesUnavailable as problem:
                refused.append((problem.status, {"field": f"entities.{index}.entity_id", "message": problem.message}))
        if refused:
            status = max(code for code, _ in refused)  # 409 (stale) over 404 (unknown): both are named
            errors = [error for _, error in refused]
            raise HTTPException(status, {"detail": "; ".join(e["message"] for e in errors[:5]), "errors": errors})
        records = [a.record for a in assembled]
        return records, assembled

    async def predict_with(name: str, request: PredictRequest) -> PredictResponse:
        batch = request.records if request.records is not None else request.entities or []
        if len(batch) > batch_max:
            raise HTTPException(413, f"{len(batch)} records exceed the limit of {batch_max}")
        if name not in engine.champions:
            raise HTTPException(503, f"model {name!r} has no champion yet: train and approve one first")
        champion = engine.champions[name]  # the one that checks the request answers it, even if replaced meanwhile
        assembled = None
        if request.entities is not None:
            records, assembled = from_online_store(champion, request.entities)
        else:
            records = request.records or []
            check_inputs(champion, records)
        # one id per record ties its served answer to a shadow's in the prediction log
        answers, logged = await batches.score(champion, records, [new_id().hex for _ in records])
        await prediction_log.record(logged)  # waits while the log is behind: back-pressure, not loss
        predictions = [Prediction(**a.__dict__) for a in answers]
        for prediction, entity, found in zip(predictions, request.entities or [], assembled or [], strict=False):
            prediction.features = served_features(entity.entity_id, found)
        return PredictResponse(model_name=name, predictions=predictions)

    @router.post("/predict", response_model=PredictResponse, responses=problems(404, 409, 413, 503))
    async def predict(request: PredictRequest) -> PredictResponse:
        """Score records, or entities by id from the online store, with the champion (or the rollout's pick)."""
        return await predict_with(model_for(request.dataset), request)

    @router.post("/models/{name}/predict", response_model=PredictResponse, responses=problems(404, 409, 413, 503))
    async def predict_model(name: str, request: PredictRequest) -> PredictResponse:
        """Score records or entities with a named model (any model whose champion the registry announced)."""
        if name not in model_of_dataset.values() and not await engine.find_champion(name):
            raise HTTPException(
                404, f"model {name[:80]!r} has no champion in the registry; served: {sorted(engine.champions)}"
            )
        return await predict_with(name, request)

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

    async def may_roll_out(name: str, version: str) -> None:
        """Only a version that passed its gates or that an operator approved takes live traffic (the registry says)."""
        if registry is None:
            return
        try:
            described = await registry.version(name, version)
        except httpx.HTTPError as exc:
            raise HTTPException(503, f"the registry cannot say whether v{version} may serve: {exc!r}"[:300]) from exc
        if described is None:
            raise HTTPException(404, f"model {name[:80]!r} has no version {version} in the registry")
        if not described.get("may_serve"):
            status = described.get("status", "unknown")
            raise HTTPException(
                409,
                f"v{version} of {name[:80]!r} is {status}: only a version that passed its gates or that an"
                " operator approved can be rolled out",
            )

    operator = Depends(credentials.require("operator") if credentials is not None else _refuse_everyone)

    @router.post("/rollouts", tags=["rollouts"], status_code=202, responses=problems(401, 403, 404, 409, 503))
    async def start_rollout(request: RolloutRequest, by: Principal = operator) -> dict[str, Any]:
        """Roll out a registered version against the champion with a strategy (operators only)."""
        if request.model_name not in engine.champions:
            raise HTTPException(409, f"model {request.model_name[:80]!r} has no champion to compare a candidate with")
        await may_roll_out(request.model_name, request.version)
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
        log.info("rollout asked", model=request.model_name, version=request.version, by=by.name)
        started = await engine.start_rollout(approved, request.strategy)
        if started is None:
            raise HTTPException(409, f"version {request.version} is already the champion")
        if started.action == "aborted":
            raise HTTPException(422, started.reason)
        return started.model_dump(mode="json")

    return router
