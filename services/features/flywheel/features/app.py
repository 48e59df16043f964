"""Features's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.service import create_service_app
from flywheel.features.settings import FeaturesSettings


def create_app(settings: FeaturesSettings | None = None) -> FastAPI:
    settings = settings or FeaturesSettings()
    parts = Components.connect("features", settings)
    return create_service_app(
        name="features",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        description="One set of feature definitions, online and offline; keeps the online store.",
    )
