"""Training's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from flywheel.common.auth import Credentials
from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import publish_event
from flywheel.common.modelspec import load_model_spec
from flywheel.common.service import create_service_app
from flywheel.schemas import TRAINING_COMPLETED, TRAINING_FAILED, TRAINING_REQUESTED, Event
from flywheel.training.arrivals import Arrivals
from flywheel.training.challenging import FOLLOWED, Challengers, follow
from flywheel.training.coalesce import Coalescer
from flywheel.training.codeversion import code_version
from flywheel.training.ended import EndedLog
from flywheel.training.handlers import scheduled_request
from flywheel.training.http import create_rebuild_router, create_router
from flywheel.training.intake import Intake
from flywheel.training.orchestrator import Orchestrator, fit_pool
from flywheel.training.runner import RunContext
from flywheel.training.runs import RunBook
from flywheel.training.settings import TrainingSettings
from flywheel.training.subscribers import register_challenger, register_subscribers


def create_app(settings: TrainingSettings | None = None) -> FastAPI:
    settings = settings or TrainingSettings()
    credentials = Credentials.of(settings.auth)  # before anything connects: bad credentials, no start
    parts = Components.connect("training", settings)
    log = structlog.get_logger("training")
    arrivals = Arrivals()
    ctx = RunContext(
        catalog=DatasetCatalog(parts.store),
        labels=DatasetCatalog.labels(parts.store),
        arrivals=arrivals,
        mlflow=parts.mlflow,
        datasets_dir=settings.datasets_dir,
        code_version=code_version(),
        experiment_prefix=settings.experiment_prefix,
        importance_repeats=settings.importance_repeats,
        fit_threads=settings.fit_threads,
        drift_fresh_rows=settings.drift_fresh_rows,
        drift_fresh_timeout_s=settings.drift_fresh_timeout_s,
    )
    runs = RunBook(settings.max_runs_kept)
    # Fits run in threads: a long fit never blocks the loop that heartbeats the consumers.
    pool = fit_pool(settings.workers, settings.fit_niceness)

    async def publish(event: Event) -> None:
        await publish_event(parts.broker, event)

    ended = EndedLog(settings.kafka.bootstrap_servers)
    orchestrator = Orchestrator(ctx, pool, publish, attempts=settings.run_attempts, backoff_s=settings.retry_backoff_s)
    coalescer = Coalescer(settings.debounce_s, orchestrator, runs.add)
    intake = Intake(coalescer, ended, handover_timeout_s=settings.handover_timeout_s)
    orchestrator.claims = intake  # the intake took the requests; only it may settle them
    contracts = load_contracts(settings.datasets_dir)
    register_subscribers(parts.broker, intake, settings.consumer_group, arrivals, set(contracts))

    challengers = Challengers(ctx, publish)
    register_challenger(parts.broker, challengers, settings.consumer_group, contracts)

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
        following = asyncio.create_task(follow(settings.kafka.bootstrap_servers, challengers))
        try:
            yield
        finally:
            for running in (task, following):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            await intake.close(settings.shutdown_grace_s)
            await ended.close()
            pool.shutdown(wait=False, cancel_futures=True)

    app = create_service_app(
        name="training",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[
            create_router(parts.broker, runs, settings.datasets_dir, credentials),
            create_rebuild_router(parts.broker, parts.mlflow, settings.datasets_dir, ctx.code_version, credentials),
        ],
        lifespans=[lifecycle],
        description="Trains models on dataset versions, reproducibly, tracked in MLflow.",
        publishes=[TRAINING_REQUESTED, TRAINING_COMPLETED, TRAINING_FAILED],
        reads={
            **FOLLOWED,
            TRAINING_COMPLETED: "Which requests have ended, read back after a restart or a handover; the drift's "
            "batch retrain ends the online challenger's episode.",
            TRAINING_FAILED: "Which requests have ended, read back after a restart or a handover.",
        },
    )
    app.state.runs = runs
    app.state.coalescer = coalescer
    app.state.intake = intake
    return app
