"""Which serving replica runs a model's rollout: the one its group gives the model's partition of
``models.approved``.

An approval is read by one replica of the group, which starts the rollout; the partition the model's
key hashes to says which replica that is, so the same replica owns the model's later rollouts while
it holds the partition. When the group hands the partition to another replica (the owner crashed or
stopped, or a replica joined), the new owner resumes the rollouts the ``models.rollout`` log says are
running, from their last event (``rollouts.py``) and the labels joined since (``catchup.py``); a
former owner that is still alive stops deciding them and follows them like any other replica
(``elsewhere.py``). A replica restarted alone thus does not take over a rollout its peer runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import murmur2

from flywheel.common.history import end_offsets

log = structlog.get_logger(__name__)

Owns = Callable[[str], bool]


def partition_of(key: str, partitions: int) -> int:
    """The partition a producer's default partitioner gives ``key`` (murmur2, as Kafka's Java client).

    >>> partition_of("loans-approval", 1)
    0
    >>> len({partition_of(f"model-{i}", 6) for i in range(60)})
    6
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class RolloutOwnership(ConsumerRebalanceListener):
    """The listener of the subscriber of ``models.approved``: on each assignment, ``take`` is given which
    models this replica owns now (it resumes their running rollouts and lets the others go)."""

    def __init__(self, bootstrap_servers: str, topic: str, take: Callable[[Owns], Awaitable[None]]) -> None:
        self.bootstrap_servers, self.topic, self.take = bootstrap_servers, topic, take
        self.owned: frozenset[int] = frozenset()
        self.partitions = 0

    def owns(self, model_name: str) -> bool:
        return self.partitions > 0 and partition_of(model_name, self.partitions) in self.owned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None  # the rollouts run on until the next assignment says which stay here

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for attempt in range(1, 4):
            try:
                # counted again each time: partitions added to the topic move models
                self.partitions = len(await end_offsets(self.bootstrap_servers, self.topic))
                if not self.partitions:
                    raise LookupError(f"{self.topic} has no partitions yet")
                self.owned = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
                log.info("rollouts owned", topic=self.topic, partitions=sorted(self.owned), of=self.partitions)
                await self.take(self.owns)
                return
            except Exception as exc:  # the broker or MLflow away for a moment
                log.warning("rollouts not taken over yet", attempt=attempt, error=repr(exc))
                await asyncio.sleep(2.0 * attempt)
        log.error("rollouts not taken over; they resume at the next assignment", topic=self.topic)
