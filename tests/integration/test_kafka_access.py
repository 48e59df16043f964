"""Kafka on the real stack lets in only who logs in, and each principal only to its own topics and groups.

Every client logs in with SASL/SCRAM-SHA-256; the brokers' ACLs are the topic graph's
(``flywheel.common.kafkaaccess``, made by ``infra/kafka/Access.java``): a service writes the topics it
publishes and reads those it consumes, outside producers (``clients``) write only the topics open to
clients, operators only read the topics meant for people. That the services work at all as their own
principals (the rest of the suite) shows what they are allowed; here, what they are not.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from flywheel.common.kafka import client_security
from flywheel.common.kafkaaccess import CLIENTS, OPERATORS, SERVICES, USERS
from flywheel.common.settings import KafkaSettings
from flywheel.common.topicroles import ROLES
from flywheel.schemas import RECORDS_RAW, RecordSubmitted
from infra.launcher.credentials import kafka_passwords
from tests.support.kafka import TopicReader


def login(kafka: KafkaSettings, user: str, password: str | None = None) -> dict:
    return client_security(KafkaSettings(username=user, password=password or kafka_passwords()[user]))


async def test_a_client_without_a_login_or_with_a_wrong_password_is_refused(kafka: KafkaSettings):
    async def start(options: dict) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=5000, **options)
        try:
            await asyncio.wait_for(producer.start(), 30)
        finally:
            await producer.stop()

    await start(login(kafka, "ingestion"))  # the broker is up and takes its login
    for options in ({}, login(kafka, "ingestion", "not-its-password")):
        with pytest.raises(KafkaConnectionError):
            await start(options)


@pytest.mark.parametrize("user", USERS)
async def test_a_principal_cannot_write_a_topic_it_does_not_own(kafka: KafkaSettings, user: str):
    forbidden = [topic for topic, roles in ROLES.items() if user not in roles["producers"]]
    assert forbidden, f"{user} may write every topic"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, **login(kafka, user))
    await producer.start()
    try:
        for topic in forbidden:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, b'{"forged": true}')
    finally:
        await producer.stop()


async def test_outside_producers_write_records_and_nothing_a_service_decides(kafka: KafkaSettings):
    assert sorted(t for t, r in ROLES.items() if CLIENTS in r["producers"]) == [
        "labels",
        "predictions.requests",
        "records.raw",
    ]
    record = RecordSubmitted(
        producer="it-kafka-access", dataset=f"it-access-{uuid.uuid4().hex[:6]}", record_id=uuid.uuid4().hex, data={}
    )
    async with TopicReader(kafka.bootstrap_servers, RECORDS_RAW.name) as reader:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, **login(kafka, CLIENTS))
        await producer.start()
        try:
            await producer.send_and_wait(RECORDS_RAW.name, record.to_bytes(), key=record.record_id.encode())
        finally:
            await producer.stop()
        await reader.collect(lambda seen: len(seen) == 1, where=lambda m: m.get("record_id") == record.record_id)


async def consume_one_batch(kafka: KafkaSettings, user: str, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, group_id=group, enable_auto_commit=False, **login(kafka, user)
    )
    try:
        await asyncio.wait_for(consumer.start(), 30)
        await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()


async def test_operators_read_alerts_in_their_own_groups_and_nothing_else(kafka: KafkaSettings):
    own_group = f"operators-it-{uuid.uuid4().hex[:6]}"
    await consume_one_batch(kafka, OPERATORS, "alerts", own_group)
    with pytest.raises(TopicAuthorizationFailedError):
        await consume_one_batch(kafka, OPERATORS, "predictions", own_group)
    with pytest.raises(GroupAuthorizationFailedError):  # no joining a service's group to take its partitions
        await consume_one_batch(kafka, OPERATORS, "alerts", "flywheel-serving")


@pytest.mark.parametrize("user", SERVICES)
async def test_a_service_cannot_join_another_services_consumer_group(kafka: KafkaSettings, user: str):
    other = SERVICES[(SERVICES.index(user) + 1) % len(SERVICES)]
    readable = next(t for t, r in ROLES.items() if user in r["readers"])
    await consume_one_batch(kafka, user, readable, f"flywheel-{user}-it")  # its own groups: yes
    for group in (f"flywheel-{other}", f"flywheel-{other}-it", f"flywheel-{user}x"):  # no one else's
        with pytest.raises(GroupAuthorizationFailedError):
            await consume_one_batch(kafka, user, readable, group)
