"""Ingestion's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import SeenEvents
from flywheel.common.service import create_service_app
from flywheel.ingestion.http import create_router
from flywheel.ingestion.settings import IngestionSettings
from flywheel.ingestion.subscribers import register_subscribers


def create_app(settings: IngestionSettings | None = None) -> FastAPI:
    settings = settings or IngestionSettings()
    parts = Components.connect("ingestion", settings)
    contracts = load_contracts(settings.datasets_dir)
    seen_records = SeenEvents()
    register_subscribers(parts.broker, contracts, seen_records)
    return create_service_app(
        name="ingestion",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[create_router(parts.broker, contracts, seen_records, settings.max_batch)],
        description="Validates records against data contracts and versions them into datasets.",
    )
