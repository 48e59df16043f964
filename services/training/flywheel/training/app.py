"""Training's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import SeenEvents, publish_event
from flywheel.common.modelspec import load_model_spec
from flywheel.common.service import create_service_app
from flywheel.schemas import ModelTrained, TrainModel
from flywheel.schemas.envelope import utc_now
from flywheel.training import metrics
from flywheel.training.coalesce import Coalescer
from flywheel.training.codeversion import code_version
from flywheel.training.handlers import scheduled_request
from flywheel.training.http import create_router
from flywheel.training.runner import RunContext, fresh_data, log_progress, train
from flywheel.training.runs import RunBook, RunRecord
from flywheel.training.settings import TrainingSettings
from flywheel.training.subscribers import register_subscribers


def create_app(settings: TrainingSettings | None = None) -> FastAPI:
    settings = settings or TrainingSettings()
    parts = Components.connect("training", settings)
    log = structlog.get_logger("training")
    ctx = RunContext(
        catalog=DatasetCatalog(parts.store),
        mlflow=parts.mlflow,
        datasets_dir=settings.datasets_dir,
        code_version=code_version(),
        experiment_prefix=settings.experiment_prefix,
        importance_repeats=settings.importance_repeats,
        drift_fresh_rows=settings.drift_fresh_rows,
        drift_fresh_timeout_s=settings.drift_fresh_timeout_s,
    )
    runs = RunBook(settings.max_runs_kept)
    # Fits run in threads: a long fit never blocks the loop that heartbeats the consumers.
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="train")

    async def execute(record: RunRecord, requests: list[TrainModel]) -> None:
        request = requests[-1]  # the newest request speaks for the burst
        loop = asyncio.get_running_loop()
        record.status, record.started_at, record.dataset_version = "running", utc_now(), request.dataset_version
        metrics.MERGED.labels(request.model_name).inc(len(requests) - 1)

        def update(stage: str, fraction: float) -> None:
            record.stage, record.progress = stage, fraction

        progress = log_progress(
            update, model_name=request.model_name, run=record.id, correlation_id=str(request.correlation_id)
        )
        log.info(
            "training started",
            model_name=request.model_name,
            run=record.id,
            merged=len(requests),
            trigger=request.trigger,
            correlation_id=str(request.correlation_id),
        )
        fresh = await fresh_data(ctx, request, progress)
        metrics.RUNNING.inc()
        try:
            with metrics.DURATION.labels(request.model_name).time():
                outcome = await loop.run_in_executor(pool, train, ctx, request, requests, record.id, progress, fresh)
        finally:
            metrics.RUNNING.dec()
        record.finished_at = utc_now()
        if isinstance(outcome, ModelTrained):
            record.status, record.stage, record.progress = "completed", "completed", 1.0
            record.mlflow_run_id, record.model_uri = outcome.run_id, outcome.model_uri
            record.metrics, record.dataset_version = outcome.metrics, outcome.lineage.dataset_version
            log.info(
                "training completed",
                model_name=request.model_name,
                run=record.id,
                mlflow_run=outcome.run_id,
                metrics=outcome.metrics,
                correlation_id=str(request.correlation_id),
            )
        else:
            record.status, record.stage, record.reason = "failed", "failed", outcome.reason
            record.dataset_version = outcome.dataset_version
            log.warning(
                "training failed",
                model_name=request.model_name,
                run=record.id,
                reason=outcome.reason,
                correlation_id=str(request.correlation_id),
            )
        metrics.RUNS.labels(request.model_name, record.status).inc()
        await publish_event(parts.broker, outcome)

    coalescer = Coalescer(settings.debounce_s, execute, runs.add)
    register_subscribers(parts.broker, coalescer, SeenEvents(), settings.consumer_group)

    async def schedule() -> None:
        while True:
            await asyncio.sleep(settings.schedule_interval_s)
            for dataset in settings.schedule_datasets:
                try:
                    spec = load_model_spec(settings.datasets_dir, dataset)
                except (FileNotFoundError, ValueError) as exc:
                    log.error("scheduled retrain skipped", dataset=dataset, error=str(exc))
                    continue
                await publish_event(parts.broker, scheduled_request(dataset, spec.model_name))

    @asynccontextmanager
    async def lifecycle(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(schedule()) if settings.schedule_interval_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await coalescer.drain()
            pool.shutdown(wait=False, cancel_futures=True)

    app = create_service_app(
        name="training",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[create_router(parts.broker, runs, settings.datasets_dir)],
        lifespans=[lifecycle],
        description="Trains models on dataset versions, reproducibly, tracked in MLflow.",
    )
    app.state.runs = runs
    app.state.coalescer = coalescer
    return app
