"""``publish_events`` hands a real broker its events a partition batch at a time: each lands once, on the
partition aiokafka's ``send`` gives its key, after the events of its key published before it."""

import asyncio
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from flywheel.common.kafka import client_security, create_broker, declare_publishers, publish_events
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import RECORDS_REJECTED, RecordRejected
from tests.unit.test_publish_batches import rejected


async def test_a_batch_lands_once_each_on_its_keys_partition_in_order(kafka: KafkaSettings, topics):
    run = f"it-publish-{uuid.uuid4().hex[:8]}"
    # 40 keys, 15 events each, interleaved; one event far bigger than a batch (16 KiB) in the middle
    events = [rejected(i % 40, i // 40, run=run) for i in range(600)]
    events.insert(300, rejected(7, 999, size=100_000, run=run))
    consumer = AIOKafkaConsumer(**client_security(), bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    broker = create_broker(kafka, service="it-publish")
    declare_publishers(broker, "it-publish", [RECORDS_REJECTED])
    try:
        partitions = sorted(consumer.partitions_for_topic(RECORDS_REJECTED.name) or await _partitions(consumer))
        assignment = [TopicPartition(RECORDS_REJECTED.name, p) for p in partitions]
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        for tp in assignment:
            await consumer.position(tp)
        await broker.start()
        await publish_events(broker, events)
        landed: dict[str, list[tuple[int, int]]] = defaultdict(list)  # record id -> (partition, n) in log order
        async with asyncio.timeout(60):
            while sum(map(len, landed.values())) < len(events):
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    for message in messages:
                        event = RecordRejected.model_validate_json(message.value)
                        if event.record_id.startswith(f"{run}-"):
                            landed[event.record_id].append((tp.partition, event.data["n"]))
    finally:
        await broker.stop()
        await consumer.stop()
    partitioner = DefaultPartitioner()
    for record_id, seen in landed.items():
        sent = [e.data["n"] for e in events if e.record_id == record_id]
        assert [n for _, n in seen] == sent, record_id  # each once, in the order published
        key = RECORDS_REJECTED.key_of(events[[e.record_id for e in events].index(record_id)])
        assert {p for p, _ in seen} == {partitioner(key, partitions, partitions)}, record_id
    assert len(landed) == 40


async def _partitions(consumer: AIOKafkaConsumer) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(RECORDS_REJECTED.name) or set()
