"""Training against the running stack: real Kafka, MinIO, MLflow and the running training/registry services.

Every test uses its own model name and its own dataset version, so the shared services can run them
beside everyone else's work.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from river.datasets import synth

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.evaluation import METRICS
from flywheel.common.featuresets import load_feature_set
from flywheel.common.objectstore import ObjectStore, parquet_bytes, sha256
from flywheel.common.safemodels import load_estimator
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import Tags, configure_mlflow
from flywheel.common.trainingdata import training_data_of_run
from flywheel.ingestion.sources import versioned_event
from flywheel.schemas import (
    TRAINING_COMPLETED,
    TRAINING_FAILED,
    DatasetManifest,
    DriftDetected,
    FeatureDrift,
)
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader, producer, send_event

pytestmark = pytest.mark.usefixtures("topics")

DATASET = "loans"
FLOATS = {"salary", "commission", "hvalue", "loan"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def agrawal_rows(
    n: int, function: int = 0, seed: int = 7, perturbation: float = 0.0, start: datetime | None = None
) -> pd.DataFrame:
    """Loan applications as the data contract wants them, labelled by an Agrawal function."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    stream = synth.Agrawal(classification_function=function, seed=seed, perturbation=perturbation)
    rows = [
        {
            "applicant_id": f"t-{seed}-{i}",
            "applied_at": start + timedelta(minutes=i),
            **{k: float(v) if k in FLOATS else int(v) for k, v in x.items()},
            "approved": int(y),
        }
        for i, (x, y) in enumerate(stream.take(n))
    ]
    return pd.DataFrame(rows)


def write_version(
    store_settings: ObjectStoreSettings, frame: pd.DataFrame, dataset: str = DATASET, timestamp: str = "applied_at"
) -> str:
    """Seal a dataset version (of ``loans`` unless told) with a unique id, as ingestion would."""
    data = parquet_bytes(frame)
    version = unique("test")
    manifest = DatasetManifest(
        dataset=dataset,
        version=version,
        content_hash=sha256(data),
        row_count=len(frame),
        columns={c: str(t) for c, t in frame.dtypes.items()},
        time_min=frame[timestamp].min(),
        time_max=frame[timestamp].max(),
        uri=f"s3://{store_settings.bucket}/datasets/{dataset}/{version}/data.parquet",
        created_at=datetime.now(UTC),
    )
    DatasetCatalog(ObjectStore(store_settings)).write(manifest, data)
    return version


async def announce_version(
    kafka: KafkaSettings, store_settings: ObjectStoreSettings, version: str, dataset: str
) -> None:
    """Publish ``datasets.versioned`` for a version ``write_version`` sealed, as ingestion does after sealing
    (its event, with the id derived from the version)."""
    manifest = DatasetCatalog(ObjectStore(store_settings)).manifest(dataset, version)
    p = await producer(kafka.bootstrap_servers)
    try:
        await send_event(p, versioned_event(manifest, None))
    finally:
        await p.stop()


async def request_training(base: str, model_name: str, version: str | None, timeout: float = 10, **extra: Any) -> str:
    async with httpx.AsyncClient(base_url=base, headers=OPERATOR, timeout=timeout) as http:
        body = {"dataset": DATASET, "model_name": model_name, "dataset_version": version, **extra}
        response = await http.post("/train", json=body)
    assert response.status_code == 202, response.text
    return response.json()["request_id"]


async def wait_for(reader: TopicReader, model_name: str, count: int = 1, timeout: float = 180) -> list[dict]:
    seen = await reader.collect(
        lambda found: len(found) >= count, timeout=timeout, where=lambda b: b.get("model_name") == model_name
    )
    return seen[:count]


