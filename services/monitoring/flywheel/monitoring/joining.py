"""What the join holds, rebuilt from Kafka whenever a replica is given partitions.

Monitoring's one consumer of ``predictions`` and ``labels`` (``subscribers.py``) joins them; what it holds
lives in memory. When the group gives a replica partitions (at start, after a crash, in a rebalance):

- of a ``predictions`` partition, the answers up to the offset the group committed are remembered again:
  the newest ``last`` of them, or only those after what this replica read of it itself (a rebalance that
  gives a replica back a partition it held costs nothing);
- of a ``labels`` partition, the labels that may still wait for their answer are parked again: those of
  the last ``wait_s`` before the committed offset whose join is not on ``predictions.labelled``. A label is
  committed when it is parked, so without this a crash would lose it. One whose answer the rebuild found
  is joined at once (``owed``: published when the rebuild ends, and before each message).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from flywheel.common.contracts import DataContract
from flywheel.common.history import committed_offsets, read_events, read_history
from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.validation import refusal
from flywheel.schemas import (
    LABELS,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    Event,
    LabelObserved,
    PredictionLabelled,
    PredictionMade,
)

log = structlog.get_logger(__name__)


class Remembering(ConsumerRebalanceListener):
    """Rebuilds the join's answers and waiting labels of the partitions a replica is given."""

    def __init__(
        self,
        join: LabelJoin,
        bootstrap_servers: str,
        group_id: str,
        last: int,
        contracts: dict[str, DataContract],
        publish: Callable[[Event], Awaitable[None]],
    ) -> None:
        self.join, self.bootstrap_servers, self.group_id = join, bootstrap_servers, group_id
        self.last, self.contracts, self.publish = last, contracts, publish
        self.owed: list[PredictionLabelled] = []  # joins the rebuild made, not yet published
        self.read_upto: dict[tuple[str, int], int] = {}  # (topic, partition) -> the offset after the last one read
        self.rebuilt = 0
        self.reparked = 0

    def remembered(self, topic: str, partition: int, offset: int) -> None:
        """The consumer handled the message at ``offset``: a later rebuild of the partition starts after it."""
        key = (topic, partition)
        self.read_upto[key] = max(self.read_upto.get(key, 0), offset + 1)

    async def pay(self) -> None:
        """Publish the joins the rebuild made (at its end, and before each message: a failed publish is retried)."""
        while self.owed:
            await self.publish(self.owed[0])
            self.owed.pop(0)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # what it holds of them ages out (the join's capacity and wait)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # what this replica had read of each before now: the consumer goes on reading while the rebuild runs
        known, started, before = dict(self.read_upto), time.monotonic(), (self.rebuilt, self.reparked)
        answers = await self._given(assigned, PREDICTIONS.name, known)
        labels = await self._given(assigned, LABELS.name, known)
        for partition, (start, upto) in answers.items():
            if upto > start:
                await self._remember(partition, upto, upto - start)
        if labels:
            await self._repark(labels)
        try:
            await self.pay()  # not only with the next message: none may come for a while
        except Exception as exc:  # the broker away for a moment: the next message publishes them
            log.warning("joins of the rebuild not yet published", owed=len(self.owed), error=repr(exc))
        if answers or labels:
            log.info(
                "join rebuilt",
                answers_read=answers,
                labels_read=labels,
                answers=self.rebuilt - before[0],
                labels_parked_again=self.reparked - before[1],
                waiting=self.join.waiting,
                seconds=round(time.monotonic() - started, 3),
            )

    async def _given(
        self, assigned: list[TopicPartition], topic: str, known: dict[tuple[str, int], int]
    ) -> dict[int, tuple[int, int]]:
        """Of the ``topic`` partitions given, the range to read again: up to the group's committed offset,
        at most ``last`` and not what this replica read itself."""
        given = sorted(tp.partition for tp in assigned if tp.topic == topic)
        if not given:
            return {}
        committed = await committed_offsets(self.bootstrap_servers, self.group_id, topic)
        ranges = {}
        for partition in given:
            upto = committed.get(partition, 0)
            ranges[partition] = (max(0, upto - self.last, known.get((topic, partition), 0)), upto)
        return {p: (start, upto) for p, (start, upto) in ranges.items() if upto > start}

    async def _remember(self, partition: int, upto: int, last: int) -> None:
        events = read_events(self.bootstrap_servers, PREDICTIONS, upto={partition: upto}, last=last)
        async for prediction in events:
            if isinstance(prediction, PredictionMade) and refusal(prediction, self.contracts) is None:
                self.owed.extend(self.join.remember(prediction))
                self.rebuilt += 1
        self.remembered(PREDICTIONS.name, partition, upto - 1)

    async def _repark(self, ranges: dict[int, tuple[int, int]]) -> None:
        """Park again the labels of the last ``wait_s`` before each range's end that no join names."""
        recent: list[LabelObserved] = []
        oldest_ms: int | None = None
        for partition, (start, upto) in ranges.items():
            tail = read_history(self.bootstrap_servers, LABELS.name, upto={partition: upto}, last=1)
            newest = [message.timestamp async for message in tail]
            if not newest:
                continue
            since_ms = newest[0] - int(self.join.wait_s * 1000)
            window = read_history(
                self.bootstrap_servers, LABELS.name, upto={partition: upto}, last=upto - start, since_ms=since_ms
            )
            async for message in window:
                try:
                    label = LABELS.parse(message.value)
                except ValueError:
                    continue  # dead-lettered when it was first read
                if isinstance(label, LabelObserved) and refusal(label, self.contracts) is None:
                    recent.append(label)
                    oldest_ms = min(oldest_ms or message.timestamp, message.timestamp)
            self.remembered(LABELS.name, partition, upto - 1)
        if oldest_ms is None:
            return
        joined = {  # a join is published after its label was read (a minute's slack for clocks that differ)
            event.label_event_id
            async for event in read_events(self.bootstrap_servers, PREDICTIONS_LABELLED, since_ms=oldest_ms - 60_000)
            if isinstance(event, PredictionLabelled)
        }
        for label in recent:
            if label.event_id in joined:
                continue
            self.reparked += 1
            if (made := self.join.join(label)) is not None:
                self.owed.append(made)
