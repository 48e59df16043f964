"""Which training requests have ended, read back from ``training.completed`` and ``training.failed``.

After a crash or a handover, the requests past a partition's committed offset are read
again; some of them already ended (their outcome was published, the commit was not).
This log tells which, so each request's run happens once. It reads both topics from the
beginning, without a consumer group, and then from where it stopped: one small event
per run, so the read is short.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from flywheel.common.kafka import SeenEvents, client_security
from flywheel.schemas import TRAINING_COMPLETED, TRAINING_FAILED, ModelTrained, TrainingFailed

ENDING_TOPICS = (TRAINING_COMPLETED, TRAINING_FAILED)


def ended_request_ids(outcome: ModelTrained | TrainingFailed) -> list[str]:
    """The requests an outcome ends: its ``request_ids``, or (events from before that field) its cause; an
    online challenger's snapshot ends none.

    >>> from uuid import uuid4
    >>> cause = uuid4()
    >>> ended_request_ids(TrainingFailed(model_name="m", reason="r", causation_id=cause)) == [str(cause)]
    True
    >>> ended_request_ids(TrainingFailed(model_name="m", reason="r", causation_id=cause, request_ids=["a", "b"]))
    ['a', 'b']
    """
    if outcome.request_ids:
        return list(outcome.request_ids)
    if isinstance(outcome, ModelTrained) and outcome.lineage.learning == "online":
        return []  # an online snapshot answers a drift, no training request
    return [str(outcome.causation_id)] if outcome.causation_id else []


class EndedRequests:
    """The ended request ids known so far (bounded), fed by the outcomes this process publishes."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._ids = SeenEvents(capacity)

    def add(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self._ids.first_time(request_id)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    async def catch_up(self) -> int:
        """Read what others ended up to now; the number of outcomes read (none here: memory only)."""
        return 0

    async def close(self) -> None:
        return None


class EndedLog(EndedRequests):
    """``EndedRequests`` that also reads the outcome topics, from the beginning, up to their end."""

    def __init__(self, bootstrap_servers: str, capacity: int = 1_000_000) -> None:
        super().__init__(capacity)
        self.bootstrap_servers = bootstrap_servers
        self._consumer: AIOKafkaConsumer | None = None

    async def _start(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_security(), bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic.name, p)
                for topic in ENDING_TOPICS
                for p in sorted(consumer.partitions_for_topic(topic.name) or ())
            ]
            consumer.assign(partitions)
            if partitions:
                await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def catch_up(self) -> int:
        """Read both topics up to their end offsets of this moment."""
        if self._consumer is None:
            self._consumer = await self._start()
        consumer = self._consumer
        partitions = list(consumer.assignment())
        try:
            read = await self._read(consumer, partitions) if partitions else 0
        except Exception:  # start over from the beginning next time: the set is idempotent
            await self.close()
            raise
        if len({tp.topic for tp in partitions}) < len(ENDING_TOPICS):  # a topic not created yet: all again next time
            await self.close()
        return read

    async def _read(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> int:
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        read = 0
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=1000)
            for tp, messages in batches.items():
                for message in messages:  # past the end too: every outcome read is a fact
                    read += 1
                    self._fold(tp.topic, message.value)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return read

    def _fold(self, topic: str, value: bytes) -> None:
        event_type = ModelTrained if topic == TRAINING_COMPLETED.name else TrainingFailed
        try:
            outcome = event_type.model_validate_json(value)
        except ValidationError:
            return  # not an outcome of ours: it ends nothing
        self.add(ended_request_ids(outcome))

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
