"""Feature-set versions: content hashes, and every caller computing with the version it is pinned to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flywheel.common.featuresets import FeatureSet, load_feature_set, pinned
from flywheel.features.http import create_router
from flywheel.features.store import OnlineStore
from flywheel.features.versions import KnownVersions
from flywheel.monitoring.monitor import ModelMonitor, MonitorConfig, Reference
from flywheel.schemas import PredictionMade
from tests.unit.test_feature_skew import CONTRACTS
from tests.unit.test_features_store import validated
from tests.unit.test_serving_engine import FEATURES, Harness, RichApproved, application, served

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def edited(features: FeatureSet, name: str, **change) -> FeatureSet:
    """The same feature set with one feature's definition changed: a new version."""
    definition = features.definition()
    definition["features"] = [{**f, **change} if f["name"] == name else f for f in definition["features"]]
    return FeatureSet.model_validate(definition)


LOG_AGE = edited(FEATURES, "age", transform="log1p")


def test_the_version_is_the_content_hash_and_an_edit_is_a_new_version(tmp_path: Path) -> None:
    text = (DATASETS / "loans" / "features.yaml").read_text()
    (tmp_path / "loans").mkdir()
    (tmp_path / "loans" / "features.yaml").write_text(text + "# a comment changes nothing\n")
    assert load_feature_set(tmp_path, "loans").version == FEATURES.version
    # a declared version (older files had one) names nothing: the content does
    declared = yaml.safe_load(text) | {"version": "7"}
    assert FeatureSet.model_validate(declared).version == FEATURES.version
    assert LOG_AGE.version != FEATURES.version and LOG_AGE.names == FEATURES.names
    assert edited(FEATURES, "age_band", edges=[30.0, 50.0]).version not in {FEATURES.version, LOG_AGE.version}


def test_a_stored_definition_must_hash_to_the_version_it_is_stored_as() -> None:
    assert pinned(LOG_AGE.definition(), LOG_AGE.version) == LOG_AGE
    tampered = {**LOG_AGE.definition(), "version": FEATURES.version}  # a stale version field is recomputed
    with pytest.raises(ValueError, match="hashes to"):
        pinned(tampered, FEATURES.version)


def test_a_feature_set_cannot_be_changed_in_place() -> None:
    with pytest.raises(ValueError):
        FEATURES.entity_key = "someone_else"  # type: ignore[misc]


async def test_a_candidate_on_another_version_is_fed_its_own_features_and_logged_with_them() -> None:
    h = Harness(served("2", RichApproved()), strategy="shadow")
    h.engine.champions["loans-approval"] = served("1", RichApproved())
    candidate = h.candidate
    object.__setattr__(candidate, "features", LOG_AGE)  # v2 was trained after age became log(1 + age)
    await h.engine.start_rollout(h.approve())
    record = application(3)
    _, logged = h.engine.score("loans-approval", [record])
    by_variant = {e.variant: e for e in logged}
    assert by_variant["champion"].features["age"] == record["age"]
    assert by_variant["champion"].feature_set_version == FEATURES.version
    assert by_variant["shadow"].features["age"] == pytest.approx(np.log1p(record["age"]))
    assert by_variant["shadow"].feature_set_version == LOG_AGE.version


def prediction(version: str, age: float) -> PredictionMade:
    return PredictionMade(
        producer="serving",
        dataset="loans",
        prediction_id=f"p-{version}-{age}",
        model_name="loans-approval",
        model_version=version,
        variant="champion" if version == "1" else "candidate",
        prediction=0,
        features={"age": age},
        latency_ms=1.0,
    )


def test_monitoring_compares_only_the_referenced_models_answers_with_its_reference() -> None:
    reference = Reference(
        model_name="loans-approval",
        model_version="1",
        dataset="loans",
        dataset_version="v1",
        features={"age": np.array([30.0, 50.0, 70.0])},
        categorical=set(),
        feature_set_version=FEATURES.version,
    )
    monitor = ModelMonitor("loans-approval", MonitorConfig(), reference)
    monitor.on_prediction(prediction("1", 45.0))
    monitor.on_prediction(prediction("2", float(np.log1p(45.0))))  # another model's version: its own features
    assert [row["age"] for row in monitor.window] == [45.0]


@pytest.fixture
def features_client() -> tuple[TestClient, OnlineStore]:
    store = OnlineStore({"loans": FEATURES})
    store.apply(validated("a", 7, 3000.0))
    versions = KnownVersions(store.feature_sets)
    versions.known[("loans", LOG_AGE.version)] = LOG_AGE  # as if read from the archive
    app = FastAPI()
    app.include_router(create_router(store, CONTRACTS, versions=versions))
    return TestClient(app), store


def test_the_features_service_computes_by_any_kept_version_and_names_it(features_client) -> None:
    client, store = features_client
    today = client.get("/features/loans/a").json()
    older = client.get("/features/loans/a", params={"version": LOG_AGE.version}).json()
    assert (today["feature_set_version"], older["feature_set_version"]) == (FEATURES.version, LOG_AGE.version)
    age = store.latest[("loans", "a")].record["age"]
    assert today["values"]["age"] == age and older["values"]["age"] == pytest.approx(np.log1p(age))
    record = application(1)
    computed = client.post("/features/loans/compute", params={"version": LOG_AGE.version}, json={"records": [record]})
    assert computed.status_code == 200, computed.text
    assert computed.json()["version"] == LOG_AGE.version
    assert computed.json()["vectors"][0]["age"] == pytest.approx(np.log1p(record["age"]))
    assert client.get(f"/featuresets/loans/{LOG_AGE.version}").json()["version"] == LOG_AGE.version
    assert client.get("/featuresets/loans/versions").json() == {
        "current": FEATURES.version,
        "versions": sorted([FEATURES.version, LOG_AGE.version]),
    }
    unknown = client.get("/features/loans/a", params={"version": "0" * 16})
    assert unknown.status_code == 404 and "no version" in unknown.json()["detail"]


def test_a_published_vector_carries_the_record_so_a_pinned_reader_computes_its_own() -> None:
    store = OnlineStore({"loans": FEATURES})
    vector = store.apply(validated("a", 7, 3000.0))
    assert vector is not None and vector.feature_set_version == FEATURES.version
    assert LOG_AGE.compute(vector.inputs)["age"] == pytest.approx(np.log1p(vector.values["age"]))
