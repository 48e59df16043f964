"""Ingestion's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from flywheel.common.auth import Credentials
from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import InvalidMessage, SeenEvents, publish_dead_letter, publish_event
from flywheel.common.service import create_service_app
from flywheel.ingestion.datasets_http import create_dataset_router
from flywheel.ingestion.http import create_router
from flywheel.ingestion.roller import Roller
from flywheel.ingestion.settings import IngestionSettings
from flywheel.ingestion.sources import LABELS_SOURCE
from flywheel.ingestion.subscribers import register_subscribers
from flywheel.schemas import DATASETS_VERSIONED, LABELS, RECORDS_REJECTED, RECORDS_VALIDATED, Event


def create_app(settings: IngestionSettings | None = None) -> FastAPI:
    settings = settings or IngestionSettings()
    credentials = Credentials.of(settings.auth)  # before anything connects: bad credentials, no start
    parts = Components.connect("ingestion", settings, uses={"object_store"})  # no MLflow
    contracts = load_contracts(settings.datasets_dir)
    seen_records = SeenEvents()
    register_subscribers(parts.broker, contracts, seen_records)
    catalog = DatasetCatalog(parts.store)

    async def publish(event: Event) -> None:
        await publish_event(parts.broker, event)

    def rolling(into: DatasetCatalog, group_id: str, **source: Any) -> Roller:
        """A roller of this service's contracts and sealing rules (records, or labels with ``source``)."""
        return Roller(
            into,
            contracts,
            publish,
            settings.kafka.bootstrap_servers,
            bucket=settings.s3.bucket,
            max_rows=settings.version_max_rows,
            max_age_s=settings.version_max_age_s,
            group_id=group_id,
            **source,
        )

    roller = rolling(catalog, settings.roller_group)

    async def dead_letter(raw: Any, reason: str) -> None:
        await publish_dead_letter(parts.broker, raw, InvalidMessage(reason), service="ingestion", attempts=1)

    labels = rolling(
        DatasetCatalog.labels(parts.store),
        f"{settings.roller_group}-labels",
        source=LABELS_SOURCE,
        ready=lambda label: label.record_id is None or roller.knows(label.dataset, label.record_id),
        wait_s=settings.label_wait_s,
        dead_letter=dead_letter,
        learn=roller.learn,  # another replica may have sealed the record a label names
    )
    rollers = {"records": roller, "labels": labels}

    def report_stop(which: Roller) -> Callable[[asyncio.Task], None]:
        def stopped(done: asyncio.Task) -> None:
            error = "cancelled" if done.cancelled() else repr(done.exception())
            which.state = "stopped"  # a roller only stops with the service: any other stop is unhealthy
            parts.log.error("roller stopped", source=which.source.topic, error=error)

        return stopped

    @contextlib.asynccontextmanager
    async def roll_versions(app: FastAPI) -> AsyncIterator[None]:
        tasks = {asyncio.create_task(each.run()): report_stop(each) for each in rollers.values()}
        for task, callback in tasks.items():
            task.add_done_callback(callback)
        yield
        for task, callback in tasks.items():
            task.remove_done_callback(callback)  # stopping with the service is no failure
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def roller_check() -> bool:
        return all(each.state not in ("recovering", "stopped") for each in rollers.values())

    def status() -> dict[str, Any]:
        return {
            "roller": roller.state,
            "labels_roller": labels.state,
            "buffered_rows": {d: len(b.records) for d, b in roller.buffers.items()},
            "buffered_labels": {d: len(b.records) for d, b in labels.buffers.items()},
            "waiting_labels": {d: len(w.held) for d, w in labels.waiting.items()},
        }

    return create_service_app(
        name="ingestion",
        settings=settings,
        broker=parts.broker,
        checks={**parts.checks(), "roller": roller_check},
        routers=[
            create_router(parts.broker, contracts, seen_records, settings.max_batch, credentials),
            create_dataset_router(catalog, roller, credentials, settings.seal_timeout_s, labels),
        ],
        lifespans=[roll_versions],
        description="Validates records against data contracts and versions them into datasets.",
        publishes=[RECORDS_VALIDATED, RECORDS_REJECTED, DATASETS_VERSIONED],
        reads={
            RECORDS_VALIDATED: "A roller seals validated records into dataset versions (its own group).",
            LABELS: "A roller seals outcomes into label batches, each label once its record is sealed (its own group).",
        },
        status=status,
    )
