"""Coalescing training requests: a burst becomes one run, and one model never trains twice at once.

Per model, the first request opens a window of ``debounce_s``; every request in it
joins the same pending run. When the window closes the run waits for that model's
in-flight run (if any) to finish, then starts with all its requests merged. A
request arriving while a run is in flight opens the next window: at most one run
queued behind the one running, whatever the rate of requests.

``release`` hands runs back (the partition went to another replica, or the service
stops): queued runs are cancelled (their requests are still open, whoever owns them next
runs them), runs already fitting are awaited for a while.
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


def burst_of(request: TrainModel) -> str:
    """Which burst a request joins: its model's; a rebuild runs alone, on its own pinned inputs.

    >>> from flywheel.schemas import Rebuild
    >>> pin = Rebuild(model_version="3", run_id="r", model_uri="u", dataset_versions=["a"], spec={}, code_version="c")
    >>> plain = TrainModel(producer="t", model_name="m", dataset="d")
    >>> burst_of(plain), burst_of(plain.model_copy(update={"rebuild": pin})) == f"m#rebuild-{plain.event_id}"
    ('m', True)
    """
    return request.model_name if request.rebuild is None else f"{request.model_name}#rebuild-{request.event_id}"


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
        self._tasks: dict[asyncio.Task[None], RunRecord] = {}

    def submit(self, request: TrainModel) -> RunRecord:
        """Join the model's pending run, or open a new one; returns the run the request joined."""
        burst = burst_of(request)
        pending = self._pending.get(burst)
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
        self._pending[burst] = _Pending(record, [request])
        self._on_queued(record)
        task = asyncio.create_task(self._fire(burst, record))
        self._tasks[task] = record
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        log.info(
            "training request queued",
            model_name=request.model_name,
            run=record.id,
            debounce_s=self.debounce_s,
            correlation_id=str(request.correlation_id),
        )
        return record

    async def _fire(self, burst: str, record: RunRecord) -> None:
        try:
            await asyncio.sleep(self.debounce_s)
            lock = self._locks.setdefault(burst, asyncio.Lock())
            async with lock:
                pending = self._pending.pop(burst)
                assert pending.record is record
                try:
                    await self._execute(record, pending.requests)
                except Exception as exc:  # a failed run must not wedge the model's queue
                    log.exception("training run crashed", model_name=record.model_name, run=record.id, error=repr(exc))
            if burst != record.model_name:  # a rebuild's burst is used once
                self._locks.pop(burst, None)
        except asyncio.CancelledError:
            self._released(record)
            raise

    def _released(self, record: RunRecord) -> None:
        for burst, pending in list(self._pending.items()):
            if pending.record is record:
                del self._pending[burst]
        if record.status == "queued":
            record.status, record.stage = "released", "released: its requests run wherever they are owned next"

    def busy(self, model_name: str) -> bool:
        lock = self._locks.get(model_name)
        return model_name in self._pending or bool(lock and lock.locked())

    async def release(self, models: set[str] | None = None, timeout_s: float = 0.0) -> list[RunRecord]:
        """Cancel the queued runs of these models (None: all); wait up to ``timeout_s`` for running ones.

        Returns the runs still running when the wait ended (their outcome is no longer ours to publish).
        """
        chosen = {t: r for t, r in self._tasks.items() if models is None or r.model_name in models}
        running = [t for t, r in chosen.items() if r.status == "running"]
        queued = [t for t in chosen if t not in running]
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        for task in queued:  # a task cancelled before it ever ran has no chance to say so itself
            self._released(chosen[task])
        if running:
            log.info("waiting for running training runs before handing them over", runs=len(running))
            if timeout_s <= 0:
                return [chosen[t] for t in running]
            _, left = await asyncio.wait(running, timeout=timeout_s)
            return [chosen[t] for t in left]
        return []

    async def drain(self, timeout_s: float = 0.0) -> list[RunRecord]:
        """Shutdown: release every run."""
        return await self.release(None, timeout_s)
