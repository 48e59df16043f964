"""The CLI's Kafka edge: send events durably, read a topic without a consumer group, count messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from flywheel.common.kafka import client_security
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import Event, Topic

CLIENT_ID = "flywheel-cli"
# Fail fast when the cluster is not there: an operator is waiting at a terminal.
TIMEOUTS: dict[str, Any] = {"request_timeout_ms": 10_000, "connections_max_idle_ms": 60_000}


@dataclass(frozen=True)
class Sent:
    """Where one event landed."""

    event: Event
    partition: int
    offset: int


@dataclass(frozen=True)
class Message:
    """One consumed message, decoded when it is JSON."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    body: Any
    raw: bytes

    @property
    def is_json(self) -> bool:
        return isinstance(self.body, dict)


async def started(client: Any) -> None:
    """Start a client; if the cluster is unreachable, close it before reporting so (no leaked sockets)."""
    try:
        await client.start()
    except BaseException:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise


def headers_of(event: Event) -> list[tuple[str, bytes]]:
    """The same headers every Flywheel service puts on an event."""
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", event.schema_version.encode()),
        ("correlation_id", str(event.correlation_id).encode()),
        ("content-type", b"application/json"),
    ]


async def send(
    settings: KafkaSettings,
    topic: Topic,
    events: Sequence[Event],
    on_sent: Callable[[Sent], None] = lambda _: None,
    window: int = 500,
) -> list[Sent]:
    """Send events keyed as the catalogue says, acks=all with idempotence, ``window`` in flight."""
    producer = AIOKafkaProducer(
        **client_security(),
        bootstrap_servers=settings.bootstrap_servers,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **TIMEOUTS,
    )
    await started(producer)
    sent: list[Sent] = []
    try:
        for start in range(0, len(events), window):
            chunk = events[start : start + window]
            futures = [
                await producer.send(topic.name, e.to_bytes(), key=topic.key_of(e), headers=headers_of(e)) for e in chunk
            ]
            for event, future in zip(chunk, futures, strict=True):
                meta = await future
                done = Sent(event, meta.partition, meta.offset)
                sent.append(done)
                on_sent(done)
    finally:
        await producer.stop()
    return sent


def decode(record: ConsumerRecord) -> Message:
    raw = record.value or b""
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = raw.decode(errors="replace")
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    return Message(record.topic, record.partition, record.offset, record.timestamp, key, body, raw)


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> dict[str, list[TopicPartition]]:
    # A group-less consumer only knows the metadata of assigned topics: ask the cluster for all.
    metadata = await consumer._client.fetch_all_metadata()
    return {
        name: [TopicPartition(name, p) for p in sorted(metadata.partitions_for_topic(name) or [])]
        for name in topics
        if metadata.partitions_for_topic(name)
    }


async def tail(
    settings: KafkaSettings,
    topic: str,
    handle: Callable[[Message], Awaitable[bool] | bool],
    *,
    from_beginning: bool = False,
    last: int = 10,
    follow: bool = False,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Read a topic with no consumer group: its last ``last`` messages per partition (or all of it),
    then, with ``follow``, whatever arrives. ``handle`` returns False to stop."""
    consumer = AIOKafkaConsumer(
        **client_security(),
        bootstrap_servers=settings.bootstrap_servers,
        client_id=CLIENT_ID,
        enable_auto_commit=False,
        **TIMEOUTS,
    )
    await started(consumer)
    try:
        assignment = (await _partitions(consumer, [topic])).get(topic)
        if not assignment:
            raise LookupError(f"topic {topic} does not exist in Kafka yet (nothing was ever published to it)")
        consumer.assign(assignment)
        begins = await consumer.beginning_offsets(assignment)
        ends = await consumer.end_offsets(assignment)
        for tp in assignment:
            start = begins[tp] if from_beginning else max(begins[tp], ends[tp] - last)
            consumer.seek(tp, start)
        on_ready()
        pending = {tp for tp in assignment if consumer_position_before(begins, ends, tp, from_beginning, last)}
        if not follow:
            # Without --follow the tail is a snapshot: what each partition held at start-up, nothing newer.
            consumer.pause(*(tp for tp in assignment if tp not in pending))
        while follow or pending:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for record in records:
                    if not follow and record.offset >= ends[tp]:
                        break
                    result = handle(decode(record))
                    if asyncio.iscoroutine(result):
                        result = await result
                    if result is False:
                        return
                if not follow and tp in pending and (not records or records[-1].offset + 1 >= ends[tp]):
                    pending.discard(tp)
                    consumer.pause(tp)
            if not follow:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                        consumer.pause(tp)
    finally:
        await consumer.stop()


def consumer_position_before(
    begins: dict[TopicPartition, int], ends: dict[TopicPartition, int], tp: TopicPartition, from_start: bool, last: int
) -> bool:
    """Whether a partition has messages to read before its end offset at start-up."""
    start = begins[tp] if from_start else max(begins[tp], ends[tp] - last)
    return start < ends[tp]


@dataclass(frozen=True)
class TopicStats:
    """A topic's partitions and how many messages it holds now (end minus beginning offsets)."""

    name: str
    partitions: int
    messages: int


async def topic_stats(settings: KafkaSettings, names: Sequence[str]) -> dict[str, TopicStats]:
    """Partitions and message counts of the named topics that exist."""
    consumer = AIOKafkaConsumer(
        **client_security(), bootstrap_servers=settings.bootstrap_servers, client_id=CLIENT_ID, **TIMEOUTS
    )
    await started(consumer)
    try:
        stats: dict[str, TopicStats] = {}
        for name, assignment in (await _partitions(consumer, names)).items():
            begins = await consumer.beginning_offsets(assignment)
            ends = await consumer.end_offsets(assignment)
            count = sum(ends[tp] - begins[tp] for tp in assignment)
            stats[name] = TopicStats(name, len(assignment), count)
        return stats
    finally:
        await consumer.stop()


async def cluster(settings: KafkaSettings) -> dict[str, Any]:
    """The cluster's id and brokers (Kafka's protocol does not tell a client the server's version)."""
    admin = AIOKafkaAdminClient(
        **client_security(), bootstrap_servers=settings.bootstrap_servers, client_id=CLIENT_ID, **TIMEOUTS
    )
    await started(admin)
    try:
        described = await admin.describe_cluster()
        return {"cluster_id": described.get("cluster_id"), "brokers": len(described.get("brokers", []))}
    finally:
        await admin.close()
