"""Training requests from Kafka to the coalescer, committed only once their run has ended.

Why not commit on receipt: a crash between the commit and the run's end would lose the
request (and monitoring's retrain cooldown would then block a new one). So the offset of
``training.requested`` is committed only up to the oldest request whose run has not
ended (``ledger.Ledger``). After a crash or a handover the requests past that offset are
read again; the ones whose outcome is already on ``training.completed`` or
``training.failed`` (``ended.EndedLog``, caught up before anything is taken) are settled
without a run, the others are coalesced and run again. Each request therefore ends
exactly once.

Replicas share ``training.requested`` by consumer group: a partition (and so a model,
since requests are keyed by model name) belongs to one replica at a time. When partitions
are revoked, queued runs are cancelled (their requests are still open, the next owner
runs them) and runs already fitting get ``handover_timeout_s`` to end and publish; a run
still fitting after that is abandoned (``holds`` turns False, its outcome is dropped), so
two replicas never both publish an outcome for one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from flywheel.schemas import TrainModel
from flywheel.training.coalesce import Coalescer
from flywheel.training.ended import EndedRequests
from flywheel.training.ledger import Ledger

log = structlog.get_logger(__name__)

Commit = Callable[[dict[int, int]], Awaitable[None]]


async def _no_commit(points: dict[int, int]) -> None:
    return None


class Intake:
    """Owns the requests of the partitions assigned to this replica, from receipt to commit."""

    def __init__(
        self,
        coalescer: Coalescer,
        ended: EndedRequests,
        *,
        handover_timeout_s: float = 240.0,
        catch_up_backoff_s: float = 1.0,
    ) -> None:
        self.coalescer, self.ended = coalescer, ended
        self.handover_timeout_s, self.catch_up_backoff_s = handover_timeout_s, catch_up_backoff_s
        self.ledger = Ledger()
        self.commit: Commit = _no_commit
        self.owned: set[int] = set()
        self.epoch = 0  # bumped when partitions are handed over: runs started before are no longer ours
        self.closing = False
        self._taken: set[str] = set()  # ids of the open requests
        self._models: dict[str, str] = {}  # open request id -> model name
        self._ready = asyncio.Event()
        self._ready.set()

    # --- the consumer group's side ---------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        """Partitions assigned: learn what has ended before any request of theirs is taken."""
        self._ready.clear()
        self.owned |= set(partitions)
        attempt = 0
        while True:
            try:
                read = await self.ended.catch_up()
                break
            except Exception as exc:  # no request is taken until the ended ones are known
                attempt += 1
                log.warning("reading ended training runs failed; retrying", attempt=attempt, error=repr(exc))
                await asyncio.sleep(min(30.0, self.catch_up_backoff_s * 2 ** min(attempt, 5)))
        self._ready.set()
        log.info("training requests assigned", partitions=sorted(partitions), outcomes_read=read)

    async def revoked(self, partitions: set[int], timeout_s: float | None = None) -> None:
        """Partitions revoked: cancel their queued runs, let running ones end, commit, forget them."""
        partitions = set(partitions) & self.owned
        open_ids = self.ledger.open_in(partitions)
        models = {self._models[r] for r in open_ids if r in self._models}
        wait_s = self.handover_timeout_s if timeout_s is None else timeout_s
        abandoned = await self.coalescer.release(models, wait_s) if models else []
        await self.flush()
        self.epoch += 1
        for request_id in open_ids:
            self._taken.discard(request_id)
            self._models.pop(request_id, None)
        self.ledger.drop(partitions)
        self.owned -= partitions
        if partitions:
            log.info(
                "training requests handed over",
                partitions=sorted(partitions),
                still_open=len(open_ids),
                abandoned_runs=[r.id for r in abandoned],
            )

    async def close(self, timeout_s: float) -> None:
        """Shutdown: take nothing more, hand everything over as a revocation would."""
        self.closing = True
        await self.revoked(set(self.owned), timeout_s)

    # --- requests ----------------------------------------------------------------------------------

    async def take(self, request: TrainModel, partition: int, offset: int) -> None:
        """One message of ``training.requested``: settle it (duplicate, already ended) or queue its run."""
        if partition not in self.owned or self.closing:
            return  # fetched before a rebalance, or stopping: whoever owns the partition next reads it again
        await self._ready.wait()
        request_id = str(request.event_id)
        if request_id in self.ended:
            self.ledger.take(partition, offset, None)
            log.info("training request already ended", request=request_id, model_name=request.model_name)
        elif request_id in self._taken:  # a duplicate of an open request: done when that one ends
            self.ledger.take(partition, offset, request_id)
        else:
            self.ledger.take(partition, offset, request_id)
            self._taken.add(request_id)
            self._models[request_id] = request.model_name
            self.coalescer.submit(request)
        await self.flush()

    async def skip(self, partition: int, offset: int) -> None:
        """A message that is no request (it was dead-lettered): nothing runs for it; commit past it in turn."""
        if partition not in self.owned or self.closing:
            return
        await self._ready.wait()
        self.ledger.take(partition, offset, None)
        await self.flush()

    def holds(self, requests: list[TrainModel], epoch: int) -> bool:
        """Whether a run that started in ``epoch`` may still end these requests (no handover since)."""
        return epoch == self.epoch and all(str(r.event_id) in self._taken for r in requests)

    async def settle(self, requests: list[TrainModel]) -> None:
        """Their run ended and its outcome is published: commit past them."""
        ids = [str(r.event_id) for r in requests]
        self.ended.add(ids)
        self.ledger.end(ids)
        for request_id in ids:
            self._taken.discard(request_id)
            self._models.pop(request_id, None)
        await self.flush()

    async def flush(self) -> None:
        """Commit the partitions whose commit point moved; a failed commit is retried at the next one."""
        due = {p: o for p, o in self.ledger.due().items() if p in self.owned}
        if not due:
            return
        try:
            await self.commit(due)
        except Exception as exc:  # redelivery is harmless: ended requests are settled without a run
            log.warning("committing training requests failed; will retry", offsets=due, error=repr(exc))
            return
        self.ledger.committed(due)


class Handover(ConsumerRebalanceListener):
    """The consumer group's rebalance callbacks, for one topic's partitions."""

    def __init__(self, intake: Intake, topic: str) -> None:
        self.intake, self.topic = intake, topic

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.intake.revoked({tp.partition for tp in revoked if tp.topic == self.topic})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.intake.assigned({tp.partition for tp in assigned if tp.topic == self.topic})
