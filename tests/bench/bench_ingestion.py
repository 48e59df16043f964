"""Ingestion throughput end to end (records.raw -> validated -> records.validated) vs raw Kafka.

Both sides move the same 5,000 loan records on the same broker, in the same run:
- raw: a plain aiokafka producer (acks=all, idempotent) into a fresh topic and a plain consumer
  reading them all back: the ceiling for one hop through Kafka on this machine;
- ingestion: the same records published to ``records.raw``; the clock stops when the running
  ingestion service has published every one of them on ``records.validated`` (validated
  against the data contract, commit after each, acks=all).
"""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from flywheel.common.kafka import client_security
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import RECORDS_RAW, RECORDS_VALIDATED, RecordSubmitted
from tests.bench.support import (
    REPEATS,
    cpu_by_process,
    cpu_ceiling,
    cpu_table,
    fresh_topic,
    ratios,
    side_by_side,
    spread,
    table,
)
from tests.support.kafka import TopicReader
from tests.unit.test_ingestion_kafka import loan

RECORDS = 5000


def submissions(tag: str, records: int = RECORDS) -> list[RecordSubmitted]:
    return [
        RecordSubmitted(
            producer="bench",
            dataset="loans",
            record_id=f"{tag}-{i}",
            data=loan(applicant_id=f"{tag}-{i}", salary=10_000.0 + i),
        )
        for i in range(records)
    ]


async def send_all(bootstrap: str, topic: str, events: list[RecordSubmitted]) -> None:
    producer = AIOKafkaProducer(
        **client_security(), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, event.to_bytes(), key=event.record_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def raw(bootstrap: str) -> float:
    topic = await fresh_topic(bootstrap, "bench.raw", partitions=3)
    consumer = AIOKafkaConsumer(
        topic,
        **client_security(),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        began = time.perf_counter()
        await send_all(bootstrap, topic, submissions(f"raw-{uuid.uuid4().hex[:6]}"))
        received = 0
        while received < RECORDS:
            batches = await consumer.getmany(timeout_ms=500)
            received += sum(len(b) for b in batches.values())
            if batches:
                await consumer.commit()
        return RECORDS / (time.perf_counter() - began)
    finally:
        await consumer.stop()


async def ingestion(bootstrap: str, records: int = RECORDS) -> float:
    """Records/s from ``records.raw`` to ``records.validated`` through the running ingestion service."""
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    async with TopicReader(bootstrap, RECORDS_VALIDATED.name) as validated:
        began = time.perf_counter()
        await send_all(bootstrap, RECORDS_RAW.name, submissions(tag, records))
        await validated.collect(
            lambda found: len(found) >= records, timeout=300, where=lambda b: b["record_id"].startswith(tag)
        )
        return records / (time.perf_counter() - began)


async def main() -> None:
    bootstrap = KafkaSettings().bootstrap_servers
    ours, plain = await side_by_side(lambda: ingestion(bootstrap), lambda: raw(bootstrap))
    table(
        [
            ("plain aiokafka producer -> consumer", spread(plain, digits=0), "1.00"),
            (
                "ingestion: records.raw -> records.validated",
                spread(ours, digits=0),
                spread(ratios(ours, plain), "x", 2),
            ),
        ],
        (f"{RECORDS:,} records, acks=all + idempotence, x{REPEATS}", "records/s min / median / max", "ratio"),
    )
    spent = await cpu_by_process(lambda: ingestion(bootstrap))  # one more run: where its CPU goes
    cost = cpu_table(f"one more run of {RECORDS:,} records: CPU by process", spent, RECORDS)
    cpu_table("one more run of the plain topic", await cpu_by_process(lambda: raw(bootstrap)), RECORDS)
    print(cpu_ceiling(cost, plain, aim=0.5, baseline_name="plain topic"))
