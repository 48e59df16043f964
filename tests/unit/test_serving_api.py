"""Serving's HTTP answers and its Kafka micro-batches, on the in-memory broker."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient
from faststream.kafka import KafkaBroker, TestKafkaBroker

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import (
    DEADLETTERS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    PREDICTIONS_REQUESTS,
    ChampionChanged,
    LabelledAnswer,
    MessageDeadLettered,
    ModelApproved,
    PredictionLabelled,
    PredictionMade,
    PredictionRequested,
)
from flywheel.serving.engine import Engine
from flywheel.serving.http import create_router
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.settings import ServingSettings
from flywheel.serving.subscribers import register_subscribers
from tests.unit.test_serving_engine import DATASETS, Constant, Harness, RichApproved, application, served, truth

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


def streamed_requests(n: int) -> list[PredictionRequested]:
    """``n`` loans requests (``r-0``, ``r-1``, ...) as a client puts them on ``predictions.requests``."""
    return [
        PredictionRequested(producer="t", dataset="loans", request_id=f"r-{i}", data=application(i)) for i in range(n)
    ]


async def stream(broker: KafkaBroker, requests: list[PredictionRequested]) -> None:
    """Publish ``requests`` in order on the in-memory broker, where serving's subscribers answer them."""
    async with TestKafkaBroker(broker) as test_broker:
        for request in requests:
            await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)


async def test_kafka_requests_are_scored_in_micro_batches_and_published_once_each() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker, engine(), MODELS, moves=MOVES)
    answers: list[PredictionMade] = []

    @broker.subscriber(PREDICTIONS.name)
    async def collect(body: dict) -> None:
        answers.append(PredictionMade.model_validate(body))

    requests = streamed_requests(20)
    await stream(broker, [*requests, requests[0]])  # the last one is a redelivery
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in requests)
    by_request = {a.request_id: a.prediction for a in answers}
    assert all(by_request[f"r-{i}"] == truth(application(i)) for i in range(20))


async def test_a_request_no_champion_can_answer_is_dead_lettered_with_the_reason() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker, engine(with_champion=False), MODELS, moves=MOVES)
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
    register_subscribers(broker, built, MODELS, moves=MOVES)
    answers: list[PredictionMade] = []

    @broker.subscriber(PREDICTIONS.name)
    async def collect(body: dict) -> None:
        answers.append(PredictionMade.model_validate(body))

    requests = streamed_requests(5)
    await stream(broker, requests)
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in requests)
    # a new process scoring the same requests again logs the same prediction and event ids
    again: list[PredictionMade] = []
    broker2 = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_subscribers(broker2, engine(), MODELS, moves=MOVES)

    @broker2.subscriber(PREDICTIONS.name)
    async def collect_again(body: dict) -> None:
        again.append(PredictionMade.model_validate(body))

    await stream(broker2, requests)
    assert {(a.event_id, a.prediction_id) for a in again} == {(a.event_id, a.prediction_id) for a in answers}


async def test_a_permanent_scoring_failure_lands_on_deadletters_with_the_reason() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    built = engine()

    def broken(*args, **kwargs):
        raise RuntimeError("model file corrupted")

    built.score = broken  # type: ignore[method-assign]
    register_subscribers(broker, built, MODELS, moves=MOVES)
    letters: list[MessageDeadLettered] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(MessageDeadLettered.model_validate(body))

    request = PredictionRequested(producer="t", dataset="loans", request_id="r-1", data=application(0))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(request.to_bytes(), PREDICTIONS_REQUESTS.name)
    assert letters and "model file corrupted" in letters[0].reason


async def announced_champion(name: str) -> str | None:
    """The registry of these tests: version 2 of ``loans-approval`` is its champion."""
    return "2" if name == "loans-approval" else None


async def anything_registered(name: str, version: str) -> bool:
    return True


async def test_streamed_requests_in_a_shadow_rollout_publish_both_answers_each_caused_by_its_request() -> None:
    h = Harness(served("2", Constant(1)), strategy="shadow")
    await h.engine.start_rollout(h.approve())
    broker, _, out = kafka_serving(engine=h.engine)
    requests = streamed_requests(6)
    await stream(broker, requests)
    answers = [PredictionMade.model_validate(body) for body in out[PREDICTIONS.name]]
    by_cause = {r.event_id: r.request_id for r in requests}
    assert sorted((a.request_id, a.served) for a in answers) == sorted(
        (r.request_id, served) for r in requests for served in (True, False)
    )
    assert all(by_cause[a.causation_id] == a.request_id for a in answers)  # each under the request it answers
    assert {a.model_version for a in answers if not a.served} == {"2"}


MOVES = ChampionMoves(announced_champion, anything_registered)


def kafka_serving(**options) -> tuple:
    """A serving subscriber set on the in-memory broker, with what it publishes collected."""
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    built = options.pop("engine", None) or engine()
    options.setdefault("moves", ChampionMoves(announced_champion, options.get("registered", anything_registered)))
    register_subscribers(broker, built, MODELS, contracts=load_contracts(DATASETS), **options)
    out: dict[str, list[dict]] = {PREDICTIONS.name: [], DEADLETTERS.name: []}
    for topic, bodies in out.items():
        broker.subscriber(topic)(_collector(bodies))
    return broker, built, out


def _collector(bodies: list[dict]):
    async def collect(body: dict) -> None:
        bodies.append(body)

    return collect