async def wait_for_model(registry: str, name: str, check, timeout: float = 30) -> dict:
    """Poll ``GET /models/{name}`` until ``check(body)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=registry, timeout=10) as http:
        while True:
            response = await http.get(f"/models/{name}")
            if response.status_code == 200 and check(response.json()):
                return response.json()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"registry state of {name} not reached: {response.status_code} {response.text}")
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def tracking(mlflow_settings: MlflowSettings, store_settings: ObjectStoreSettings) -> MlflowClient:
    return configure_mlflow(mlflow_settings, store_settings)


async def test_training_request_logs_a_complete_run_and_the_first_model_becomes_champion(
    kafka: KafkaSettings, store_settings, tracking: MlflowClient, services
):
    version = write_version(store_settings, agrawal_rows(1200, function=0))
    name = unique("it-train")
    async with TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed:
        request_id = await request_training(services["training"], name, version, reason="integration test")
        [trained] = await wait_for(completed, name)

    assert trained["causation_id"] == request_id
    assert trained["lineage"]["dataset_version"] == version
    assert trained["lineage"]["trigger_event_id"] == request_id
    assert set(trained["metrics"]) == set(METRICS) | {f"baseline_{m}" for m in METRICS}  # on the latest rows
    assert trained["lineage"]["eval_slices"] == {"recent": "eval/recent.parquet"}
    run = tracking.get_run(trained["run_id"])
    tags = run.data.tags
    assert tags[Tags.DATASET] == DATASET and tags[Tags.DATASET_VERSION] == version
    assert tags[Tags.CODE_VERSION] and tags[Tags.SEED] == "42"
    assert (
        tags[Tags.FEATURE_SET] == "loans_features"
        and tags[Tags.FEATURE_SET_VERSION] == load_feature_set("datasets", DATASET).version
    )
    assert tags[Tags.MODEL_SPEC] == "model" and tags[Tags.TRIGGER_EVENT_ID] == request_id
    assert json.loads(tags[Tags.CAUSATION_CHAIN]) == [request_id]
    assert run.data.params["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert run.data.metrics["accuracy"] >= 0.85 and "importance.age" in run.data.metrics
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert {"eval", "feature_importance.json", "lineage.json", "training_data"} <= artifacts
    recorded = training_data_of_run(tracking, run)
    assert recorded is not None and recorded.versions == (version,) and recorded.row_count == 750

    # The logged model is a scikit-learn estimator over FeatureSet.names, with a signature.
    model = load_estimator(trained["model_uri"])
    info = mlflow.models.get_model_info(trained["model_uri"])
    assert info.signature is not None and info.signature.inputs.input_names()[:3] == ["salary", "commission", "age"]
    sample = agrawal_rows(5, function=0, seed=99)
    features = load_feature_set("datasets", DATASET)
    assert model.predict_proba(features.frame(sample)).shape == (5, 2)

    detail = await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == "1")
    assert detail["versions"][0]["status"] == "approved"
    gates = {g["gate"] for g in detail["versions"][0]["gates"]}
    assert gates >= {"beats_baseline:balanced_accuracy", "beats_champion:balanced_accuracy"}
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        lineage = (await http.get(f"/models/{name}/versions/1/lineage")).json()
    assert lineage["dataset_version"] == version and lineage["manifest"]["row_count"] == 1200
    assert lineage["trigger_event_id"] == request_id
    assert lineage["causation_chain"][:2] == [request_id, trained["event_id"]]
    assert lineage["code_version"] == tags[Tags.CODE_VERSION]

    # monitoring's reference for the new champion is exactly its training rows (750 of the version's 1,200)
    reference = await monitored_reference(services["monitoring"], name)
    assert reference["dataset_version"] == version and reference["rows"] == trained["lineage"]["train_rows"] == 750


async def monitored_reference(monitoring: str, name: str, timeout: float = 60) -> dict:
    """Poll monitoring's ``GET /drift?model=`` until it holds a reference for the model."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=monitoring, timeout=10) as http:
        while True:
            response = await http.get("/drift", params={"model": name})
            if response.status_code == 200 and response.json()["models"][0]["reference"]:
                return response.json()["models"][0]["reference"]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"monitoring never loaded a reference of {name}: {response.text[:300]}")
            await asyncio.sleep(0.5)


