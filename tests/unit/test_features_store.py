"""The online store and its subscriber on the in-memory broker."""

from __future__ import annotations

import base64
import json

from faststream.kafka import TestKafkaBroker

from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import DEADLETTERS, SeenEvents, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.features.store import OnlineStore
from flywheel.features.subscribers import register_subscribers
from flywheel.schemas import FEATURES_ONLINE, RECORDS_VALIDATED, FeaturesComputed, RecordValidated
from tests.unit.test_feature_skew import FEATURES
from tests.unit.test_ingestion_kafka import DATASETS, loan

CONTRACTS = load_contracts(DATASETS)


def validated(entity: str, minute: int, salary: float) -> RecordValidated:
    data = loan(applicant_id=entity, applied_at=f"2026-01-01T10:{minute:02d}:00+00:00", salary=salary)
    return RecordValidated(
        producer="t",
        dataset="loans",
        record_id=f"{entity}-{minute}",
        entity_id=entity,
        event_time=data["applied_at"],
        data=data,
        contract_version="1.0",
    )


def test_the_latest_record_by_event_time_wins_and_late_ones_only_count_in_statistics() -> None:
    store = OnlineStore({"loans": FEATURES})
    assert store.apply(validated("a", 5, 100.0)).values["salary"] == 100.0
    assert store.apply(validated("a", 3, 50.0)) is None  # late: older than the stored vector
    assert store.latest[("loans", "a")].values["salary"] == 100.0
    store.apply(validated("a", 9, 300.0))
    salary = store.statistics["loans"]["salary"].as_dict()
    assert salary["count"] == 3 and salary["mean"] == 150.0 and salary["min"] == 50.0 and salary["max"] == 300.0
    assert store.entities("loans") == 1


async def test_each_validated_record_updates_the_store_once_and_publishes_its_vector() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="features-test")
    store = OnlineStore({"loans": FEATURES})
    register_subscribers(broker, store, SeenEvents(), CONTRACTS)
    vectors: list[FeaturesComputed] = []

    @broker.subscriber(FEATURES_ONLINE.name)
    async def collect(body: dict) -> None:
        vectors.append(FeaturesComputed.model_validate(body))

    records = [validated(f"e-{i}", i, 1000.0 * i) for i in range(5)]
    async with TestKafkaBroker(broker) as test_broker:
        for record in [*records, records[0]]:  # the last is a redelivery
            await test_broker.publish(record.to_bytes(), RECORDS_VALIDATED.name)
    # the redelivery counts once in the statistics, but its vector (still e-0's latest) goes out
    # again: had the first publish failed, it would otherwise never reach features.online
    assert [v.entity_id for v in vectors] == [*(f"e-{i}" for i in range(5)), "e-0"]
    assert vectors[5].values == vectors[0].values
    assert vectors[5].event_id == vectors[0].event_id  # the same event again: consumers dedup it
    assert vectors[3].values["income"] == 3000.0 and vectors[3].feature_set == "loans_features"
    assert vectors[0].causation_id == records[0].event_id
    assert store.statistics["loans"]["salary"].count == 5


async def test_records_the_replay_folded_in_are_published_once_the_subscriber_reaches_them() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="features-test")
    store, seen = OnlineStore({"loans": FEATURES}), SeenEvents()
    register_subscribers(broker, store, seen, CONTRACTS)
    newer, older = validated("r", 30, 900.0), validated("r", 10, 100.0)
    for record in (newer, older):  # what the start-up replay does with the log's tail
        store.apply(record, count=seen.first_time(record.event_id))
    vectors: list[FeaturesComputed] = []

    @broker.subscriber(FEATURES_ONLINE.name)
    async def collect(body: dict) -> None:
        vectors.append(FeaturesComputed.model_validate(body))

    async with TestKafkaBroker(broker) as test_broker:
        for record in (older, newer):  # the subscriber resumes from its committed offset
            await test_broker.publish(record.to_bytes(), RECORDS_VALIDATED.name)
    assert [v.values["salary"] for v in vectors] == [900.0]  # the stale one is never published
    assert store.statistics["loans"]["salary"].count == 2
    assert store.latest[("loans", "r")].values["salary"] == 900.0


