"""Reading a topic's history once, from the beginning up to the end offsets of that moment.

State that lives in memory (the online store, rollouts in progress) is rebuilt from the
topic that is its log. The reader has no consumer group and commits nothing, so it never
moves the offsets of the service's subscribers beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_history(bootstrap_servers: str, topic: str, batch: int = 2000) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` written before the call, partition by partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=batch)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        left.discard(tp)
                        break
                    yield message
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