async def test_the_same_data_and_spec_give_identical_metrics_and_a_repeat_is_answered_by_the_first_run(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    # A noisy concept, so the metrics are not trivially perfect.
    version = write_version(store_settings, agrawal_rows(1500, function=8, perturbation=0.1))
    name, twin = unique("it-repro"), unique("it-repro")
    async with (
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as twins,  # a reader keeps what it saw
    ):
        await request_training(services["training"], name, version)
        [first] = await wait_for(completed, name)
        await request_training(services["training"], twin, version)  # another model: a run of its own
        [second] = await wait_for(twins, twin)
        await request_training(services["training"], name, version)  # the same request: the same run
        repeat = (await wait_for(completed, name, count=2))[1]
    assert first["run_id"] != second["run_id"] and not first.get("repeat") and not second.get("repeat")
    assert repeat["repeat"] is True and repeat["run_id"] == first["run_id"] and repeat["metrics"] == first["metrics"]
    assert 0.5 < first["metrics"]["accuracy"] < 1.0
    assert first["metrics"] == second["metrics"]
    same = ("dataset_version", "code_version", "params", "seed", "train_rows", "eval_rows")
    assert {k: first["lineage"][k] for k in same} == {k: second["lineage"][k] for k in same}
    client = MlflowClient(mlflow_settings.tracking_uri)
    importance = [client.get_run(r["run_id"]).data.metrics for r in (first, second)]
    assert importance[0] == importance[1]
    await asyncio.sleep(3)  # the registry read the repeat by now: it registers nothing for it
    detail = await wait_for_model(services["registry"], name, lambda b: len(b["versions"]) >= 1)
    assert [v["version"] for v in detail["versions"]] == ["1"]


async def test_fifty_drift_events_in_a_burst_lead_to_exactly_one_training_run(
    kafka: KafkaSettings, store_settings, services
):
    name = unique("it-burst")
    drifts = [
        DriftDetected(
            producer="test",
            dataset=DATASET,
            model_name=name,
            kind="data",
            window_size=500,
            features=[FeatureDrift(feature="salary", statistic="psi", value=0.4, threshold=0.2, drifted=True)],
            retrain=True,
        )
        for _ in range(50)
    ]
    p = await producer(kafka.bootstrap_servers)
    try:
        async with (
            TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
            TopicReader(kafka.bootstrap_servers, TRAINING_FAILED.name) as failed,
        ):
            await asyncio.gather(*(send_event(p, d) for d in drifts))
            # a drift retrain waits for data recorded after the drift (1,000 rows by default): here it comes
            fresh = agrawal_rows(1000, function=2, seed=11, start=datetime.now(UTC) + timedelta(seconds=5))
            fresh_version = write_version(store_settings, fresh)
            [trained] = await wait_for(completed, name)
            await asyncio.sleep(8)  # longer than the debounce window: a second run would have started
            more = await completed.collect(lambda _: True, timeout=1, where=lambda b: b.get("model_name") == name)
            failures = await failed.collect(lambda _: True, timeout=1, where=lambda b: b.get("model_name") == name)
    finally:
        await p.stop()
    assert len(more) == 1 and failures == []
    assert trained["merged_requests"] == 50
    assert trained["lineage"]["dataset_version"] == fresh_version
    drift_ids = {str(d.event_id) for d in drifts}
    assert trained["lineage"]["trigger_event_id"] in drift_ids
    assert trained["lineage"]["causation_chain"][0] in drift_ids
    async with httpx.AsyncClient(base_url=services["training"], timeout=10) as http:
        runs = (await http.get("/runs", params={"model_name": name})).json()
    assert [(r["status"], len(r["request_ids"])) for r in runs] == [("completed", 50)]


async def test_a_drift_retrain_on_back_filled_history_trains_as_soon_as_its_data_is_ingested(
    kafka: KafkaSettings, store_settings, services
):
    """One clock: data ingested after the drift counts as after it, though every record is from 2011.

    Judged by the records' own timestamps against the drift's wall-clock moment, nothing would ever
    qualify and the retrain would wait out TRAINING_DRIFT_FRESH_TIMEOUT_S (300 s) first.
    """
    name = unique("it-history")
    drift = DriftDetected(producer="test", dataset=DATASET, model_name=name, kind="data", window_size=500, retrain=True)
    p = await producer(kafka.bootstrap_servers)
    try:
        async with TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed:
            await send_event(p, drift)
            await asyncio.sleep(2)  # the request is queued, waiting for data from after the drift
            history = agrawal_rows(1000, function=2, seed=13, start=datetime(2011, 1, 1, tzinfo=UTC))
            version = write_version(store_settings, history)  # sealed now: after the drift
            [trained] = await wait_for(completed, name, timeout=90)  # well before the 300 s timeout
    finally:
        await p.stop()
    assert trained["lineage"]["dataset_version"] == version
    window = trained["lineage"]["window"]
    assert window["fresh_wait"] == "met" and window["drift"] == "after_drift"  # the loans spec's choice
    assert window["train_to"].startswith("2011-") and trained["lineage"]["train_rows"] == 750


async def test_a_request_whose_labels_have_one_class_fails_with_the_reason(
    kafka: KafkaSettings, store_settings, services
):
    frame = agrawal_rows(300, function=0).assign(approved=1)
    version = write_version(store_settings, frame)
    name = unique("it-fail")
    async with TopicReader(kafka.bootstrap_servers, TRAINING_FAILED.name) as failed:
        request_id = await request_training(services["training"], name, version)
        [failure] = await wait_for(failed, name)
    assert "one class" in failure["reason"] and failure["dataset_version"] == version
    assert failure["causation_id"] == request_id


async def test_training_an_unknown_dataset_is_refused_over_http(services):
    async with httpx.AsyncClient(base_url=services["training"], headers=OPERATOR, timeout=10) as http:
        response = await http.post("/train", json={"dataset": "no-such-dataset"})
        missing_run = await http.get("/runs/nope")
    assert response.status_code == 404 and "no model spec" in response.json()["detail"]
    assert missing_run.status_code == 404