async def test_a_bad_message_is_dead_lettered_and_the_consumer_goes_on() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="features-test")
    store = OnlineStore({"loans": FEATURES})
    register_subscribers(broker, store, SeenEvents(), CONTRACTS)
    letters: list[dict] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"{not json", RECORDS_VALIDATED.name)
        await test_broker.publish(validated("ok", 1, 10.0).to_bytes(), RECORDS_VALIDATED.name)
    assert store.entities("loans") == 1
    assert len(letters) == 1 and letters[0]["source_topic"] == RECORDS_VALIDATED.name


async def test_an_absurd_validated_record_is_dead_lettered_with_its_reason_and_never_reaches_the_statistics() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="features-test")
    store = OnlineStore({"loans": FEATURES})
    register_subscribers(broker, store, SeenEvents(), CONTRACTS)
    letters: list[dict] = []
    vectors: list[dict] = []
    broker.subscriber(DEADLETTERS.name)(_append_to(letters))
    broker.subscriber(FEATURES_ONLINE.name)(_append_to(vectors))
    good = validated("ok", 1, 10.0)
    nan = json.dumps({**good.model_dump(mode="json"), "record_id": "nan", "data": {**good.data, "salary": NAN}})
    poison = {
        "NaN salary": nan.encode(),
        "1e308 salary": _with(good, "huge", salary=1e308),
        "10k-char category": _with(good, "long", elevel="x" * 10_000),
        "unknown dataset": good.model_copy(update={"dataset": "no-such-dataset", "record_id": "ds"}).to_bytes(),
    }
    after = validated("ok", 2, 20.0)
    async with TestKafkaBroker(broker) as test_broker:
        for value in [good.to_bytes(), good.to_bytes(), *poison.values(), after.to_bytes()]:
            await test_broker.publish(value, RECORDS_VALIDATED.name)
    assert [base64.b64decode(d["original_value"]) for d in letters] == list(poison.values())
    reasons = dict(zip(poison, (d["reason"] for d in letters), strict=True))
    assert "salary is required" in reasons["NaN salary"] and "salary=1e+308 outside" in reasons["1e308 salary"]
    assert "elevel" in reasons["10k-char category"] and "no-such-dataset" in reasons["unknown dataset"]
    salary = store.statistics["loans"]["salary"].as_dict()
    assert (salary["count"], salary["missing_rate"], salary["max"]) == (2, 0.0, 20.0), "the good records only, once"
    assert [v["values"]["salary"] for v in vectors] == [10.0, 10.0, 20.0]


NAN = float("nan")


def _with(record: RecordValidated, record_id: str, **data) -> bytes:
    return record.model_copy(update={"record_id": record_id, "data": {**record.data, **data}}).to_bytes()


def _append_to(bodies: list[dict]):
    async def collect(body: dict) -> None:
        bodies.append(body)

    return collect


async def test_a_record_that_fails_in_its_batch_costs_one_dead_letter_and_the_others_are_published() -> None:
    class Failing(OnlineStore):
        def apply(self, record: RecordValidated, count: bool = True, values=None) -> FeaturesComputed | None:
            if record.record_id == "boom":
                raise RuntimeError("the store broke on this one")
            return super().apply(record, count=count, values=values)

    broker = create_broker(KafkaSettings(retry_backoff_s=0, dead_letter_attempts=2), service="features-test")
    store = Failing({"loans": FEATURES})
    register_subscribers(broker, store, SeenEvents(), CONTRACTS)
    letters: list[dict] = []
    vectors: list[dict] = []
    broker.subscriber(DEADLETTERS.name)(_append_to(letters))
    broker.subscriber(FEATURES_ONLINE.name)(_append_to(vectors))
    boom = validated("boom", 2, 20.0).model_copy(update={"record_id": "boom"})
    batch = [validated("a", 1, 10.0).to_bytes(), boom.to_bytes(), validated("b", 3, 30.0).to_bytes()]
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(*batch, topic=RECORDS_VALIDATED.name)
    assert [v["entity_id"] for v in vectors] == ["a", "b"]
    assert len(letters) == 1 and "the store broke on this one" in letters[0]["reason"] and letters[0]["attempts"] == 2
