"""Registry's composition root: the one place that builds its adapters."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import load_feature_set
from flywheel.common.kafka import ExactlyOnce
from flywheel.common.service import create_service_app
from flywheel.registry.http import create_router
from flywheel.registry.modelstore import ModelStore
from flywheel.registry.registrar import Registrar
from flywheel.registry.settings import RegistrySettings
from flywheel.registry.subscribers import register_subscribers
from flywheel.schemas import MODELS_APPROVED, MODELS_CHAMPION, MODELS_REJECTED


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    parts = Components.connect("registry", settings)
    store = ModelStore(parts.mlflow, legacy=partial(load_feature_set, settings.datasets_dir))
    registrar = Registrar(store, DatasetCatalog(parts.store), parts.broker, settings)
    register_subscribers(parts.broker, registrar, ExactlyOnce(), settings.consumer_group)
    app = create_service_app(
        name="registry",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[create_router(registrar, settings.api_token)],
        description="Gates candidates against thresholds and the champion; owns the MLflow Model Registry.",
        publishes=[MODELS_APPROVED, MODELS_REJECTED, MODELS_CHAMPION],
    )
    app.state.registrar = registrar
    return app
