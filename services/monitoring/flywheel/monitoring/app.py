"""Monitoring's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.service import create_service_app
from flywheel.monitoring.settings import MonitoringSettings


def create_app(settings: MonitoringSettings | None = None) -> FastAPI:
    settings = settings or MonitoringSettings()
    parts = Components.connect("monitoring", settings)
    return create_service_app(
        name="monitoring",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        description="Detects data and concept drift and raises alerts.",
    )
