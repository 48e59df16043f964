"""A changed transform is a new feature-set version that only new models use, on the real stack.

A champion is trained with today's loans feature set. Then the deployment's ``features.yaml``
changes a transform (``age`` becomes ``log1p(age)``, the age bands move) and features,
training, serving and monitoring restart on it. The old champion answers exactly as before;
a model trained now records the new version and is fed by it, beside the old one during its
canary; monitoring judges each champion's traffic against a reference computed with that
champion's own version (a reference by the wrong version would see ``age`` drift at once).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.featureversions import ARTIFACT
from flywheel.common.safemodels import load_estimator
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import Tags, configure_mlflow
from flywheel.schemas import MODELS_APPROVED, MODELS_CHAMPION, PREDICTIONS, TRAINING_COMPLETED
from tests.integration.test_serving_rollouts import live_applications, promote_and_follow, served
from tests.integration.test_training_runs import (
    agrawal_rows,
    request_training,
    unique,
    wait_for,
    wait_for_model,
    write_version,
)
from tests.support.kafka import TopicReader
from tests.support.stack import ROOT, restart

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(1200)]

READERS = ("features", "training", "serving", "monitoring")  # every service that reads features.yaml
TODAY = load_feature_set(ROOT / "datasets", "loans")
TRAINING_S = 300  # a run, its registration and the champion's move; generous: the test machine is shared


def change_a_transform(datasets: Path) -> FeatureSet:
    """Edit ``loans/features.yaml`` in a datasets directory: ``age`` through log1p, other age bands."""
    path = datasets / "loans" / "features.yaml"
    definition = yaml.safe_load(path.read_text())
    for feature in definition["features"]:
        if feature["name"] == "age":
            feature["transform"] = "log1p"
        if feature["name"] == "age_band":
            feature["edges"] = [30, 50]
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return load_feature_set(datasets, "loans")


@pytest.fixture
def edited_deployment(tmp_path: Path) -> Iterator[tuple[Path, FeatureSet]]:
    """A copy of the datasets with a changed transform; the readers go back to the checkout's afterwards."""
    datasets = tmp_path / "datasets"
    shutil.copytree(ROOT / "datasets", datasets)
    edited = change_a_transform(datasets)
    yield datasets, edited
    restart(*READERS)


@pytest.fixture(scope="module")
def tracking(mlflow_settings: MlflowSettings, store_settings: ObjectStoreSettings) -> MlflowClient:
    return configure_mlflow(mlflow_settings, store_settings)


