"""Coalescing training requests: a burst becomes one run, and one model never trains twice at once.

Per model, the first request opens a window of ``debounce_s``; every request in it
joins the same pending run. When the window closes the run waits for that model's
in-flight run (if any) to finish, then starts with all its requests merged. A
request arriving while a run is in flight opens the next window: at most one run
queued behind the one running, whatever the rate of requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from flywheel.schemas import TrainModel
from flywheel.training.runs import RunRecord

log = structlog.get_logger(__name__)

Execute = Callable[[RunRecord, list[TrainModel]], Awaitable[None]]


@dataclass
class _Pending:
    record: RunRecord
    requests: list[TrainModel] = field(default_factory=list)


class Coalescer:
    """Debounces requests per model and runs at most one training per model at a time."""

    def __init__(self, debounce_s: float, execute: Execute, on_queued: Callable[[RunRecord], None]) -> None:
        self.debounce_s = debounce_s
        self._execute = execute
        self._on_queued = on_queued
        self._pending: dict[str, _Pending] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, request: TrainModel) -> RunRecord:
        """Join the model's pending run, or open a new one; returns the run the request joined."""
        pending = self._pending.get(request.model_name)
        if pending is not None:
            pending.requests.append(request)
            pending.record.request_ids.append(str(request.event_id))
            log.info(
                "training request merged",
                model_name=request.model_name,
                run=pending.record.id,
                merged=len(pending.requests),
                correlation_id=str(request.correlation_id),
            )
            return pending.record
        record = RunRecord(
            model_name=request.model_name,
            dataset=request.dataset,
            trigger=request.trigger,
            request_ids=[str(request.event_id)],
        )
        self._pending[request.model_name] = _Pending(record, [request])
        self._on_queued(record)
        task = asyncio.create_task(self._fire(request.model_name, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "training request queued",
            model_name=request.model_name,
            run=record.id,
            debounce_s=self.debounce_s,
            correlation_id=str(request.correlation_id),
        )
        return record

    async def _fire(self, model_name: str, record: RunRecord) -> None:
        await asyncio.sleep(self.debounce_s)
        lock = self._locks.setdefault(model_name, asyncio.Lock())
        async with lock:
            pending = self._pending.pop(model_name)
            assert pending.record is record
            try:
                await self._execute(record, pending.requests)
            except Exception as exc:  # a failed run must not wedge the model's queue
                log.exception("training run crashed", model_name=model_name, run=record.id, error=repr(exc))

    def busy(self, model_name: str) -> bool:
        lock = self._locks.get(model_name)
        return model_name in self._pending or bool(lock and lock.locked())

    async def drain(self) -> None:
        """Cancel queued runs (shutdown); a run in a worker thread finishes on its own."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
