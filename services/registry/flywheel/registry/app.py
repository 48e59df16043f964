"""Registry's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from secrets import token_urlsafe

import structlog
from fastapi import FastAPI

from flywheel.common.auth import Credentials
from flywheel.common.components import Components
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import load_feature_set
from flywheel.common.kafka import ExactlyOnce
from flywheel.common.service import create_service_app
from flywheel.registry.commanded import CommandHandler
from flywheel.registry.commands import CommandDesk, reconcile
from flywheel.registry.http import create_router
from flywheel.registry.maturity.gather import FULL_TOPICS
from flywheel.registry.maturity.http import create_maturity_router
from flywheel.registry.modelstore import ModelStore
from flywheel.registry.registrar import Registrar
from flywheel.registry.settings import RegistrySettings
from flywheel.registry.subscribers import register_subscribers
from flywheel.registry.webhooks import create_webhook_router, register_webhook
from flywheel.registry.why_http import LOOP_TOPICS, create_why_router, loop_events_reader
from flywheel.schemas import (
    ALERTS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    PREDICTIONS,
    RECORDS_REJECTED,
    REGISTRY_ANSWERS,
    REGISTRY_COMMANDS,
    Topic,
)

log = structlog.get_logger(__name__)


def direct_reads() -> dict[Topic, str]:
    """The topics the registry reads without a subscriber: for a model's story (`/why`) and its maturity report."""
    uses: dict[Topic, list[str]] = {}
    for topic in LOOP_TOPICS:
        uses.setdefault(topic, []).append("a model's story (`/why`), read whole")
    for topic in FULL_TOPICS:
        uses.setdefault(topic, []).append("the maturity report, read whole")
    for topic in (PREDICTIONS, RECORDS_REJECTED):
        uses.setdefault(topic, []).append("the maturity report's examples, its newest messages")
    return {topic: "For " + "; for ".join(why) + "." for topic, why in uses.items()}


async def reconcile_forever(commands: CommandHandler, desk: CommandDesk, every_s: float) -> None:
    """Every ``every_s``, ask to follow or put back each champion alias moved in MLflow by hand; errors wait a
    turn. (Every replica polls; a model's owner carries out each ask, and a second finds nothing left.)"""
    while True:
        await asyncio.sleep(every_s)
        try:
            await reconcile(await asyncio.to_thread(commands.moved_by_hand), desk, seen_by="reconciler")
        except Exception as exc:  # MLflow or Kafka away for a moment: the next turn sees the same aliases
            log.warning("reconciling champion aliases failed", error=repr(exc))


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    credentials = Credentials.of(settings.auth)  # before anything connects: bad credentials, no start
    parts = Components.connect("registry", settings)
    store = ModelStore(
        parts.mlflow,
        legacy=partial(load_feature_set, settings.datasets_dir),
        trusted=settings.mlflow.trusted_modules,
    )
    registrar = Registrar(store, DatasetCatalog(parts.store), settings)
    configured = settings.command_secret.get_secret_value() if settings.command_secret else ""
    command_secret = configured or token_urlsafe(32)  # one replica alone may sign with a random one
    desk = CommandDesk(parts.broker, settings.command_timeout_s, command_secret)
    commands = CommandHandler(registrar, command_secret)
    register_subscribers(parts.broker, registrar, commands, desk, ExactlyOnce(), settings.consumer_group)

    @contextlib.asynccontextmanager
    async def reconcile_aliases(app: FastAPI) -> AsyncIterator[None]:
        every = settings.reconcile_s
        task = asyncio.create_task(reconcile_forever(commands, desk, every)) if every else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    configured = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    webhook_secret = configured or token_urlsafe(32)  # a random one is set in MLflow at each start

    @contextlib.asynccontextmanager
    async def mlflow_webhook(app: FastAPI) -> AsyncIterator[None]:
        if settings.webhook_url:
            await register_webhook(parts.mlflow, settings.webhook_url, webhook_secret)
        yield

    app = create_service_app(
        name="registry",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[
            create_router(registrar, desk, credentials),
            create_why_router(registrar, loop_events_reader(settings.kafka.bootstrap_servers)),
            create_maturity_router(registrar),
            create_webhook_router(commands, desk, webhook_secret),
        ],
        lifespans=[reconcile_aliases, mlflow_webhook],
        description="Gates candidates against thresholds and the champion; owns the MLflow Model Registry.",
        publishes=[MODELS_APPROVED, MODELS_REJECTED, MODELS_CHAMPION, ALERTS, REGISTRY_COMMANDS, REGISTRY_ANSWERS],
        reads=direct_reads(),
    )
    app.state.registrar = registrar
    return app
