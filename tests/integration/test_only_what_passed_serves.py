"""Only a version that passed its gates (or that an operator approved) takes live traffic, against the running
stack: serving's ``POST /rollouts`` asks the registry, and a champion alias moved by hand in MLflow is followed
by the registry and serving when the version may serve, put back with an alert when not
(``flywheel.registry.aliases``)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mlflow import MlflowClient

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import ALERTS, MODELS_APPROVED, MODELS_CHAMPION, MODELS_REJECTED
from tests.integration.test_registry_gates import first_champion
from tests.integration.test_training_runs import agrawal_rows, request_training, unique, wait_for, write_version
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.usefixtures("topics")

FOLLOWED_WITHIN_S = 10.0


async def served_champion(serving: str, name: str, version: str, timeout: float) -> float:
    """Seconds until serving's ``GET /models`` names ``version`` as the model's champion."""
    start = asyncio.get_running_loop().time()
    async with httpx.AsyncClient(base_url=serving, timeout=5) as http:
        while True:
            served = (await http.get("/models")).json().get(name, {})
            waited = asyncio.get_running_loop().time() - start
            if served.get("champion_version") == version:
                return waited
            assert waited < timeout, f"serving still answers with {served} after {timeout:.0f} s"
            await asyncio.sleep(0.2)


async def test_only_a_version_that_passed_serves_whether_rolled_out_or_set_by_hand_in_mlflow(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    """v1 champion, v2 approved, v3 rejected. Serving's ``POST /rollouts`` refuses v3 (409, why) and a version
    the registry does not hold (404); MLflow's champion alias set by hand on v2 is followed by the registry
    and serving within 10 s, on v3 put back with an alert."""
    name = unique("it-alias")
    await first_champion(kafka, services, write_version(store_settings, agrawal_rows(1000, function=2, seed=61)), name)
    async with (
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_REJECTED.name) as rejected,
    ):
        await request_training(services["training"], name, write_version(store_settings, agrawal_rows(1000, 2, 62)))
        [approval] = await wait_for(approved, name, timeout=60)
        version = write_version(store_settings, agrawal_rows(1000, function=2, seed=63))
        await request_training(services["training"], name, version, params={"shuffle_labels": True})
        [rejection] = await wait_for(rejected, name, timeout=60)
    assert (approval["version"], rejection["version"]) == ("2", "3")
    await served_champion(services["serving"], name, "1", timeout=30)
    async with httpx.AsyncClient(base_url=services["serving"], headers=OPERATOR, timeout=30) as http:
        refused = await http.post("/rollouts", json={"model_name": name, "version": "3", "strategy": "ab"})
        unknown = await http.post("/rollouts", json={"model_name": name, "version": "9", "strategy": "ab"})
    assert refused.status_code == 409 and "v3" in refused.json()["detail"] and "rejected" in refused.json()["detail"]
    assert unknown.status_code == 404 and "no version 9" in unknown.json()["detail"]

    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri)
    async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion:
        client.set_registered_model_alias(name, "champion", "2")  # an approved version: followed
        [moved] = await wait_for(champion, name, timeout=FOLLOWED_WITHIN_S)
        waited = await served_champion(services["serving"], name, "2", timeout=FOLLOWED_WITHIN_S)
    assert (moved["version"], moved["previous_version"], moved["actor"]) == ("2", "1", "mlflow")
    print(f"alias set by hand -> serving answers with v2 after {waited:.1f} s")

    async with TopicReader(kafka.bootstrap_servers, ALERTS.name) as alerts:
        client.set_registered_model_alias(name, "champion", "3")  # a rejected version: put back
        [alert] = await alerts.collect(
            lambda found: len(found) >= 1,
            timeout=FOLLOWED_WITHIN_S,
            where=lambda b: b.get("dedup_key", "").endswith(name),
        )
    assert alert["kind"] == "champion_alias" and "v3 is rejected" in alert["message"]
    assert client.get_registered_model(name).aliases["champion"] == "2"
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        history = (await http.get(f"/models/{name}")).json()["history"]
    assert [(h["action"], h["version"], h["actor"]) for h in history[-2:]] == [
        ("promote", "2", "mlflow"),
        ("alias_put_back", "2", "registry"),
    ]
    await served_champion(services["serving"], name, "2", timeout=2)  # serving never followed v3