async def test_one_poison_in_a_batch_of_requests_is_dead_lettered_with_its_bytes_and_the_rest_answered_once() -> None:
    broker, _, out = kafka_serving()
    good = [
        PredictionRequested(producer="t", dataset="loans", request_id=f"ok-{i}", data=application(i)) for i in range(3)
    ]
    nan_salary = PredictionRequested(producer="t", dataset="loans", request_id="bad-nan", data=application(9))
    nan_salary = json.dumps({**nan_salary.model_dump(mode="json"), "data": {**application(9), "salary": float("nan")}})
    poison = {
        "not JSON": b"\x00\xff not json",
        "empty": b"",
        "wrong shape": json.dumps(["x", 1]).encode(),
        "NaN salary": nan_salary.encode(),
        "10k-char category": PredictionRequested(
            producer="t", dataset="loans", request_id="bad-long", data={**application(1), "elevel": "x" * 10_000}
        ).to_bytes(),
        "unknown model": PredictionRequested(
            producer="t", dataset="loans", request_id="bad-model", data=application(2), model_name="no-such-model"
        ).to_bytes(),
    }
    batch = [good[0].to_bytes(), good[0].to_bytes(), *poison.values(), good[1].to_bytes(), good[2].to_bytes()]
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(*batch, topic=PREDICTIONS_REQUESTS.name)
        await test_broker.publish(good[0].to_bytes(), PREDICTIONS_REQUESTS.name)  # redelivered in a later batch
    assert sorted(a["request_id"] for a in out[PREDICTIONS.name]) == ["ok-0", "ok-1", "ok-2"]
    letters = {base64.b64decode(d["original_value"]): d for d in out[DEADLETTERS.name]}
    assert len(out[DEADLETTERS.name]) == len(poison) and set(letters) == set(poison.values())
    reasons = {kind: letters[value]["reason"] for kind, value in poison.items()}
    assert "not JSON" in reasons["not JSON"] and "not JSON" in reasons["empty"]
    assert "invalid" in reasons["wrong shape"]
    assert "salary is required" in reasons["NaN salary"]
    assert "elevel" in reasons["10k-char category"]
    assert "no champion serves model 'no-such-model'" in reasons["unknown model"]


async def test_labelled_predictions_are_credited_once_and_a_malformed_one_dead_lettered() -> None:
    broker, built, out = kafka_serving()
    credited = []
    built.on_labelled = credited.append  # type: ignore[method-assign]
    answer = LabelledAnswer(
        prediction_id="p", variant="champion", model_version="1", prediction=1, predicted_at=datetime.now(UTC)
    )
    good = [
        PredictionLabelled(
            producer="t",
            dataset="loans",
            model_name="loans-approval",
            label=i % 2,
            label_event_id=uuid.uuid4(),
            answers=[answer.model_copy(update={"prediction_id": f"p{i}"})],
        )
        for i in range(2)
    ]
    no_answer = json.dumps({**good[0].model_dump(mode="json"), "event_id": str(uuid.uuid4()), "answers": []}).encode()
    async with TestKafkaBroker(broker) as test_broker:
        for body in [good[0].to_bytes(), no_answer, good[0].to_bytes(), good[1].to_bytes()]:  # the 3rd: a redelivery
            await test_broker.publish(body, PREDICTIONS_LABELLED.name)
    assert [labelled.answers[0].prediction_id for labelled in credited] == ["p0", "p1"]
    letters = [MessageDeadLettered.model_validate(d) for d in out[DEADLETTERS.name]]
    assert [base64.b64decode(letter.original_value) for letter in letters] == [no_answer]
    assert "answers" in letters[0].reason


async def test_an_approval_or_champion_of_a_model_the_registry_does_not_know_is_dead_lettered() -> None:
    async def registered(name: str, version: str) -> bool:
        return name == "loans-approval"

    broker, built, out = kafka_serving(registered=registered)
    started = []

    async def start_rollout(approved, strategy=None):
        started.append((approved.model_name, approved.version))

    built.start_rollout = start_rollout  # type: ignore[method-assign]
    used = []

    async def use_champion(change):
        used.append((change.model_name, change.version))

    built.use_champion = use_champion  # type: ignore[method-assign]
    unknown = ModelApproved(
        producer="t", model_name="no-such-model", version="1", run_id="", model_uri="", metrics={}, gates=[]
    )
    unknown_champion = ChampionChanged(model_name="no-such-model", version="1", action="promote", actor="t")
    champion = ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="t")
    known = ModelApproved(
        producer="t", model_name="loans-approval", version="2", run_id="", model_uri="", metrics={}, gates=[]
    )
    async with TestKafkaBroker(broker) as test_broker:
        for event in (unknown, known):
            await test_broker.publish(event.to_bytes(), MODELS_APPROVED.name)
        for change in (unknown_champion, champion):
            await test_broker.publish(change.to_bytes(), MODELS_CHAMPION.name)
    assert started == [("loans-approval", "2")] and used == [("loans-approval", "2")]
    letters = out[DEADLETTERS.name]
    assert [base64.b64decode(d["original_value"]) for d in letters] == [unknown.to_bytes(), unknown_champion.to_bytes()]
    assert all("version '1' of model 'no-such-model' is not in the registry" in d["reason"] for d in letters)
    assert [d["attempts"] for d in letters] == [1, 1], "refused at once, not retried"
