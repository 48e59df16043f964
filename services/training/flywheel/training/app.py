"""Training's composition root: the one place that builds its adapters."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.service import create_service_app
from flywheel.training.settings import TrainingSettings


def create_app(settings: TrainingSettings | None = None) -> FastAPI:
    settings = settings or TrainingSettings()
    parts = Components.connect("training", settings)
    return create_service_app(
        name="training",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        description="Trains models on dataset versions, reproducibly, tracked in MLflow.",
    )
