"""The prediction log: every answer reaches ``predictions``, none is silently dropped.

Answers wait in a bounded queue that a background task publishes in batches, so the
log is off the request's critical path. When the queue is full the request waits for
room (back-pressure) up to ``wait_s``; only what still finds no room is dropped, and
then it is counted (``flywheel_serving_prediction_log_dropped_total``) and raised on
``alerts``. A batch whose publication fails is retried with backoff before it counts
as dropped. A batch is published with one wait for all its acks (``publish_many``); only what was not
written is tried again (from the first such answer on, so an entity's answers keep their order).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from flywheel.common.kafka import PublishFailed
from flywheel.schemas import AlertRaised, Event, PredictionMade
from flywheel.serving.metrics import LOG_DROPPED, LOG_QUEUED

log = structlog.get_logger(__name__)
Publish = Callable[[Event], Awaitable[None]]
PublishMany = Callable[[list[Event]], Awaitable[None]]


class PredictionLog:
    def __init__(
        self,
        publish: Publish,
        capacity: int,
        wait_s: float,
        publish_attempts: int = 5,
        alert_every_s: float = 60.0,
        publish_many: PublishMany | None = None,
    ) -> None:
        self._publish = publish
        self._publish_many = publish_many or self._each
        self.queue: asyncio.Queue[PredictionMade] = asyncio.Queue(capacity)
        self.wait_s = wait_s
        self.publish_attempts = publish_attempts
        self.alert_every_s = alert_every_s
        self.dropped = 0
        self._alerted_at: float | None = None
        self._alerts: set[asyncio.Task] = set()

    async def record(self, events: list[PredictionMade]) -> None:
        """Queue answers for the log, waiting for room while the log is behind."""
        deadline = time.monotonic() + self.wait_s
        for index, event in enumerate(events):
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                try:
                    await asyncio.wait_for(self.queue.put(event), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    await self._drop(len(events) - index, "the prediction log is full")
                    return
        LOG_QUEUED.set(self.queue.qsize())

    async def drain(self) -> None:
        """Publish queued answers in batches, forever; failed batches are retried, then counted."""
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 500:
                batch.append(self.queue.get_nowait())
            for attempt in range(1, self.publish_attempts + 1):
                try:
                    await self._publish_many(batch)
                except Exception as exc:
                    batch = _from_first_unwritten(batch, exc)
                    log.warning(
                        "prediction log publish failed; retrying", failed=len(batch), attempt=attempt, error=repr(exc)
                    )
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                else:
                    batch = []
                    break
            if batch:
                await self._drop(len(batch), "publishing to predictions failed")
            LOG_QUEUED.set(self.queue.qsize())

    async def _each(self, events: list[Event]) -> None:
        """Publish one at a time, all at once; once every one has been tried, raise naming those not written."""
        results = await asyncio.gather(*(self._publish(e) for e in events), return_exceptions=True)
        failed = [(e, r) for e, r in zip(events, results, strict=True) if isinstance(r, Exception)]
        if failed:
            raise PublishFailed([e for e, _ in failed], failed[0][1])

    async def _drop(self, n: int, why: str) -> None:
        """Count and log what was dropped; raise the alert in the background, off the request's path."""
        self.dropped += n
        LOG_DROPPED.inc(n)
        log.error("predictions not logged", dropped=n, total=self.dropped, why=why)
        now = time.monotonic()
        if self._alerted_at is not None and now - self._alerted_at < self.alert_every_s:
            return
        self._alerted_at = now
        alert = AlertRaised(
            producer="serving",
            severity="critical",
            kind="prediction_log_dropped",
            message=f"{self.dropped} predictions could not be logged: {why}",
            dedup_key="serving:prediction_log",
            evidence={"dropped_total": self.dropped, "queue_capacity": self.queue.maxsize},
        )
        task = asyncio.get_running_loop().create_task(self._raise(alert))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def _raise(self, alert: AlertRaised) -> None:
        try:
            await self._publish(alert)
        except Exception as exc:  # the counter and the log line still say it
            log.error("alert about dropped predictions not published", error=repr(exc))


def _from_first_unwritten(batch: list[PredictionMade], exc: Exception) -> list[PredictionMade]:
    """What to try again: from the first event not written on (all of it when the failure does not say which).

    Not the unwritten alone: an entity's later answer written before its earlier one would put them out of
    order; what is written again carries the same event id.
    """
    if not isinstance(exc, PublishFailed) or not exc.failed:
        return batch
    unwritten = {id(event) for event in exc.failed}
    first = next((i for i, event in enumerate(batch) if id(event) in unwritten), 0)
    return batch[first:]
