"""Bad input answers 4xx with a reason in one documented shape, never a 500: every service's HTTP API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import REGISTRY
from pydantic import BaseModel

from docs.generate import service_documents
from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import SeenEvents, create_broker
from flywheel.common.problems import Problem
from flywheel.common.service import create_service_app
from flywheel.common.settings import KafkaSettings, ServiceSettings
from flywheel.features.http import create_router as features_router
from flywheel.features.store import OnlineStore
from flywheel.ingestion.http import MAX_RECORD_BYTES
from flywheel.ingestion.http import create_router as ingestion_router
from flywheel.serving.http import create_router as serving_router
from flywheel.serving.predictlog import PredictionLog
from flywheel.training.http import create_router as training_router
from flywheel.training.runs import RunBook
from tests.support.auth import DEV_CREDENTIALS, OPERATOR
from tests.unit.test_contracts import ABSURD
from tests.unit.test_feature_skew import CONTRACTS, FEATURES
from tests.unit.test_ingestion_kafka import loan
from tests.unit.test_serving_api import MODELS, engine

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
# the contract's absurd values in the columns a model or feature set reads (the id and time it does not)
INPUTS = [(column, value) for column, value, *_ in ABSURD if column not in {"applicant_id", "applied_at"}]
IDS = [f"{column}={value!r:.16}" for column, value in INPUTS]
JSON = {"content-type": "application/json"}


def raw(body: dict) -> bytes:
    """JSON as any client may send it: 401-digit integers, NaN and Infinity included."""
    return json.dumps(body, allow_nan=True).encode()


def app_of(router: Callable[[KafkaBroker], APIRouter]) -> tuple[KafkaBroker, FastAPI]:
    """A service app as ``create_service_app`` builds it (problem handlers and all) around one router."""
    broker = create_broker(KafkaSettings(), service="t")
    app = create_service_app(name="t", settings=ServiceSettings(), broker=broker, checks={}, routers=[router(broker)])
    return broker, app


async def nowhere(event) -> None:
    return None


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t", headers=OPERATOR)


def problem(response: httpx.Response) -> Problem:
    return Problem.model_validate(response.json())


class Values(BaseModel):
    values: list


@pytest.fixture(scope="module")
def openapi() -> dict[str, dict]:
    return {name: documents["openapi"] for name, documents in service_documents().items()}


def test_every_operation_that_takes_input_documents_its_problem_answers(openapi) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for service, spec in openapi.items():
        assert "HTTPValidationError" not in str(spec), service
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                where = f"{service} {method.upper()} {path}"
                if operation.get("parameters") or operation.get("requestBody"):
                    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == problem_ref, where
                if operation.get("requestBody"):
                    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == problem_ref, where


async def test_an_error_raised_with_its_field_problems_is_answered_flat_and_a_deep_body_is_a_400() -> None:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Values) -> dict:
        raise HTTPException(422, {"detail": "invalid values.0", "errors": [{"field": "values.0", "message": "no"}]})

    _, app = app_of(lambda _: router)
    async with client(app) as http:
        flat = await http.post("/echo", json={"values": [1]})
        deep = await http.post("/echo", content=b'{"values": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=JSON)
    assert flat.status_code == 422 and problem(flat).errors[0].field == "values.0"
    assert deep.status_code == 400 and problem(deep).detail


@pytest.mark.parametrize(("column", "value"), INPUTS, ids=IDS)
async def test_serving_answers_an_absurd_input_with_a_422_that_names_it(column, value) -> None:
    log = PredictionLog(nowhere, capacity=10, wait_s=1.0)
    _, app = app_of(lambda _: serving_router(engine(), MODELS, load_contracts(DATASETS), 100, prediction_log=log))
    body = {"dataset": "loans", "records": [loan(), loan(**{column: value})]}
    async with client(app) as http:
        response = await http.post("/predict", content=raw(body), headers=JSON)
    assert response.status_code == 422, response.text
    [error] = problem(response).errors
    assert error.field == f"records.1.{column}" and len(error.message) < 300


@pytest.mark.parametrize(("column", "value"), INPUTS, ids=IDS)
async def test_features_answer_an_absurd_input_with_a_422_that_names_it(column, value) -> None:
    _, app = app_of(lambda _: features_router(OnlineStore({"loans": FEATURES}), CONTRACTS))
    async with client(app) as http:
        response = await http.post(
            "/features/loans/compute",
            content=raw({"records": [loan(**{column: value})]}),
            headers=JSON,
        )
    assert response.status_code == 422 and f"records.0.{column}" in problem(response).detail


async def test_ingestion_rejects_absurd_values_with_reasons_and_refuses_what_kafka_cannot_carry() -> None:
    broker, app = app_of(lambda b: ingestion_router(b, load_contracts(DATASETS), SeenEvents(), 100, DEV_CREDENTIALS))
    records = [loan(applicant_id=f"a-{i}", **{column: value}) for i, (column, value) in enumerate(INPUTS)]
    async with TestKafkaBroker(broker), client(app) as http:
        answered = await http.post(
            "/records",
            content=raw({"dataset": "loans", "records": records}),
            headers=JSON,
        )
        huge = await http.post(
            "/records", json={"dataset": "loans", "records": [loan(applicant_id="x" * MAX_RECORD_BYTES)]}
        )
        unknown = await http.post("/records", json={"dataset": "x" * 10_000, "records": [loan()]})
    assert answered.status_code == 200, answered.text
    outcome = answered.json()
    assert outcome["rejected"] == len(INPUTS)
    assert [r["violations"][0]["column"] for r in outcome["results"]] == [column for column, _ in INPUTS]
    assert huge.status_code == 413 and "limit" in problem(huge).detail
    assert unknown.status_code == 404 and len(problem(unknown).detail) < 300


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"dataset": "../datasets/loans"}, 404, "no such dataset"),
        ({"dataset": ""}, 404, "no such dataset"),
        ({"dataset": "x" * 5000}, 422, "dataset"),
        ({"dataset": "loans", "model_spec": "x" * 200}, 404, "no model spec"),
        ({"dataset": "loans", "model_spec": "../model"}, 422, "plain name"),
        ({"dataset": "loans", "params": {"test_size": 10**401}}, 422, "test_size"),
        ({"dataset": "loans", "params": {"seed": "seven"}}, 422, "seed"),
        ({"dataset": "loans", "params": {"big": "x" * 300_000}}, 413, "larger than"),
    ],
    ids=["path", "empty", "long-name", "long-spec", "spec-path", "huge-int", "wrong-type", "too-large"],
)
async def test_training_refuses_what_it_could_not_run_before_publishing_anything(body, status, says) -> None:
    broker, app = app_of(lambda b: training_router(b, RunBook(), DATASETS, DEV_CREDENTIALS))
    published = []
    broker.subscriber("training.requested")(published.append)
    async with TestKafkaBroker(broker), client(app) as http:
        response = await http.post("/train", content=raw(body), headers=JSON)
    assert response.status_code == status and says in problem(response).detail, response.text
    assert published == []


async def test_every_request_is_timed_by_its_route_method_and_status_even_one_that_crashes() -> None:
    def routes(broker: KafkaBroker) -> APIRouter:
        router = APIRouter()

        @router.get("/items/{item}")
        async def item(item: int) -> dict:
            if item == 0:
                raise RuntimeError("a bug")
            return {"item": item}

        return router

    _, app = app_of(routes)

    def count(route: str, status: str) -> float:
        labels = {"service": "t", "route": route, "method": "GET", "status": status}
        return REGISTRY.get_sample_value("flywheel_http_request_duration_seconds_count", labels) or 0.0

    before = {key: count(*key) for key in [("/items/{item}", "200"), ("/items/{item}", "500"), ("unmatched", "404")]}
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/items/7")).json() == {"item": 7}
        assert (await http.get("/items/0")).status_code == 500
        assert (await http.get("/nothing/here")).status_code == 404
    assert {key: count(*key) - n for key, n in before.items()} == {
        ("/items/{item}", "200"): 1,
        ("/items/{item}", "500"): 1,
        ("unmatched", "404"): 1,
    }
