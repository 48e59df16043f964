"""Serving's HTTP answers and its Kafka micro-batches, on the in-memory broker."""

from __future__ import annotations

import base64

from fastapi import FastAPI
from fastapi.testclient import TestClient
from faststream.kafka import TestKafkaBroker

from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import (
    DEADLETTERS,
    PREDICTIONS,
    PREDICTIONS_REQUESTS,
    MessageDeadLettered,
    PredictionMade,
    PredictionRequested,
)
from flywheel.serving.engine import Engine
from flywheel.serving.http import create_router
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.settings import ServingSettings
from flywheel.serving.subscribers import register_subscribers
from tests.unit.test_serving_engine import DATASETS, RichApproved, application, served, truth

MODELS = {"loans": "loans-approval"}


def engine(with_champion: bool = True) -> Engine:
    async def nothing(*args) -> None:
        return None

    built = Engine(ServingSettings(), nothing, nothing, nothing)
    if with_champion:
        built.champions["loans-approval"] = served("1", RichApproved())
    return built


def client(built: Engine) -> TestClient:
    app = FastAPI()

    async def nowhere(event) -> None:
        return None

    log = PredictionLog(nowhere, capacity=1000, wait_s=1.0)
    app.include_router(create_router(built, MODELS, load_contracts(DATASETS), batch_max=100, prediction_log=log))
    return TestClient(app)


def test_predict_answers_each_record_with_the_model_version_and_variant() -> None:
    records = [application(i) for i in range(3)]
    response = client(engine()).post("/predict", json={"dataset": "loans", "records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "loans-approval"
    assert [p["prediction"] for p in body["predictions"]] == [truth(r) for r in records]
    first = body["predictions"][0]
    assert first["model_version"] == "1" and first["variant"] == "champion" and len(first["prediction_id"]) == 32


def test_predict_without_a_champion_is_a_503_that_says_so() -> None:
    response = client(engine(with_champion=False)).post("/predict", json={"records": [application(0)]})
    assert response.status_code == 503 and "no champion" in response.json()["detail"]


def test_an_invalid_field_is_a_422_that_names_it() -> None:
    bad = {**application(0), "age": "old"}
    response = client(engine()).post("/predict", json={"dataset": "loans", "records": [application(1), bad]})
    assert response.status_code == 422
    assert "records.1.age" in response.text


def test_a_malformed_body_and_an_unknown_dataset_are_4xx_not_500() -> None:
    api = client(engine())
    assert api.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/predict", json={"records": []}).status_code == 422
    unknown = api.post("/predict", json={"dataset": "houses", "records": [application(0)]})
    assert unknown.status_code == 404 and "houses" in unknown.json()["detail"]
    too_many = api.post("/predict", json={"records": [application(i) for i in range(101)]})
    assert too_many.status_code == 413


def test_rollout_status_shows_nothing_running() -> None:
    body = client(engine()).get("/rollout").json()
    assert body == {"active": [], "recent": []}


async def test_kafka_requests_are_scored_in_micro_batches_and_published_once_each() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker, engine(), MODELS)
    answers: list[PredictionMade] = []

    @broker.subscriber(PREDICTIONS.name)
    async def collect(body: dict) -> None:
        answers.append(PredictionMade.model_validate(body))

    requests = [
        PredictionRequested(producer="t", dataset="loans", request_id=f"r-{i}", data=application(i)) for i in range(20)
    ]
    async with TestKafkaBroker(broker) as test_broker:
        for request in [*requests, requests[0]]:  # the last one is a redelivery
            await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in requests)
    by_request = {a.request_id: a.prediction for a in answers}
    assert all(by_request[f"r-{i}"] == truth(application(i)) for i in range(20))


async def test_a_request_no_champion_can_answer_is_dead_lettered_with_the_reason() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker, engine(with_champion=False), MODELS)
    letters: list[MessageDeadLettered] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(MessageDeadLettered.model_validate(body))

    request = PredictionRequested(producer="t", dataset="loans", request_id="r-1", data=application(0))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    [letter] = letters
    assert "no champion" in letter.reason and letter.source_topic == PREDICTIONS_REQUESTS.name
    assert PredictionRequested.model_validate_json(base64.b64decode(letter.original_value)) == request


async def test_a_transient_scoring_failure_is_retried_and_each_request_answered_once_with_stable_ids() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    built = engine()
    failures = iter([RuntimeError("model server hiccup")])
    score = built.score

    def flaky(*args, **kwargs):
        if (error := next(failures, None)) is not None:
            raise error
        return score(*args, **kwargs)

    built.score = flaky  # type: ignore[method-assign]
    register_subscribers(broker, built, MODELS)
    answers: list[PredictionMade] = []

    @broker.subscriber(PREDICTIONS.name)
    async def collect(body: dict) -> None:
        answers.append(PredictionMade.model_validate(body))

    requests = [
        PredictionRequested(producer="t", dataset="loans", request_id=f"r-{i}", data=application(i)) for i in range(5)
    ]
    async with TestKafkaBroker(broker) as test_broker:
        for request in requests:
            await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in requests)
    # a new process scoring the same requests again logs the same prediction and event ids
    again: list[PredictionMade] = []
    broker2 = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker2, engine(), MODELS)

    @broker2.subscriber(PREDICTIONS.name)
    async def collect_again(body: dict) -> None:
        again.append(PredictionMade.model_validate(body))

    async with TestKafkaBroker(broker2) as test_broker:
        for request in requests:
            await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    assert {(a.event_id, a.prediction_id) for a in again} == {(a.event_id, a.prediction_id) for a in answers}


async def test_a_permanent_scoring_failure_lands_on_deadletters_with_the_reason() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    built = engine()

    def broken(*args, **kwargs):
        raise RuntimeError("model file corrupted")

    built.score = broken  # type: ignore[method-assign]
    register_subscribers(broker, built, MODELS)
    letters: list[MessageDeadLettered] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(MessageDeadLettered.model_validate(body))

    request = PredictionRequested(producer="t", dataset="loans", request_id="r-1", data=application(0))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    assert letters and "model file corrupted" in letters[0].reason
