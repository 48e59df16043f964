"""What the join remembers, rebuilt from ``predictions`` whenever a replica is given partitions.

Monitoring's one consumer of ``predictions`` and ``labels`` (``subscribers.py``) joins them; its
remembered answers live in memory. When the group gives a replica a ``predictions`` partition (at start,
after a crash, in a rebalance), the answers of that partition up to the offset the group committed are
remembered again: the newest ``last`` of them, or only those after what this replica read of it itself
(a rebalance that gives a replica back a partition it held costs nothing). A label that came before its
answer and waits for it is lost with the process (it was committed when it was parked).
"""

from __future__ import annotations

import time

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from flywheel.common.contracts import DataContract
from flywheel.common.history import committed_offsets, read_events
from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.validation import refusal
from flywheel.schemas import PREDICTIONS, PredictionLabelled, PredictionMade

log = structlog.get_logger(__name__)


class Remembering(ConsumerRebalanceListener):
    """Rebuilds the join's answers of the ``predictions`` partitions a replica is given."""

    def __init__(
        self, join: LabelJoin, bootstrap_servers: str, group_id: str, last: int, contracts: dict[str, DataContract]
    ) -> None:
        self.join, self.bootstrap_servers, self.group_id = join, bootstrap_servers, group_id
        self.last, self.contracts = last, contracts
        self.owed: list[PredictionLabelled] = []  # labels that waited for an answer the rebuild found
        self.read_upto: dict[int, int] = {}  # partition -> the offset after the last answer remembered
        self.rebuilt = 0

    def remembered(self, partition: int, offset: int) -> None:
        """The consumer remembered the answer at ``offset``: a later rebuild of the partition starts after it."""
        self.read_upto[partition] = max(self.read_upto.get(partition, 0), offset + 1)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # what it remembers of them ages out (the join's capacity)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        given = {tp.partition for tp in assigned if tp.topic == PREDICTIONS.name}
        if not given:
            return
        # what this replica had read of each before now: the consumer goes on reading while the rebuild runs
        known, started, before = dict(self.read_upto), time.monotonic(), self.rebuilt
        committed = await committed_offsets(self.bootstrap_servers, self.group_id, PREDICTIONS.name)
        ranges = {}
        for partition in sorted(given):
            upto = committed.get(partition, 0)
            last = min(self.last, max(0, upto - known.get(partition, 0)))
            ranges[partition] = (upto - last, upto)
            if last:
                await self._read(partition, upto, last)
        log.info(
            "join rebuilt",
            partitions=ranges,
            answers=self.rebuilt - before,
            waiting=self.join.waiting,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _read(self, partition: int, upto: int, last: int) -> None:
        events = read_events(self.bootstrap_servers, PREDICTIONS, upto={partition: upto}, last=last)
        async for prediction in events:
            if isinstance(prediction, PredictionMade) and refusal(prediction, self.contracts) is None:
                self.owed.extend(self.join.remember(prediction))
                self.rebuilt += 1
        self.remembered(partition, upto - 1)
