"""The registry's out-of-time gates and its rollout reader against the running stack: real Kafka, MinIO,
MLflow and the registry service.

Each test logs its own MLflow runs as training does (a fitted model, its pinned feature set and its
held-out slices of raw labelled records, ``eval/<slice>.parquet``) and publishes their
``training.completed``; the registry scores champion and candidate on those slices itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import log_feature_set
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import Tags, configure_mlflow
from flywheel.schemas import MODELS_APPROVED, MODELS_REJECTED, Lineage, ModelTrained, RolloutStepped
from flywheel.training.runner import trusted_types
from tests.integration.test_training_runs import agrawal_rows, unique, wait_for_model, write_version
from tests.support.kafka import TopicReader, producer, send_event

pytestmark = pytest.mark.usefixtures("topics")

LABEL = "approved"


def log_run(
    name: str,
    dataset_version: str,
    train: pd.DataFrame,
    slices: dict[str, pd.DataFrame],
    features: FeatureSet,
    shuffled: bool = False,
    spec: str = "model",
) -> ModelTrained:
    """An MLflow run as training logs it, and the ``ModelTrained`` that says it finished."""
    y = train[LABEL].to_numpy()
    if shuffled:
        y = np.random.default_rng(0).permutation(y)
    model = HistGradientBoostingClassifier(random_state=0).fit(features.frame(train), y)
    mlflow.set_experiment(f"flywheel-it/{name}")
    tags = {Tags.DATASET: "loans", Tags.DATASET_VERSION: dataset_version, Tags.MODEL_SPEC: spec}
    with mlflow.start_run(tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        log_feature_set(features)
        for slice_name, frame in slices.items():
            path = Path(tmp) / f"{slice_name}.parquet"
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "eval")
        info = mlflow.sklearn.log_model(  # as training logs it: skops, trusting what this very fit produced
            model,
            name="model",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted_types(model),
        )
    recent = slices["recent"]
    majority = int(y.mean() > 0.5)
    lineage = Lineage(
        dataset="loans",
        dataset_version=dataset_version,
        dataset_versions=[dataset_version],
        code_version="it",
        model_spec=spec,
        seed=1,
        label=LABEL,
        feature_set=features.feature_set,
        feature_set_version=features.version,
        eval_slices={s: f"eval/{s}.parquet" for s in slices},
    )
    return ModelTrained(
        producer="training",
        model_name=name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        metrics={"baseline_accuracy": float((recent[LABEL] == majority).mean())},
        lineage=lineage,
        duration_s=1.0,
    )


async def decide(kafka: KafkaSettings, trained: ModelTrained) -> dict:
    """Publish a finished run and wait for the registry's decision on it."""
    async with (
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_REJECTED.name) as rejected,
    ):
        sender = await producer(kafka.bootstrap_servers)
        try:
            await send_event(sender, trained)
        finally:
            await sender.stop()
        for _ in range(60):  # about 60 s: both topics in turn
            for reader in (approved, rejected):
                try:
                    found = await reader.collect(
                        lambda seen: len(seen) >= 1, timeout=0.5, where=lambda b: b.get("run_id") == trained.run_id
                    )
                except AssertionError:  # nothing there yet
                    continue
                return found[0]
    raise AssertionError(f"no decision on run {trained.run_id}")


@pytest.fixture
def tracked(mlflow_settings: MlflowSettings, store_settings: ObjectStoreSettings) -> None:
    configure_mlflow(mlflow_settings, store_settings)


