"""Reading a topic's history once, from the beginning up to the end offsets of that moment.

State that lives in memory (the online store, rollouts in progress, monitoring's windows) is
rebuilt from the topic that is its log. The reader has no consumer group and commits
nothing, so it never moves the offsets of the service's subscribers beside it. Read up to a
group's committed offsets, it rebuilds exactly what that group's handlers had applied and
acknowledged; the group resumes from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from flywheel.common.kafka import client_security
from flywheel.schemas import Event, Topic

log = structlog.get_logger(__name__)


async def committed_offsets(bootstrap_servers: str, group_id: str, topic: str, wait_s: float = 60.0) -> dict[int, int]:
    """The offsets ``group_id`` has committed on ``topic``, by partition (absent: nothing committed).

    A retriable refusal (a cluster just started has no group coordinator until its offsets topic is
    created) is asked again for up to ``wait_s``: a service starting beside its brokers waits, it does not fail.
    """
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap_servers)
        try:
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(group_id)
        except (KafkaError, TimeoutError) as exc:  # a node not ready yet times out
            if not getattr(exc, "retriable", True) or time.monotonic() >= deadline:
                raise
            log.info("committed offsets not readable yet; asking again", group=group_id, error=repr(exc))
            await asyncio.sleep(1.0)
            continue
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Each partition's end offset of ``topic`` at this moment (the offset its next message will get)."""
    consumer = AIOKafkaConsumer(**client_security(), bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        ends = await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


class Backlog:
    """What a topic held at a moment: a replica that loaded its state from the source of truth after
    that moment has it reflected already, and skips it when its subscriber reads the topic from the start.

    >>> backlog = Backlog({0: 5})
    >>> backlog.reflected(0, 4), backlog.reflected(0, 5), backlog.reflected(1, 0)
    (True, False, False)
    """

    def __init__(self, ends: dict[int, int] | None = None) -> None:
        self.ends = dict(ends or {})

    async def mark(self, bootstrap_servers: str, topic: str) -> None:
        self.ends = await end_offsets(bootstrap_servers, topic)

    def reflected(self, partition: int, offset: int) -> bool:
        return offset < self.ends.get(partition, 0)


async def read_history(
    bootstrap_servers: str,
    topic: str,
    batch: int = 2000,
    *,
    upto: dict[int, int] | None = None,
    last: int | None = None,
    since_ms: int | None = None,
) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` written before the call, partition by partition in offset order.

    ``upto`` stops each partition at that offset instead (a partition it lacks is not read);
    ``last`` reads at most that many records per partition, the newest; ``since_ms`` only those
    whose timestamp (ms since the epoch) is not before it.
    """
    consumer = AIOKafkaConsumer(**client_security(), bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        if not partitions:
            return
        consumer.assign(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        if upto is not None:
            ends = {tp: min(end, upto.get(tp.partition, 0)) for tp, end in ends.items()}
        starts = {tp: max(beginnings[tp], ends[tp] - last) if last is not None else beginnings[tp] for tp in partitions}
        if since_ms is not None:
            found_at = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            starts = {tp: max(start, found_at[tp].offset if found_at[tp] else ends[tp]) for tp, start in starts.items()}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        left = {tp for tp in partitions if ends[tp] > starts[tp]}
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


async def read_events(
    bootstrap_servers: str, topic: Topic, **kwargs: int | dict[int, int] | None
) -> AsyncIterator[Event]:
    """``read_history`` of a catalogue topic as its events; a message that is not one is skipped.

    (Such a message went to the dead letters when the topic's consumers met it.)
    """
    async for message in read_history(bootstrap_servers, topic.name, **kwargs):  # type: ignore[arg-type]
        try:
            yield topic.parse(message.value)
        except ValidationError:
            continue
