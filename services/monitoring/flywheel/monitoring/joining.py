"""What the join remembers, rebuilt from ``predictions`` whenever a replica is given partitions.

Monitoring's one consumer of ``predictions`` and ``labels`` (``subscribers.py``) joins them; its
remembered answers live in memory. When the group gives a replica partitions (at start, after a crash,
in a rebalance), the newest ``last`` answers of each given ``predictions`` partition up to the offsets
the group committed — those the consumer had remembered before — are remembered again. A label that came
before its answer and waits for it is lost with the process (it was committed when it was parked).
"""

from __future__ import annotations

from aiokafka import ConsumerRebalanceListener, TopicPartition

from flywheel.common.contracts import DataContract
from flywheel.common.history import committed_offsets, read_events
from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.validation import refusal
from flywheel.schemas import PREDICTIONS, PredictionLabelled, PredictionMade


class Remembering(ConsumerRebalanceListener):
    """Rebuilds the join's answers of the ``predictions`` partitions a replica is given."""

    def __init__(
        self, join: LabelJoin, bootstrap_servers: str, group_id: str, last: int, contracts: dict[str, DataContract]
    ) -> None:
        self.join, self.bootstrap_servers, self.group_id = join, bootstrap_servers, group_id
        self.last, self.contracts = last, contracts
        self.owed: list[PredictionLabelled] = []  # labels that waited for an answer the rebuild found
        self.rebuilt = 0

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # what it remembers of them ages out (the join's capacity)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        given = {tp.partition for tp in assigned if tp.topic == PREDICTIONS.name}
        if not given:
            return
        committed = await committed_offsets(self.bootstrap_servers, self.group_id, PREDICTIONS.name)
        upto = {p: committed.get(p, 0) for p in given}
        async for prediction in read_events(self.bootstrap_servers, PREDICTIONS, upto=upto, last=self.last):
            if isinstance(prediction, PredictionMade) and refusal(prediction, self.contracts) is None:
                self.owed.extend(self.join.remember(prediction))
                self.rebuilt += 1
