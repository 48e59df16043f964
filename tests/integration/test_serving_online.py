"""Serving answers by entity id from the online store, against the running stack.

Records go in through ingestion; features computes each entity's vector and publishes it on
``features.online``; serving folds that topic into its own view. Nothing here talks to the
features service's HTTP lookup: what serving answers with is what it read from Kafka.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flywheel.common.settings import KafkaSettings
from tests.integration.test_registry_gates import first_champion
from tests.integration.test_serving_rollouts import live_applications
from tests.integration.test_training_runs import agrawal_rows, unique, write_version
from tests.support import stack
from tests.support.auth import PRODUCER

pytestmark = pytest.mark.usefixtures("topics")


async def served(serving: str, name: str, timeout: float = 180) -> None:
    """Wait until serving answers for ``name`` (the first request loads the champion from MLflow: slow when busy)."""
    probe = live_applications(1)[0][0]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=serving, timeout=60) as http:
        while True:
            try:
                response = await http.post(f"/models/{name}/predict", json={"records": [probe]})
                if response.status_code == 200:
                    return
            except httpx.TimeoutException:
                response = None
            if time.monotonic() > deadline:
                raise AssertionError(f"serving never answered for {name}: {getattr(response, 'text', 'timeout')}")
            await asyncio.sleep(0.5)


async def answered(http: httpx.AsyncClient, name: str, entities: list[dict], timeout: float = 60) -> httpx.Response:
    """Ask by entity until serving's view has every entity's vector (features.online is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.post(f"/models/{name}/predict", json={"entities": entities})
        if response.status_code != 404 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.3)


async def test_an_entity_id_alone_is_answered_from_the_online_store_and_a_restarted_serving_rebuilds_it(
    kafka: KafkaSettings, store_settings, services
):
    name = unique("it-online")
    await first_champion(kafka, services, write_version(store_settings, agrawal_rows(1200, 0, 41)), name)
    await served(services["serving"], name)

    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    records = [
        {**record, "applicant_id": f"online-{run}-{i}", "applied_at": (now - timedelta(seconds=5)).isoformat()}
        for i, (record, _) in enumerate(live_applications(20, seed=7))
    ]
    old = {**records[0], "applicant_id": f"online-{run}-old", "applied_at": "2020-01-01T00:00:00+00:00"}
    entities = [{"entity_id": r["applicant_id"]} for r in records]
    async with (
        httpx.AsyncClient(base_url=services["ingestion"], headers=PRODUCER, timeout=60) as ingestion,
        httpx.AsyncClient(base_url=services["serving"], timeout=60) as serving,
    ):
        accepted = await ingestion.post("/records", json={"dataset": "loans", "records": [*records, old]})
        assert accepted.status_code == 200, accepted.text
        by_id = await answered(serving, name, entities)
        whole = await serving.post(f"/models/{name}/predict", json={"records": records})
        stale = await answered(serving, name, [{"entity_id": old["applicant_id"]}])
        unknown = await serving.post(f"/models/{name}/predict", json={"entities": [{"entity_id": f"nobody-{run}"}]})
    assert by_id.status_code == 200, by_id.text
    assert whole.status_code == 200, whole.text
    answers, expected = by_id.json()["predictions"], whole.json()["predictions"]
    assert [(a["prediction"], a["probability"]) for a in answers] == [
        (w["prediction"], w["probability"]) for w in expected
    ]
    features = answers[0]["features"]
    assert features["entity_id"] == records[0]["applicant_id"] and features["from_request"] == []
    assert features["feature_set_version"] and features["event_time"].startswith(records[0]["applied_at"][:19])
    assert len(features["age_s"]) == 13 and all(4 <= age < 600 for age in features["age_s"].values())
    assert stale.status_code == 409 and "older than the maximum" in stale.json()["detail"], stale.text
    assert unknown.status_code == 404 and f"nobody-{run}" in unknown.json()["detail"], unknown.text

    stack.restart("serving")  # healthy means started: the view was rebuilt before the first request
    async with httpx.AsyncClient(base_url=services["serving"], timeout=60) as serving:
        again = await serving.post(f"/models/{name}/predict", json={"entities": entities})
        health = (await serving.get("/health")).json()
    assert again.status_code == 200, again.text
    assert [(a["prediction"], a["probability"]) for a in again.json()["predictions"]] == [
        (a["prediction"], a["probability"]) for a in answers
    ]
    assert again.json()["predictions"][0]["features"]["event_time"] == features["event_time"]
    assert health["online_view"]["entities"] >= len(records) + 1