async def test_champion_and_candidate_are_judged_on_the_run_s_slices_each_with_its_own_feature_set(
    kafka: KafkaSettings, store_settings, services, tracked
):
    name = unique("it-oot")
    history = agrawal_rows(1500, function=2, seed=41)
    version = write_version(store_settings, history)
    recent = agrawal_rows(400, function=2, seed=42)
    today = load_feature_set("datasets", "loans")
    fewer = FeatureSet.model_validate({**today.definition(), "features": today.definition()["features"][:5]})
    assert fewer.version != today.version

    first = await decide(kafka, log_run(name, version, history, {"recent": recent}, fewer))
    assert first["event_type"] == "ModelApproved" and first["champion_version"] is None
    [baseline] = [g for g in first["gates"] if g["gate"] == "beats_baseline:balanced_accuracy"]
    assert baseline["slice"] == "recent" and "(400 rows)" in baseline["message"]

    second = await decide(kafka, log_run(name, version, history, {"recent": recent}, today))
    [vs_champion] = [g for g in second["gates"] if g["gate"] == "beats_champion:balanced_accuracy"]
    assert vs_champion["reference"] is not None, vs_champion["message"]  # the champion scored with its own features
    assert vs_champion["passed"] == (vs_champion["value"] >= vs_champion["reference"])

    useless = await decide(kafka, log_run(name, version, history, {"recent": recent}, today, shuffled=True))
    assert useless["event_type"] == "ModelRejected" and "beats_baseline:balanced_accuracy" in useless["failed_gates"]
    detail = await wait_for_model(services["registry"], name, lambda b: len(b["versions"]) == 3)
    [v3] = [v for v in detail["versions"] if v["version"] == "3"]
    assert v3["status"] == "rejected" and v3["gate_figures"]["recent"]["rows"] == 400
    assert v3["gate_spec"]["primary_metric"] == "balanced_accuracy"
    assert v3["gate_figures"]["recent"]["champion"]["balanced_accuracy"] > 0


async def test_a_drift_retrain_broken_on_the_old_concept_is_rejected_and_a_rolled_back_challenger_is_marked(
    kafka: KafkaSettings, store_settings, services, tracked
):
    name = unique("it-before")
    old, new = agrawal_rows(200, function=2, seed=51), agrawal_rows(1500, function=5, seed=52)
    version = write_version(store_settings, old)
    features = load_feature_set("datasets", "loans")
    await decide(kafka, log_run(name, version, old, {"recent": agrawal_rows(400, function=2, seed=55)}, features))

    # a retrain on the new concept only: far better on it, broken on the old one
    slices = {"recent": agrawal_rows(400, function=5, seed=53), "before": agrawal_rows(400, function=2, seed=54)}
    # (spec "keep": loans' model.yaml waives the before gate, its demo drift flipping the concept)
    forgetful = await decide(kafka, log_run(name, version, new, slices, features, spec="keep"))
    assert forgetful["event_type"] == "ModelRejected", forgetful["gates"]
    assert forgetful["failed_gates"] == ["holds_before:balanced_accuracy"]

    # a retrain on more of the champion's concept: no worse anywhere
    slices = {"recent": agrawal_rows(400, function=2, seed=56), "before": agrawal_rows(400, function=2, seed=54)}
    more = agrawal_rows(3000, function=2, seed=57)
    challenger = await decide(kafka, log_run(name, version, more, slices, features, spec="keep"))
    assert challenger["event_type"] == "ModelApproved", challenger["gates"]
    await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("challenger") == challenger["version"])

    rolled_back = RolloutStepped(
        producer="serving",
        model_name=name,
        candidate_version=challenger["version"],
        champion_version="1",
        strategy="canary",
        action="rolled_back",
        reason="accuracy 0.61 vs champion 0.70 (p = 0.003)",
    )
    sender = await producer(kafka.bootstrap_servers)
    try:
        await send_event(sender, rolled_back)
        await send_event(sender, rolled_back)  # a redelivery
    finally:
        await sender.stop()

    def written(b: dict) -> bool:  # every write of the rollback: status, history, alias
        statuses = {v["version"]: v["status"] for v in b["versions"]}
        logged = any(h["action"] == "rolled_back" for h in b.get("history", []))
        return "challenger" not in b["aliases"] and statuses.get(challenger["version"]) == "rolled_back" and logged

    detail = await wait_for_model(services["registry"], name, written)
    [version_detail] = [v for v in detail["versions"] if v["version"] == challenger["version"]]
    assert version_detail["status"] == "rolled_back"
    assert version_detail["tags"]["flywheel.rollback_reason"] == rolled_back.reason
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        history = (await http.get(f"/models/{name}")).json()["history"]
    assert [h["action"] for h in history if h["version"] == challenger["version"]] == ["rolled_back"]
