"""Serving answers by entity id from its view of the online store (``features.online``), in memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from faststream.kafka import TestKafkaBroker

from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import DEADLETTERS, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import FEATURES_ONLINE, FeaturesComputed
from flywheel.serving.http import create_router
from flywheel.serving.onlineview import OnlineView
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.subscribers import register_view_subscriber
from tests.unit.test_serving_api import MODELS, engine
from tests.unit.test_serving_engine import DATASETS, FEATURES, application

MAX_AGE_S = 3600.0
NAN = float("nan")


def vector(record: dict, event_time: datetime, version: str = FEATURES.version) -> FeaturesComputed:
    """The vector the features service publishes for a record (its code: ``FeatureSet.compute``)."""
    values = {k: (None if v != v else v) for k, v in FEATURES.compute(record).items()}
    return FeaturesComputed(
        producer="features",
        dataset="loans",
        feature_set=FEATURES.feature_set,
        feature_set_version=version,
        entity_id=record["applicant_id"],
        event_time=event_time,
        values=values,
        inputs=record,
    )


def client(view: OnlineView) -> TestClient:
    async def nowhere(event) -> None:
        return None

    app = FastAPI()
    log = PredictionLog(nowhere, capacity=1000, wait_s=1.0)
    router = create_router(engine(), MODELS, load_contracts(DATASETS), 100, log, view, MAX_AGE_S)
    app.include_router(router)
    return TestClient(app)


def problem(response) -> dict:
    """The Problem body (a bare FastAPI app nests a route's Problem under ``detail``; the services flatten it)."""
    body = response.json()
    return body["detail"] if isinstance(body["detail"], dict) else body


async def folded(*vectors: FeaturesComputed | bytes, letters: list[dict] | None = None) -> OnlineView:
    """A view fed through serving's own subscriber, as ``features.online`` delivers the vectors."""
    view = OnlineView()
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="serving-test")
    register_view_subscriber(broker, view, load_contracts(DATASETS))

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        (letters if letters is not None else []).append(body)

    async with TestKafkaBroker(broker) as test_broker:
        for v in vectors:
            await test_broker.publish(v if isinstance(v, bytes) else v.to_bytes(), FEATURES_ONLINE.name)
    return view


async def test_absurd_vectors_are_dead_lettered_with_the_reason_and_never_answered_from() -> None:
    now = datetime.now(UTC)
    good = vector(application(4), now)
    body = good.model_dump(mode="json")
    absurd = {
        "NaN feature": json.dumps({**body, "entity_id": "nan", "values": {**good.values, "salary": NAN}}),
        "1e308 salary": vector({**application(5), "salary": 1e308}, now).model_dump_json(),
        "10k-char category": vector({**application(6), "elevel": "x" * 10_000}, now).model_dump_json(),
        "unknown dataset": vector(application(7), now).model_copy(update={"dataset": "nope"}).model_dump_json(),
        "not JSON": "{not json",
    }
    letters: list[dict] = []
    view = await folded(*(a.encode() for a in absurd.values()), good, letters=letters)
    assert len(view) == 1 and view.get("loans", "a-4") is not None
    assert len(letters) == len(absurd), [letter["reason"] for letter in letters]
    reasons = " | ".join(letter["reason"] for letter in letters)
    for expected in ("not a finite number", "1e+308", "breaks the contract", "'nope'", "not JSON"):
        assert expected in reasons, reasons


async def test_an_entity_id_alone_is_answered_as_its_whole_record_is_with_each_features_age() -> None:
    now = datetime.now(UTC)
    records = [application(i) for i in range(6)]
    view = await folded(*(vector(r, now - timedelta(seconds=30)) for r in records))
    api = client(view)
    whole = api.post("/predict", json={"records": records}).json()["predictions"]
    by_id = api.post("/predict", json={"entities": [{"entity_id": r["applicant_id"]} for r in records]})
    assert by_id.status_code == 200, by_id.text
    answers = by_id.json()["predictions"]
    assert [(a["prediction"], a["probability"]) for a in answers] == [
        (w["prediction"], w["probability"]) for w in whole
    ]
    served = answers[0]["features"]
    assert served["entity_id"] == "a-0" and served["feature_set_version"] == FEATURES.version
    assert set(served["age_s"]) == set(FEATURES.names)
    assert all(30 <= age < 90 for age in served["age_s"].values())
    assert served["from_request"] == [] and whole[0]["features"] is None


async def test_an_older_vector_never_replaces_a_newer_one_and_one_of_the_same_time_does() -> None:
    now = datetime.now(UTC)
    poor, rich = application(0), {**application(0), "salary": 90_000.0}
    view = await folded(vector(rich, now), vector(poor, now - timedelta(seconds=10)))
    api = client(view)
    assert api.post("/predict", json={"entities": [{"entity_id": "a-0"}]}).json()["predictions"][0]["prediction"] == 1
    view.apply(vector(poor, now))  # as the features service does: the same event time, the later one wins
    assert api.post("/predict", json={"entities": [{"entity_id": "a-0"}]}).json()["predictions"][0]["prediction"] == 0


async def test_unknown_and_stale_entities_are_4xx_that_name_them() -> None:
    now = datetime.now(UTC)
    fresh, old = application(1), application(2)
    view = await folded(vector(fresh, now), vector(old, now - timedelta(seconds=MAX_AGE_S + 60)))
    api = client(view)
    unknown = api.post("/predict", json={"entities": [{"entity_id": "a-1"}, {"entity_id": "nobody"}]})
    assert unknown.status_code == 404, unknown.text
    [error] = problem(unknown)["errors"]
    assert error["field"] == "entities.1.entity_id" and "'nobody'" in error["message"]
    stale = api.post("/predict", json={"entities": [{"entity_id": "a-2"}]})
    assert stale.status_code == 409, stale.text
    assert "older than the maximum of 3600 s" in problem(stale)["detail"]


async def test_request_time_fields_win_over_the_store_and_can_stand_in_for_a_stale_vector() -> None:
    now = datetime.now(UTC)
    old = application(3)
    view = await folded(vector(old, now - timedelta(days=2)))
    api = client(view)
    fields = {k: v for k, v in {**old, "salary": 95_000.0}.items() if k in FEATURES.inputs}
    answer = api.post("/predict", json={"entities": [{"entity_id": "a-3", "fields": fields}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()["predictions"][0]
    assert body["prediction"] == 1 and set(body["features"]["from_request"]) == set(FEATURES.names)
    assert set(body["features"]["age_s"].values()) == {0.0}
    partial = api.post("/predict", json={"entities": [{"entity_id": "a-3", "fields": {"salary": 95_000.0}}]})
    assert partial.status_code == 409  # the rest would come from the two-day-old vector
    invalid = api.post("/predict", json={"entities": [{"entity_id": "a-3", "fields": {"salary": "lots"}}]})
    assert invalid.status_code == 422 and "entities.0.salary" in invalid.text


def test_a_request_with_both_records_and_entities_or_neither_is_a_422() -> None:
    api = client(OnlineView())
    assert api.post("/predict", json={}).status_code == 422
    both = api.post("/predict", json={"records": [application(0)], "entities": [{"entity_id": "a-0"}]})
    assert both.status_code == 422 and "either records or entities" in both.text
    assert api.post("/predict", json={"entities": [{"entity_id": ""}]}).status_code == 422