async def predict(serving: str, name: str, records: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(base_url=serving, timeout=30) as http:
        response = await http.post(f"/models/{name}/predict", json={"records": records})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


async def reference_and_verdicts(monitoring: str, name: str, version: str, traffic: list[dict], serving: str) -> dict:
    """Send ``traffic`` to the champion, then wait until monitoring has judged it against ``version``'s reference."""
    for start in range(0, len(traffic), 50):
        await predict(serving, name, traffic[start : start + 50])
    deadline = asyncio.get_running_loop().time() + 90
    async with httpx.AsyncClient(base_url=monitoring, timeout=10) as http:
        while True:
            response = await http.get("/drift", params={"model": name})
            if response.status_code == 200:
                [summary] = response.json()["models"]
                reference = summary["reference"] or {}
                if reference.get("model_version") == version and summary["features"]:
                    return summary
            assert asyncio.get_running_loop().time() < deadline, f"monitoring never judged v{version}: {response.text}"
            await asyncio.sleep(1)


async def rollout_running(serving: str, name: str, timeout: float) -> None:
    """Wait until serving runs a rollout of ``name`` (it loads the approved candidate first)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=serving, timeout=10) as http:
        while not (await http.get("/models")).json().get(name, {}).get("rollout"):
            assert asyncio.get_running_loop().time() < deadline, f"serving started no rollout of {name}"
            await asyncio.sleep(0.5)


def psi_of(judged: dict, feature: str) -> float:
    """A feature's PSI in monitoring's last verdict.

    Ages judged against a reference of log(1 + age), or the reverse, put every value in one
    bin: a PSI near 8. Judged against the reference by their own version, it stays near 0
    (the test's repeated probes in the window make it noisier than live traffic would).
    """
    return next(f["psi"] for f in judged["features"] if f["feature"] == feature)


def pinned_definition(tracking: MlflowClient, run_id: str) -> dict:
    return json.loads(Path(tracking.download_artifacts(run_id, ARTIFACT)).read_text())


async def test_a_changed_transform_is_a_new_version_only_new_models_use(
    kafka: KafkaSettings, store_settings: ObjectStoreSettings, tracking: MlflowClient, services, edited_deployment
):
    datasets, edited = edited_deployment
    assert edited.version != TODAY.version and edited.names == TODAY.names
    name = unique("e2e-pin")
    probes = [r for r, _ in live_applications(60, seed=5)]

    # v1: trained, served and monitored with today's feature set
    async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion:
        await request_training(services["training"], name, write_version(store_settings, agrawal_rows(1500, 0, 41)))
        [promoted] = await wait_for(champion, name, timeout=TRAINING_S)
    assert promoted["version"] == "1"
    await served(services["serving"], name, "1", timeout=180)
    before = await predict(services["serving"], name, probes)
    detail = await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == "1")
    [v1] = [v for v in detail["versions"] if v["version"] == "1"]
    assert tracking.get_run(v1["run_id"]).data.tags[Tags.FEATURE_SET_VERSION] == TODAY.version
    assert pinned_definition(tracking, v1["run_id"]) == TODAY.definition()

    # the test can tell: fed by the edited definition, v1 would answer differently
    estimator = load_estimator(f"models:/{name}/1")
    misfed = estimator.predict(np.asarray(edited.matrix(probes), dtype=float)).tolist()
    assert misfed != [p["prediction"] for p in before]

    # the deployment's features.yaml changes; every reader restarts on it
    restart(*READERS, env={"FLYWHEEL_STACK_DATASETS_DIR": str(datasets)})
    await served(services["serving"], name, "1", timeout=180)
    after = await predict(services["serving"], name, probes)
    assert [(p["prediction"], p["probability"]) for p in after] == [(p["prediction"], p["probability"]) for p in before]

    async with httpx.AsyncClient(base_url=services["features"], timeout=10) as http:
        kept = (await http.get("/featuresets/loans/versions")).json()
        old = (await http.get(f"/featuresets/loans/{TODAY.version}")).json()
        by_old = await http.post(
            "/features/loans/compute", params={"version": TODAY.version}, json={"records": probes[:3]}
        )
        by_new = await http.post("/features/loans/compute", json={"records": probes[:3]})
    assert kept["current"] == edited.version and {TODAY.version, edited.version} <= set(kept["versions"])
    assert FeatureSet.model_validate(old) == TODAY
    assert [v["age"] for v in by_old.json()["vectors"]] == [r["age"] for r in probes[:3]]
    assert by_new.json()["version"] == edited.version
    assert [v["age"] for v in by_new.json()["vectors"]] == pytest.approx([np.log1p(r["age"]) for r in probes[:3]])

    traffic = [r for r, _ in live_applications(600, seed=6)]
    judged = await reference_and_verdicts(services["monitoring"], name, "1", traffic[:300], services["serving"])
    assert judged["reference"]["feature_set_version"] == TODAY.version
    assert psi_of(judged, "age") < 0.5, judged["features"]

    # v2: trained now, so with the edited version; during its canary each model is fed its own
    async with (
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
    ):
        await request_training(services["training"], name, write_version(store_settings, agrawal_rows(1500, 0, 43)))
        [trained] = await wait_for(completed, name, timeout=TRAINING_S)
        [approval] = await wait_for(approved, name, timeout=TRAINING_S)
    assert approval["version"] == "2"
    assert trained["lineage"]["feature_set_version"] == edited.version
    assert tracking.get_run(trained["run_id"]).data.tags[Tags.FEATURE_SET_VERSION] == edited.version
    assert pinned_definition(tracking, trained["run_id"]) == edited.definition()

    await rollout_running(services["serving"], name, timeout=120)  # serving loads v2 and starts its canary
    async with TopicReader(kafka.bootstrap_servers, PREDICTIONS.name) as log:
        canary = [r for r, _ in live_applications(1000, seed=7)]  # a canary's first step takes a share of them
        for start in range(0, len(canary), 50):
            await predict(services["serving"], name, canary[start : start + 50])
        logged = await log.collect(
            lambda found: {"1", "2"} <= {e["model_version"] for e in found},
            timeout=60,
            where=lambda b: b["model_name"] == name,
        )
    ages = {r["applicant_id"]: r["age"] for r in canary}
    for entry in logged:
        want = TODAY if entry["model_version"] == "1" else edited
        assert entry["feature_set_version"] == want.version
        age = ages[entry["entity_id"]]
        assert entry["features"]["age"] == pytest.approx(age if want is TODAY else np.log1p(age))

    await promote_and_follow(services, name, "2")

    judged = await reference_and_verdicts(services["monitoring"], name, "2", traffic[300:], services["serving"])
    assert judged["reference"]["feature_set_version"] == edited.version
    assert psi_of(judged, "age") < 0.5, judged["features"]
