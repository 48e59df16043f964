"""Serving's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.service import create_service_app
from flywheel.serving.settings import ServingSettings


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    parts = Components.connect("serving", settings)
    return create_service_app(
        name="serving",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        description="Serves predictions over HTTP and Kafka and rolls out new models safely.",
    )
