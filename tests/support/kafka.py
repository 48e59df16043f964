"""Plain aiokafka clients for tests: what any user's Kafka client would do."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from flywheel.common.kafka import (
    client_security,
    ensure_topics,  # noqa: F401  (the catalogue's topics, for the fixtures)
)
from flywheel.schemas import Event, topic_for


class TopicReader:
    """Reads a topic from its current end, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(**client_security(), bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: list[dict[str, Any]] = []
        self.unparseable = 0  # messages that are no JSON object (a test may have poisoned the topic)

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic)
        assignment = [TopicPartition(self.topic, p) for p in sorted(partitions or [])]
        self.consumer.assign(assignment)
        await self.consumer.seek_to_end(*assignment)
        for tp in assignment:  # resolve the end offsets now, before anything new is published
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def collect(
        self,
        until: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> list[dict[str, Any]]:
        """Read until ``until(matching messages)`` holds; fail with what was seen on timeout."""
        deadline = time.monotonic() + timeout
        while not until(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.topic}: condition not met in {timeout}s; saw {len(self.seen)}")
            batches = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    try:
                        body = json.loads(record.value)
                    except ValueError:
                        body = None
                    if not isinstance(body, dict):  # every event is a JSON object
                        self.unparseable += 1
                        continue
                    if where(body):
                        self.seen.append(body)
        return self.seen


async def producer(bootstrap: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(**client_security(), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    return p


async def send_event(p: AIOKafkaProducer, event: Event) -> None:
    topic = topic_for(event)
    await p.send_and_wait(topic.name, event.to_bytes(), key=topic.key_of(event))
