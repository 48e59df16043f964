"""Features' HTTP routes over an in-memory store."""

from __future__ import annotations

import math

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flywheel.features.http import create_router
from flywheel.features.store import OnlineStore
from tests.unit.test_feature_skew import CONTRACTS, FEATURES
from tests.unit.test_features_store import validated
from tests.unit.test_ingestion_kafka import loan


@pytest.fixture
def store() -> OnlineStore:
    store = OnlineStore({"loans": FEATURES})
    store.apply(validated("a", 5, 1000.0))
    store.apply(validated("a", 7, 3000.0))
    store.apply(validated("b", 6, 0.0))
    return store


def client(store: OnlineStore, ready: bool = True) -> TestClient:
    app = FastAPI()
    app.include_router(create_router(store, CONTRACTS, ready=lambda: ready))
    return TestClient(app)


def test_the_latest_vector_of_an_entity_with_its_time_and_feature_set_version(store: OnlineStore) -> None:
    body = client(store).get("/features/loans/a").json()
    assert body["values"]["salary"] == 3000.0 and body["values"]["income"] == 3000.0
    assert body["event_time"].startswith("2026-01-01T10:07")
    assert (body["feature_set"], body["feature_set_version"]) == ("loans_features", FEATURES.version)


def test_an_unknown_entity_is_a_404_that_says_so_and_a_503_while_the_store_rebuilds(store: OnlineStore) -> None:
    missing = client(store).get("/features/loans/nobody")
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    rebuilding = client(store, ready=False).get("/features/loans/nobody")
    assert rebuilding.status_code == 503 and "rebuilding" in rebuilding.json()["detail"]
    assert client(store, ready=False).get("/features/loans/a").status_code == 200  # known already: served
    unknown_dataset = client(store).get("/features/cars/a")
    assert unknown_dataset.status_code == 404 and "cars" in unknown_dataset.json()["detail"]


def test_statistics_per_feature(store: OnlineStore) -> None:
    body = client(store).get("/features/loans/statistics").json()
    salary = body["features"]["salary"]
    assert body["entities"] == 2
    assert salary["count"] == 3 and salary["min"] == 0.0 and salary["max"] == 3000.0
    assert math.isclose(salary["mean"], 4000 / 3)
    assert math.isclose(salary["std"], math.sqrt(sum((x - 4000 / 3) ** 2 for x in (1000, 3000, 0)) / 2))


def test_online_compute_is_the_shared_definition_and_names_bad_fields(store: OnlineStore) -> None:
    http = client(store)
    record = loan(applicant_id="c", salary=2000.0, commission=500.0)
    computed = http.post("/features/loans/compute", json={"records": [record]})
    assert computed.status_code == 200
    assert computed.json()["vectors"] == [{k: (None if v != v else v) for k, v in FEATURES.compute(record).items()}]
    invalid = http.post("/features/loans/compute", json={"records": [record, {**record, "salary": "lots"}]})
    assert invalid.status_code == 422 and "records.1.salary" in invalid.json()["detail"]
    assert http.post("/features/loans/compute", json={"records": []}).status_code == 422


def test_the_feature_set_definitions(store: OnlineStore) -> None:
    body = client(store).get("/featuresets").json()
    assert (
        body["loans"]["version"] == FEATURES.version
        and [f["name"] for f in body["loans"]["features"]] == FEATURES.names
    )
