"""One coalesced run from start to end: fresh data, the fit (with retries), the outcome, the settlement.

Every run ends in exactly one published outcome that names the requests it ends:
``training.completed``, or ``training.failed`` with the reason, whatever was raised.
A failure a retry may cure (the object store or MLflow away) is retried ``attempts``
times with backoff; a permanent one (bad data, spec or params) fails at once. Publishing
is retried until it succeeds or the requests are no longer this replica's; only then are
the requests settled (their offsets committed).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Protocol

import structlog

from flywheel.schemas import Event, ModelTrained, TrainingFailed, TrainModel
from flywheel.schemas.envelope import utc_now
from flywheel.training import metrics
from flywheel.training.runner import RunContext, failure, fresh_data, log_progress, reason_of, train
from flywheel.training.runs import RunRecord

log = structlog.get_logger("training")

Outcome = ModelTrained | TrainingFailed
Publish = Callable[[Event], Awaitable[None]]
Train = Callable[..., Outcome]


def fit_pool(workers: int, niceness: int) -> ThreadPoolExecutor:
    """The threads runs fit in, each ``niceness`` below the service's CPU priority.

    On a host it shares with serving (compose, one machine), a retrain then yields the cores to
    requests instead of splitting them: a fit takes what the services leave. Linux keeps a nice
    value per thread, so the service's own loop (heartbeats, HTTP) keeps its priority.
    """
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="train", initializer=_lower_priority, initargs=(niceness,)
    )


def _lower_priority(niceness: int) -> None:
    if not niceness:
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except (AttributeError, OSError) as exc:  # not Linux: fits run at the service's priority
        log.warning("training threads keep the service's CPU priority", error=repr(exc))


class Claims(Protocol):
    """Who may end requests: the intake that took them. ``epoch`` moves on at every handover."""

    epoch: int

    def holds(self, requests: list[TrainModel], epoch: int) -> bool: ...

    async def settle(self, requests: list[TrainModel]) -> None: ...


class Unclaimed:
    """Claims of a run started outside any consumer group (tests, tools): always ours, nothing to commit."""

    epoch = 0

    def holds(self, requests: list[TrainModel], epoch: int) -> bool:
        return True

    async def settle(self, requests: list[TrainModel]) -> None:
        return None


class Orchestrator:
    """The coalescer's ``execute``: runs one burst of requests to its one outcome."""

    def __init__(
        self,
        ctx: RunContext,
        pool: Executor,
        publish: Publish,
        claims: Claims | None = None,
        *,
        attempts: int = 3,
        backoff_s: float = 2.0,
        max_backoff_s: float = 30.0,
        train: Train = train,
    ) -> None:
        self.ctx, self.pool, self.publish = ctx, pool, publish
        self.claims: Claims = claims if claims is not None else Unclaimed()
        self.attempts, self.backoff_s, self.max_backoff_s = attempts, backoff_s, max_backoff_s
        self.train = train

    async def __call__(self, record: RunRecord, requests: list[TrainModel]) -> None:
        request = requests[-1]  # the newest request speaks for the burst
        epoch = self.claims.epoch  # a handover after this makes the run's outcome someone else's
        context = {"model_name": request.model_name, "run": record.id, "correlation_id": str(request.correlation_id)}
        record.dataset_version = request.dataset_version

        def update(stage: str, fraction: float) -> None:
            record.stage, record.progress = stage, fraction

        progress = log_progress(update, **context)
        log.info("training started", merged=len(requests), trigger=request.trigger, **context)
        try:
            # Still "queued" while it waits for data: a handover may cancel it, nothing is done yet.
            fresh = await fresh_data(self.ctx, request, progress)
            outcome = await self._fit(record, request, requests, progress, fresh)
        except Exception as exc:  # whatever it was, the requests end, with the reason
            log.exception("training run crashed", error=repr(exc), **context)
            outcome = failure(request, requests, reason_of(exc))
        self._record(record, outcome, context)
        await self._deliver(record, requests, outcome, epoch, context)

    async def _fit(
        self,
        record: RunRecord,
        request: TrainModel,
        requests: list[TrainModel],
        progress: Callable[[str, float], None],
        fresh: object,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        record.status, record.started_at = "running", utc_now()
        for attempt in range(1, self.attempts + 1):
            metrics.RUNNING.inc()
            try:
                with metrics.DURATION.labels(request.model_name).time():
                    return await loop.run_in_executor(
                        self.pool, self.train, self.ctx, request, requests, record.id, progress, fresh
                    )
            except Exception as exc:
                if attempt == self.attempts:
                    return failure(request, requests, f"{reason_of(exc)} (after {attempt} attempts)")
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "training attempt failed; retrying",
                    model_name=request.model_name,
                    run=record.id,
                    attempt=attempt,
                    error=repr(exc),
                    retry_in_s=delay,
                )
                record.stage = f"attempt {attempt} failed ({type(exc).__name__}); retrying"
                await asyncio.sleep(delay)
            finally:
                metrics.RUNNING.dec()
        raise AssertionError("unreachable")

    def _record(self, record: RunRecord, outcome: Outcome, context: dict[str, str]) -> None:
        record.finished_at = utc_now()
        if isinstance(outcome, ModelTrained):
            stage = "completed: answered by an identical earlier run" if outcome.repeat else "completed"
            record.status, record.stage, record.progress = "completed", stage, 1.0
            record.mlflow_run_id, record.model_uri = outcome.run_id, outcome.model_uri
            record.metrics, record.dataset_version = outcome.metrics, outcome.lineage.dataset_version
            log.info(
                "training completed",
                mlflow_run=outcome.run_id,
                repeat=outcome.repeat,
                metrics=outcome.metrics,
                **context,
            )
        else:
            record.status, record.stage, record.reason = "failed", "failed", outcome.reason
            record.dataset_version, record.mlflow_run_id = outcome.dataset_version, outcome.run_id
            log.warning("training failed", reason=outcome.reason, **context)

    async def _deliver(
        self, record: RunRecord, requests: list[TrainModel], outcome: Outcome, epoch: int, context: dict[str, str]
    ) -> None:
        """Publish the outcome, then settle its requests; drop it if they were handed over meanwhile."""
        attempt = 0
        while True:
            if not self.claims.holds(requests, epoch):
                await self._abandon(record, outcome, context)
                return
            try:
                await self.publish(outcome)
                break
            except Exception as exc:
                attempt += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(attempt - 1, 10))
                log.warning("publishing the training outcome failed; retrying", error=repr(exc), **context)
                await asyncio.sleep(delay)
        metrics.RUNS.labels(requests[-1].model_name, record.status).inc()
        metrics.MERGED.labels(requests[-1].model_name).inc(len(requests) - 1)
        await self.claims.settle(requests)

    async def _abandon(self, record: RunRecord, outcome: Outcome, context: dict[str, str]) -> None:
        """The requests went to another replica, which runs them again: this outcome is not published."""
        record.status, record.stage = "released", "abandoned: handed over while running"
        log.warning("training outcome dropped: its requests were handed over", **context)
        if outcome.run_id is not None:
            try:
                await asyncio.to_thread(self.ctx.mlflow.set_terminated, outcome.run_id, "KILLED")
            except Exception as exc:
                log.warning("could not mark the abandoned MLflow run", mlflow_run=outcome.run_id, error=repr(exc))
