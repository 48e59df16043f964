"""Two registry replicas on the real stack: MLflow numbers concurrent registrations apart, and promotions
asked of both replicas at once are decided one at a time by the replica owning the model (its partition of
``registry.commands``), so the champion's history stays one unbroken chain."""

from __future__ import annotations

import asyncio
import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flywheel.common.settings import KafkaSettings
from flywheel.registry.modelstore import STATUS
from tests.integration.test_registry_gates import TOKEN, first_champion
from tests.integration.test_replicas import free_port
from tests.integration.test_training_runs import agrawal_rows, unique, write_version
from tests.support.stack import replica

pytestmark = pytest.mark.usefixtures("topics")

VERSIONS = 6  # registered at once, from six threads
ROUNDS = 8  # promotions asked at once, half of each replica


def register_at_once(client: MlflowClient, name: str, champion: ModelVersion) -> list[str]:
    """Versions of ``name`` registered from ``VERSIONS`` threads at the same moment (the pinned MLflow's SQL
    store numbers them MAX+1: concurrent ones collided before mlflow#22635); each then tagged approved."""

    def register(_: int) -> str:
        version = client.create_model_version(
            name, champion.source, run_id=champion.run_id, model_id=champion.source.removeprefix("models:/")
        ).version
        client.set_model_version_tag(name, version, STATUS, "approved")
        return str(version)

    with ThreadPoolExecutor(VERSIONS) as pool:
        return list(pool.map(register, range(VERSIONS)))


async def test_two_registry_replicas_number_registrations_apart_and_decide_promotions_one_at_a_time(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    name = unique("it-registry-replicas")
    await first_champion(kafka, services, write_version(store_settings, agrawal_rows(600, function=0, seed=5)), name)
    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri)
    champion = client.get_model_version(name, "1")
    registered = await asyncio.to_thread(register_at_once, client, name, champion)
    assert sorted(registered, key=int) == [str(v) for v in range(2, 2 + VERSIONS)], "distinct versions, none lost"

    with replica("registry", free_port()) as second:
        urls = [services["registry"], second]
        chosen = random.Random(7).choices(registered, k=ROUNDS)

        async def promote(i: int, version: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=urls[i % 2], timeout=60, headers=TOKEN) as http:
                return await http.post(f"/models/{name}/promote", json={"version": version, "reason": f"round {i}"})

        answers = await asyncio.gather(*(promote(i, v) for i, v in enumerate(chosen)))
        async with httpx.AsyncClient(base_url=second, timeout=10) as http:
            model = (await http.get(f"/models/{name}")).json()

    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 409}, [(a.status_code, a.text[:200]) for a in answers]
    refused = [a.json()["detail"] for a in answers if a.status_code == 409]
    assert all("already the champion" in why for why in refused), refused
    moves = [h for h in model["history"] if h["action"] == "promote"]
    assert len(moves) == 1 + statuses.count(200), "one move per promotion carried out, the first model's too"
    for before, after in itertools.pairwise(moves):  # each move starts where the one before ended
        assert after["previous"] == before["version"], model["history"]
    assert model["aliases"]["champion"] == moves[-1]["version"]
    print(f"{statuses.count(200)} moved, {statuses.count(409)} refused (already champion), of {ROUNDS} at once")
