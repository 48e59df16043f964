"""Rebuilding the online store after a restart by replaying ``records.validated``.

The store lives in memory; the topic is its log. On start, a consumer without a group
reads every partition from the beginning up to the end offsets of that moment, folding
records in with the same dedup (by event id) as the subscriber, so a record the
subscriber also sees counts once. Until then ``/health`` reports ``rebuilding``.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from flywheel.common.kafka import SeenEvents
from flywheel.features.store import OnlineStore
from flywheel.schemas import RECORDS_VALIDATED, RecordValidated


async def replay(bootstrap_servers: str, store: OnlineStore, seen: SeenEvents) -> int:
    """Fold the topic's history into the store; the number of records read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(RECORDS_VALIDATED.name) or set()
        partitions = [TopicPartition(RECORDS_VALIDATED.name, p) for p in sorted(found)]
        if not partitions:
            return 0
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        read = 0
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=2000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        left.discard(tp)
                        break
                    read += 1
                    try:
                        record = RecordValidated.model_validate_json(message.value)
                    except ValidationError:
                        continue
                    if seen.first_time(record.event_id):
                        store.apply(record)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return read
    finally:
        await consumer.stop()
