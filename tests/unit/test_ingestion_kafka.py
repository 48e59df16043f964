"""Ingestion's subscriber and the dead-letter middleware on the in-memory broker."""

import base64
import json
from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker

from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import SeenEvents, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.ingestion.subscribers import register_subscribers
from flywheel.schemas import (
    DEADLETTERS,
    RECORDS_RAW,
    RECORDS_REJECTED,
    RECORDS_VALIDATED,
    MessageDeadLettered,
    RecordRejected,
    RecordSubmitted,
    RecordValidated,
)
from tests.support.auth import DEV_CREDENTIALS, PRODUCER

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def loan(**overrides) -> dict:
    record = {
        "applicant_id": "a-1",
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
    return {**record, **overrides}


def collector(bodies: list):
    async def collect(body: dict) -> None:
        bodies.append(body)

    return collect


@pytest.fixture
def wired():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="ingestion-test")
    register_subscribers(broker, load_contracts(DATASETS), SeenEvents())
    seen: dict[str, list] = {RECORDS_VALIDATED.name: [], RECORDS_REJECTED.name: [], DEADLETTERS.name: []}
    for topic, bodies in seen.items():
        broker.subscriber(topic)(collector(bodies))
    return broker, seen


async def test_valid_record_is_published_validated_with_its_cause(wired):
    broker, seen = wired
    submitted = RecordSubmitted(dataset="loans", record_id="r1", data=loan(), producer="test")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(submitted.to_bytes(), RECORDS_RAW.name)
    [validated] = [RecordValidated.model_validate(b) for b in seen[RECORDS_VALIDATED.name]]
    assert validated.entity_id == "a-1"
    assert validated.causation_id == submitted.event_id
    assert validated.correlation_id == submitted.correlation_id
    assert seen[RECORDS_REJECTED.name] == [] and seen[DEADLETTERS.name] == []


