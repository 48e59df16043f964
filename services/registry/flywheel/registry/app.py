"""Registry's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.service import create_service_app
from flywheel.registry.settings import RegistrySettings


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    parts = Components.connect("registry", settings)
    return create_service_app(
        name="registry",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        description="Gates candidates against thresholds and the champion; owns the MLflow Model Registry.",
    )
