"""Sequential consume → validate → publish round trips through one FastStream hop vs plain aiokafka.

Both hops run on the same broker with acks=all and idempotence on, commit each message after
handling it, and validate the same Pydantic event; the client sends one event and waits for
the hop's output before sending the next.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flywheel.common.kafka import client_security, consumer_options, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import RecordSubmitted, RecordValidated
from tests.bench.support import REPEATS, ratios, side_by_side, spread, table

ROUND_TRIPS = 2000
WARMUP = 100


def validated_from(submitted: RecordSubmitted) -> RecordValidated:
    return RecordValidated(
        producer="bench",
        dataset=submitted.dataset,
        record_id=submitted.record_id,
        entity_id="e",
        event_time=submitted.occurred_at,
        data=submitted.data,
        contract_version="1",
        **submitted.caused(),
    )


async def fresh_topics(bootstrap: str, tag: str) -> tuple[str, str]:
    names = (f"bench.{tag}.in.{uuid.uuid4().hex[:8]}", f"bench.{tag}.out.{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        await admin.close()
    return names


async def drive(bootstrap: str, topic_in: str, topic_out: str) -> float:
    """Send one event, wait for the hop's answer, repeat; return round trips per second."""
    client = AIOKafkaProducer(
        **client_security(), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    answers = AIOKafkaConsumer(
        topic_out, **client_security(), bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=5
    )
    await client.start()
    await answers.start()
    try:
        payload = RecordSubmitted(producer="bench", dataset="loans", record_id="r", data={"age": 40}).to_bytes()
        started = 0.0
        for i in range(WARMUP + ROUND_TRIPS):
            if i == WARMUP:
                started = time.perf_counter()
            await client.send_and_wait(topic_in, payload)
            await answers.getone()
        return ROUND_TRIPS / (time.perf_counter() - started)
    finally:
        await answers.stop()
        await client.stop()


async def faststream_hop(bootstrap: str) -> float:
    topic_in, topic_out = await fresh_topics(bootstrap, "faststream")
    broker = create_broker(KafkaSettings(bootstrap_servers=bootstrap), service="bench")

    @broker.subscriber(
        topic_in, **consumer_options("bench", group_id=f"bench-{uuid.uuid4().hex[:6]}", fetch_max_wait_ms=5)
    )
    @broker.publisher(topic_out)
    async def on_record_submitted(submitted: RecordSubmitted) -> bytes:
        return validated_from(submitted).to_bytes()

    await broker.start()
    try:
        return await drive(bootstrap, topic_in, topic_out)
    finally:
        await broker.stop()


async def plain_hop(bootstrap: str) -> float:
    topic_in, topic_out = await fresh_topics(bootstrap, "plain")
    consumer = AIOKafkaConsumer(
        topic_in,
        **client_security(),
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    producer = AIOKafkaProducer(
        **client_security(), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await consumer.start()
    await producer.start()

    async def loop() -> None:
        async for message in consumer:
            submitted = RecordSubmitted.model_validate_json(message.value)
            await producer.send_and_wait(topic_out, validated_from(submitted).to_bytes())
            await consumer.commit()

    task = asyncio.create_task(loop())
    try:
        return await drive(bootstrap, topic_in, topic_out)
    finally:
        task.cancel()
        await consumer.stop()
        await producer.stop()


async def main() -> None:
    bootstrap = KafkaSettings().bootstrap_servers
    faststream, plain = await side_by_side(lambda: faststream_hop(bootstrap), lambda: plain_hop(bootstrap))
    table(
        [
            ("plain aiokafka loop", spread(plain, digits=0), "1.00"),
            (
                "FastStream hop (flywheel broker)",
                spread(faststream, digits=0),
                spread(ratios(faststream, plain), "x", 2),
            ),
        ],
        (f"one hop, acks=all, commit per message, x{REPEATS}", "round trips/s min / median / max", "ratio"),
    )