async def test_invalid_record_goes_to_rejected_with_every_reason(wired):
    broker, seen = wired
    submitted = RecordSubmitted(dataset="loans", record_id="r2", data=loan(age=7, car=99), producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(submitted.to_bytes(), RECORDS_RAW.name)
    [rejected] = [RecordRejected.model_validate(b) for b in seen[RECORDS_REJECTED.name]]
    assert {(v.column, v.rule) for v in rejected.violations} == {("age", "range"), ("car", "category")}


async def test_redelivered_submission_gives_the_same_event_but_a_resend_is_a_duplicate(wired):
    broker, seen = wired
    first = RecordSubmitted(dataset="loans", record_id="r3", data=loan(), producer="t")
    resend = RecordSubmitted(dataset="loans", record_id="r3", data=loan(), producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        for event in (first, first, resend):
            await test_broker.publish(event.to_bytes(), RECORDS_RAW.name)
    validated = [RecordValidated.model_validate(b) for b in seen[RECORDS_VALIDATED.name]]
    assert len(validated) == 2 and validated[0].event_id == validated[1].event_id
    [rejected] = [RecordRejected.model_validate(b) for b in seen[RECORDS_REJECTED.name]]
    assert rejected.violations[0].rule == "duplicate"


@pytest.mark.parametrize(
    ("field", "raw", "rule"),
    [
        ("salary", "1" * 401, "range"),
        ("salary", "1e308", "range"),
        ("salary", "Infinity", "range"),
        ("age", "-" + "9" * 401, "range"),
        ("age", "NaN", "nullable"),
        ("age", '"' + "x" * 10_000 + '"', "type"),
        ("applied_at", '"9999-12-31T23:59:59-05:00"', "range"),
    ],
    ids=lambda v: v[:16],
)
async def test_an_absurd_value_on_the_wire_is_rejected_with_its_reason_and_the_consumer_goes_on(
    wired, field, raw, rule
):
    broker, seen = wired
    data = json.dumps(loan(**{field: "@"})).replace('"@"', raw)
    envelope = RecordSubmitted(dataset="loans", record_id="bad", data={}, producer="t").model_dump(mode="json")
    payload = json.dumps(envelope).replace('"data": {}', f'"data": {data}').encode()
    good = RecordSubmitted(dataset="loans", record_id="good", data=loan(), producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(payload, RECORDS_RAW.name)
        await test_broker.publish(good.to_bytes(), RECORDS_RAW.name)
    [rejected] = [RecordRejected.model_validate(b) for b in seen[RECORDS_REJECTED.name]]
    assert [(v.column, v.rule) for v in rejected.violations] == [(field, rule)]
    assert rejected.record_id == "bad" and seen[DEADLETTERS.name] == []
    assert len(seen[RECORDS_VALIDATED.name]) == 1, "the consumer kept going after the bad record"


@pytest.mark.parametrize(
    ("payload", "error_type"),
    [(b"{not json", "JSONDecodeError"), (json.dumps({"dataset": "loans"}).encode(), "ValidationError")],
)
async def test_malformed_message_goes_to_dead_letters_with_reason_and_bytes(wired, payload, error_type):
    broker, seen = wired
    good = RecordSubmitted(dataset="loans", record_id="r4", data=loan(), producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(payload, RECORDS_RAW.name)
        await test_broker.publish(good.to_bytes(), RECORDS_RAW.name)
    [letter] = [MessageDeadLettered.model_validate(b) for b in seen[DEADLETTERS.name]]
    assert letter.source_topic == RECORDS_RAW.name
    assert letter.error_type == error_type
    assert letter.reason
    assert base64.b64decode(letter.original_value) == payload
    assert len(seen[RECORDS_VALIDATED.name]) == 1, "the consumer kept going after the bad message"


async def test_failing_handler_is_retried_a_bounded_number_of_times_then_dead_lettered():
    broker = create_broker(KafkaSettings(dead_letter_attempts=3, retry_backoff_s=0), service="t")
    calls = []

    @broker.subscriber("flaky")
    async def flaky(body: dict) -> None:
        calls.append(body)
        raise RuntimeError("downstream unavailable")

    letters = []
    broker.subscriber(DEADLETTERS.name)(collector(letters))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"n": 1}, "flaky")
    assert len(calls) == 3
    [letter] = [MessageDeadLettered.model_validate(b) for b in letters]
    assert letter.attempts == 3 and "downstream unavailable" in letter.reason


def test_a_record_whose_publication_failed_is_accepted_when_resent_not_called_a_duplicate() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from flywheel.ingestion.http import create_router

    class FlakyBroker:
        """Kafka that is down for the first publication, then back."""

        def __init__(self) -> None:
            self.calls = 0
            self.published: list[bytes] = []

        async def publish(self, body: bytes, **kwargs) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("broker unavailable")
            self.published.append(body)

    broker = FlakyBroker()
    app = FastAPI()
    app.include_router(create_router(broker, load_contracts(DATASETS), SeenEvents(), 10, DEV_CREDENTIALS))
    api = TestClient(app, headers=PRODUCER)
    body = {"dataset": "loans", "records": [{**loan(), "record_id": "r-1"}]}
    first = api.post("/records", json=body)
    again = api.post("/records", json=body)
    assert first.status_code == 503 and "broker unavailable" in first.json()["detail"]
    assert again.status_code == 200 and again.json()["accepted"] == 1, again.text
    assert len(broker.published) == 1


async def test_a_900_kb_message_is_dead_lettered_whole_with_its_exact_bytes(wired) -> None:
    broker, seen = wired
    big = b"x" * (900 * 1024)  # not JSON, and nearly as big as the broker lets a message be
    good = RecordSubmitted(dataset="loans", record_id="after-big", data=loan(), producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(big, RECORDS_RAW.name)
        await test_broker.publish(good.to_bytes(), RECORDS_RAW.name)
    [letter] = seen[DEADLETTERS.name]
    assert "not JSON" in letter["reason"] and "cut" not in letter["reason"]
    assert base64.b64decode(letter["original_value"]) == big
    assert len(seen[RECORDS_VALIDATED.name]) == 1, "the consumer kept going after the big message"


async def test_a_message_too_big_to_dead_letter_whole_is_dead_lettered_cut_with_its_digest(wired) -> None:
    from flywheel.common.kafka import MAX_KEPT_BYTES

    broker, seen = wired
    huge = b"x" * (MAX_KEPT_BYTES + 1)  # past what any topic at the broker's default limit can hold
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(huge, RECORDS_RAW.name)
    [letter] = seen[DEADLETTERS.name]
    assert "not JSON" in letter["reason"] and f"cut from {len(huge)} to {MAX_KEPT_BYTES} bytes" in letter["reason"]
    assert len(base64.b64decode(letter["original_value"])) == MAX_KEPT_BYTES
