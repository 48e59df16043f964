"""A plain Kafka client talks to a running service; bad messages become dead letters."""

import base64
import uuid

import httpx
from aiokafka import AIOKafkaProducer

from flywheel.schemas import DEADLETTERS, RECORDS_RAW, RECORDS_VALIDATED, RecordSubmitted
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader, producer, send_event


def loan(applicant: str) -> dict:
    return {
        "applicant_id": applicant,
        "applied_at": "2026-01-01T10:00:00Z",
        "salary": 50_000.0,
        "commission": 0.0,
        "age": 40,
        "elevel": 2,
        "car": 3,
        "zipcode": 4,
        "hvalue": 200_000.0,
        "hyears": 10,
        "loan": 100_000.0,
        "approved": 1,
    }


async def test_enveloped_event_from_a_plain_producer_is_consumed_by_the_service(kafka, topics, services):
    submitted = RecordSubmitted(
        dataset="loans", record_id=f"it-{uuid.uuid4()}", data=loan("it-1"), producer="integration-test"
    )
    async with TopicReader(kafka.bootstrap_servers, RECORDS_VALIDATED.name) as validated:
        p = await producer(kafka.bootstrap_servers)
        try:
            await send_event(p, submitted)
        finally:
            await p.stop()
        [event] = await validated.collect(
            until=lambda seen: len(seen) >= 1, where=lambda b: b["record_id"] == submitted.record_id
        )
    assert event["event_type"] == "RecordValidated"
    assert event["causation_id"] == str(submitted.event_id)
    assert event["correlation_id"] == str(submitted.correlation_id)
    assert event["producer"] == "ingestion"


async def test_malformed_message_lands_on_dead_letters_and_the_consumer_keeps_consuming(kafka, topics, services):
    garbage = f"not json {uuid.uuid4()}".encode()
    follower = RecordSubmitted(
        dataset="loans", record_id=f"it-{uuid.uuid4()}", data=loan("it-2"), producer="integration-test"
    )
    async with (
        TopicReader(kafka.bootstrap_servers, DEADLETTERS.name) as letters,
        TopicReader(kafka.bootstrap_servers, RECORDS_VALIDATED.name) as validated,
    ):
        p: AIOKafkaProducer = await producer(kafka.bootstrap_servers)
        try:
            await p.send_and_wait(RECORDS_RAW.name, garbage, key=b"same-partition")
            await p.send_and_wait(RECORDS_RAW.name, follower.to_bytes(), key=b"same-partition")
        finally:
            await p.stop()
        [letter] = await letters.collect(
            until=lambda seen: len(seen) >= 1,
            where=lambda b: base64.b64decode(b["original_value"]) == garbage,
        )
        await validated.collect(until=lambda seen: len(seen) >= 1, where=lambda b: b["record_id"] == follower.record_id)
    assert letter["source_topic"] == RECORDS_RAW.name
    assert letter["reason"].startswith("not JSON")
    assert letter["error_type"] == "JSONDecodeError"


async def test_every_service_reports_its_connections_metrics_and_docs(services):
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in services.items():
            health = (await client.get(f"{url}/health")).json()
            assert health["status"] == "ok", health
            uses = {"kafka", "object_store"} | ({"mlflow"} if name not in ("ingestion", "features") else set())
            assert set(health["checks"]) >= uses and ("mlflow" in health["checks"]) == ("mlflow" in uses), health
            metrics = await client.get(f"{url}/metrics")
            assert metrics.status_code == 200 and "flywheel_http_request_duration_seconds" in metrics.text
            openapi = (await client.get(f"{url}/openapi.json")).json()
            assert openapi["info"]["title"] == f"flywheel-{name}"
            asyncapi = (await client.get(f"{url}/asyncapi.json")).json()
            assert asyncapi["asyncapi"].startswith("3.")


async def test_a_bad_http_body_gets_a_4xx_with_a_message_not_a_500(services):
    async with httpx.AsyncClient(base_url=services["ingestion"], headers=OPERATOR, timeout=10) as client:
        broken = await client.post("/records", content=b"{nope", headers={"content-type": "application/json"})
        assert broken.status_code == 422 and broken.json()["detail"]
        unknown = await client.post("/records", json={"dataset": "nope", "records": [{"a": 1}]})
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        mixed = await client.post(
            "/records", json={"dataset": "loans", "records": [loan(f"h-{uuid.uuid4()}"), {"age": "x"}]}
        )
        assert mixed.status_code == 200
        body = mixed.json()
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert {v["rule"] for v in body["results"][1]["violations"]} >= {"type", "nullable"}
