"""The feature service against the running stack: records in through ingestion, vectors out."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import FEATURES_ONLINE
from tests.support import stack
from tests.support.auth import PRODUCER
from tests.support.kafka import TopicReader
from tests.unit.test_ingestion_kafka import loan

pytestmark = pytest.mark.usefixtures("topics")


async def vector_of(http: httpx.AsyncClient, entity: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"/features/loans/{entity}")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"no vector for {entity}: {response.status_code} {response.text}")
        await asyncio.sleep(0.3)


async def test_ingested_records_are_served_from_the_online_store_and_survive_a_restart(kafka: KafkaSettings, services):
    entity = f"it-{uuid.uuid4().hex[:8]}"
    records = [
        loan(applicant_id=entity, applied_at="2026-01-01T10:00:00+00:00", salary=1000.0, commission=500.0),
        loan(applicant_id=entity, applied_at="2026-01-01T11:00:00+00:00", salary=3000.0, commission=0.0),
    ]
    late = f"{entity}-late"
    out_of_order = [  # the later application arrives first: the earlier one must not overwrite it
        loan(applicant_id=late, applied_at="2026-01-01T11:00:00+00:00", salary=7000.0),
        loan(applicant_id=late, applied_at="2026-01-01T10:00:00+00:00", salary=10.0),
    ]
    async with (
        TopicReader(kafka.bootstrap_servers, FEATURES_ONLINE.name) as online,
        httpx.AsyncClient(base_url=services["ingestion"], headers=PRODUCER, timeout=30) as ingestion,
        httpx.AsyncClient(base_url=services["features"], timeout=30) as features,
    ):
        for record in [*records, *out_of_order]:
            assert (await ingestion.post("/records", json={"dataset": "loans", "records": [record]})).status_code == 200
        published = await online.collect(lambda found: len(found) >= 2, where=lambda b: b["entity_id"] == entity)
        vector = await vector_of(features, entity)
        await online.collect(lambda found: len(found) >= 1, where=lambda b: b["entity_id"] == late)
        await asyncio.sleep(1)  # time for the late record to be handled (and ignored)
        late_vector = await vector_of(features, late)
        started = time.perf_counter()
        for _ in range(50):
            await features.get(f"/features/loans/{entity}")
        per_lookup_ms = (time.perf_counter() - started) / 50 * 1000
        unknown = await features.get("/features/loans/nobody-at-all")
        statistics = (await features.get("/features/loans/statistics")).json()
        computed = await features.post("/features/loans/compute", json={"records": [records[1]]})
        invalid = await features.post("/features/loans/compute", json={"records": [{**records[1], "age": "old"}]})
    assert vector["values"]["salary"] == 3000.0 and vector["values"]["income"] == 3000.0
    assert vector["event_time"].startswith("2026-01-01T11:00")
    assert [p["values"]["salary"] for p in published[:2]] == [1000.0, 3000.0]
    assert per_lookup_ms < 20, f"{per_lookup_ms:.1f} ms per lookup"
    assert unknown.status_code == 404 and "nobody-at-all" in unknown.json()["detail"]
    assert statistics["features"]["salary"]["count"] >= 2 and statistics["entities"] >= 1
    assert computed.json()["vectors"][0] == vector["values"]
    assert invalid.status_code == 422 and "records.0.age" in invalid.json()["detail"]

    assert late_vector["values"]["salary"] == 7000.0

    stack.restart("features")
    async with httpx.AsyncClient(base_url=services["features"], timeout=30) as features:
        again = await vector_of(features, entity, timeout=60)
        late_again = await vector_of(features, late)
        health = (await features.get("/health")).json()
    assert again["values"] == vector["values"]
    assert again["event_time"] == vector["event_time"]  # the replay kept the later record, not the last read
    assert late_again["values"]["salary"] == 7000.0
    assert health["store"] == "ready" and health["entities"] >= 2
