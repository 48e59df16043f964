"""Monitoring's composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

from fastapi import FastAPI

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import consumer_options, publish_event
from flywheel.common.service import create_service_app
from flywheel.common.tracking import champion_version, version_registered
from flywheel.monitoring.http import create_router
from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.joining import Remembering
from flywheel.monitoring.perdataset import monitor_configs
from flywheel.monitoring.rebuild import rebuild
from flywheel.monitoring.reference import load_reference
from flywheel.monitoring.settings import MonitoringSettings
from flywheel.monitoring.subscribers import register_subscribers
from flywheel.monitoring.watch import Watch
from flywheel.schemas import ALERTS, LABELS, MONITORING_DRIFT, PREDICTIONS, PREDICTIONS_LABELLED, Event


def create_app(settings: MonitoringSettings | None = None) -> FastAPI:
    settings = settings or MonitoringSettings()
    parts = Components.connect("monitoring", settings)
    loader = partial(load_reference, parts.mlflow, DatasetCatalog(parts.store), settings.datasets_dir)
    config = settings.monitor_config()
    watch = Watch(config, loader, monitor_configs(settings.datasets_dir, config))

    async def registered(name: str, version: str) -> bool:
        return await asyncio.to_thread(version_registered, parts.mlflow, name, version)

    async def champion_of(name: str) -> str | None:
        return await asyncio.to_thread(champion_version, parts.mlflow, name)

    contracts = load_contracts(settings.datasets_dir)
    moves = ChampionMoves(champion_of, registered)
    group = consumer_options("monitoring")["group_id"]
    join = LabelJoin(wait_s=settings.label_wait_s)

    async def publish(event: Event) -> None:
        await publish_event(parts.broker, event)

    remembering = Remembering(
        join, settings.kafka.bootstrap_servers, group, settings.join_rebuild_last, contracts, publish
    )
    register_subscribers(
        parts.broker, watch, contracts=contracts, registered=registered, moves=moves, join=join, listener=remembering
    )

    @contextlib.asynccontextmanager
    async def refold(app: FastAPI) -> AsyncIterator[None]:
        """Before the subscribers start: the monitors as they were when the group last committed."""
        # references load the registry's champion of this moment or later: the moves before it are in them
        await moves.mark_start(settings.kafka.bootstrap_servers)
        done = await rebuild(settings.kafka.bootstrap_servers, group, watch, settings.replay_last, contracts)
        parts.log.info("monitors rebuilt", predictions=done.predictions, labels=done.labels, seconds=done.seconds)
        yield

    app = create_service_app(
        name="monitoring",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[create_router(watch)],
        lifespans=[refold],
        description="Detects data and concept drift and raises alerts.",
        publishes=[MONITORING_DRIFT, ALERTS, PREDICTIONS_LABELLED],
        reads={
            PREDICTIONS: "Refolded on start up to the group's committed offsets (the monitors' windows), and "
            "whenever the group gives this replica partitions (the join's answers waiting for their labels).",
            LABELS: "Whenever the group gives this replica partitions: the labels of the last wait before the "
            "committed offset that no join names, parked again for their answers.",
            PREDICTIONS_LABELLED: "Refolded on start up to the group's committed offsets (the error streams), and "
            "read back over the last wait when labels are parked again (the labels already joined).",
        },
    )
    app.state.watch = watch
    app.state.join = join
    return app
