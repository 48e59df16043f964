"""Serving's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from flywheel.common.auth import Credentials, client_token
from flywheel.common.championmoves import ChampionMoves
from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.history import read_events
from flywheel.common.kafka import publish_event, publish_events
from flywheel.common.service import create_service_app
from flywheel.common.tracking import champion_version, version_registered
from flywheel.schemas import (
    ALERTS,
    FEATURES_ONLINE,
    MODELS_APPROVED,
    MODELS_ROLLOUT,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    Event,
)
from flywheel.serving.engine import Engine
from flywheel.serving.http import create_router
from flywheel.serving.models import ServedModel, load_version, served_models
from flywheel.serving.onlineview import OnlineView
from flywheel.serving.onlineview import refusal as view_refusal
from flywheel.serving.ownership import RolloutOwnership
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.registry import RegistryClient
from flywheel.serving.settings import ServingSettings
from flywheel.serving.subscribers import register_subscribers, register_view_subscriber
from flywheel.serving.takeover import Takeover


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    credentials = Credentials.of(settings.auth)  # before anything connects: bad credentials, no start
    parts = Components.connect("serving", settings)
    registry = RegistryClient(
        settings.registry_url, client_token(settings.auth, settings.registry_token, "SERVING_REGISTRY_TOKEN")
    )
    specs = served_models(settings.datasets_dir)
    model_of_dataset = {spec.dataset: name for name, spec in specs.items()}

    async def publish(event: Event) -> None:
        await publish_event(parts.broker, event)

    async def load(name: str, version: str) -> ServedModel | None:
        alias = "champion" if version == "champion" else None
        model = await asyncio.to_thread(
            load_version,
            parts.mlflow,
            settings.datasets_dir,
            name,
            None if alias else version,
            alias,
            settings.mlflow.trusted_modules,
        )
        # scikit-learn's OpenMP pool (loaded with the model) costs more than it saves on a few rows
        threadpool_limits(limits=settings.model_threads)
        return model

    async def registered(name: str, version: str) -> bool:
        return await asyncio.to_thread(version_registered, parts.mlflow, name, version)

    async def champion_of(name: str) -> str | None:
        return await asyncio.to_thread(champion_version, parts.mlflow, name)

    engine = Engine(
        settings, publish, registry.promote, load, registry.rollback, {n: s.rollout for n, s in specs.items()}
    )
    prediction_log = PredictionLog(
        publish,
        settings.log_queue_size,
        settings.log_wait_s,
        publish_many=lambda events: publish_events(parts.broker, events),
    )
    contracts = load_contracts(settings.datasets_dir)
    moves = ChampionMoves(champion_of, registered)
    takeover = Takeover(settings.kafka.bootstrap_servers, engine, contracts)
    ownership = RolloutOwnership(settings.kafka.bootstrap_servers, MODELS_APPROVED.name, takeover.take)
    takeover.labelled = register_subscribers(
        parts.broker,
        engine,
        model_of_dataset,
        contracts=contracts,
        registered=registered,
        moves=moves,
        ownership=ownership,
    )
    view = OnlineView()
    register_view_subscriber(parts.broker, view, contracts)

    async def rebuild_view() -> None:
        """Fold ``features.online`` (compacted: each entity's latest vector) before the first request.

        The subscriber then reads the topic from its beginning too (no group, nothing committed)
        and keeps the view current; folding twice changes nothing.
        """
        started, refused = time.monotonic(), 0
        async for vector in read_events(settings.kafka.bootstrap_servers, FEATURES_ONLINE):
            if view_refusal(vector, contracts) is None:  # type: ignore[arg-type]
                view.apply(vector)  # type: ignore[arg-type]
            else:  # dead-lettered when the subscriber first read it
                refused += 1
        parts.log.info(
            "online view rebuilt", entities=len(view), refused=refused, seconds=round(time.monotonic() - started, 2)
        )

    @contextlib.asynccontextmanager
    async def serve_champions(app: FastAPI) -> AsyncIterator[None]:
        # the champions are loaded from the registry after this mark: the moves before it are in them
        await moves.mark_start(settings.kafka.bootstrap_servers)
        for name in model_of_dataset.values():
            champion = await load(name, "champion")
            if champion is not None:
                engine.champions[name] = champion
                parts.log.info("champion loaded", model=name, version=champion.version)
            else:
                parts.log.warning("no champion yet; /predict answers 503", model=name)
        await takeover.rebuild()
        await rebuild_view()
        drain = asyncio.create_task(prediction_log.drain())
        expire = asyncio.create_task(engine.driver.watch())  # a rollout without traffic still ends in time
        yield
        takeover.stop()
        for task in (expire, drain):
            task.cancel()
        await registry.close()

    def status() -> dict[str, Any]:
        return {
            "models": {
                name: getattr(engine.champions.get(name), "version", "no champion yet")
                for name in model_of_dataset.values()
            },
            "online_view": {"entities": len(view)},
        }

    app = create_service_app(
        name="serving",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[
            create_router(
                engine,
                model_of_dataset,
                contracts,
                settings.batch_max,
                prediction_log,
                view,
                settings.feature_max_age_s,
                registry,
                credentials,
            )
        ],
        lifespans=[serve_champions],
        description="Serves predictions over HTTP and Kafka and rolls out new models safely.",
        publishes=[PREDICTIONS, MODELS_ROLLOUT, ALERTS],
        reads={
            MODELS_ROLLOUT: "Folded on start, and when the group gives this replica a model's approvals: the "
            "rollouts that were running resume.",
            FEATURES_ONLINE: "Folded on start into the view of the online store, before the first request.",
            PREDICTIONS_LABELLED: "Read from the last event of each rollout resumed up to where the subscriber "
            "has got to: the labels no judge of it read.",
        },
        status=status,
    )
    app.state.engine = engine
    app.state.prediction_log = prediction_log
    app.state.online_view = view
    return app
