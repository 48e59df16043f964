"""Features' composition root: the one place that builds its adapters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from flywheel.common.components import Components
from flywheel.common.contracts import load_contracts
from flywheel.common.featuresets import load_feature_set
from flywheel.common.featureversions import FeatureSetArchive
from flywheel.common.kafka import SeenEvents
from flywheel.common.service import create_service_app
from flywheel.features.http import create_router
from flywheel.features.metrics import ENTITIES
from flywheel.features.replay import replay
from flywheel.features.settings import FeaturesSettings
from flywheel.features.store import OnlineStore
from flywheel.features.subscribers import register_subscribers
from flywheel.features.versions import KnownVersions
from flywheel.schemas import FEATURES_ONLINE, RECORDS_VALIDATED


def feature_sets_in(datasets_dir: Path) -> dict[str, Any]:
    return {
        p.parent.name: load_feature_set(datasets_dir, p.parent.name)
        for p in sorted(datasets_dir.glob("*/features.yaml"))
    }


def create_app(settings: FeaturesSettings | None = None) -> FastAPI:
    settings = settings or FeaturesSettings()
    parts = Components.connect("features", settings, uses={"object_store"})  # no MLflow
    store = OnlineStore(feature_sets_in(settings.datasets_dir))
    versions = KnownVersions(store.feature_sets, FeatureSetArchive(parts.store))
    seen = SeenEvents(capacity=settings.dedup_capacity)
    contracts = load_contracts(settings.datasets_dir)
    register_subscribers(parts.broker, store, seen, contracts)
    state: dict[str, Any] = {"store": "rebuilding", "replayed": 0}

    async def keep_versions() -> None:
        """Today's feature-set versions into the archive, for readers pinned to them later."""
        delay = 1.0
        while True:  # the object store not up yet: retry; putting a kept version again changes nothing
            try:
                kept = await asyncio.to_thread(versions.keep_current)
            except Exception as error:
                parts.log.warning("keeping feature-set versions failed; retrying", error=repr(error), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.replay_max_backoff_s)
                continue
            parts.log.info("feature-set versions kept", keys=kept)
            return

    async def rebuild() -> None:
        delay = 1.0
        while True:  # Kafka not up yet, or gone mid-replay: retry; the dedup makes a rerun harmless
            started = time.monotonic()
            try:
                state["replayed"] = await replay(settings.kafka.bootstrap_servers, store, seen, contracts)
            except Exception as error:  # any failure of the replay is retried, never fatal
                state["replay_error"] = f"{type(error).__name__}: {error}"
                parts.log.warning("online store replay failed; retrying", error=state["replay_error"], in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.replay_max_backoff_s)
                continue
            break
        state.pop("replay_error", None)
        state["store"] = "ready"
        state["replay_s"] = round(time.monotonic() - started, 3)
        parts.log.info(
            "online store rebuilt", records=state["replayed"], entities=store.entities(), seconds=state["replay_s"]
        )

    @contextlib.asynccontextmanager
    async def rebuild_store(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(rebuild()), asyncio.create_task(keep_versions())]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status() -> dict[str, Any]:
        for dataset in store.feature_sets:
            ENTITIES.labels(dataset).set(store.entities(dataset))
        return {**state, "entities": store.entities()}

    return create_service_app(
        name="features",
        settings=settings,
        broker=parts.broker,
        checks=parts.checks(),
        routers=[create_router(store, contracts, ready=lambda: state["store"] == "ready", versions=versions)],
        lifespans=[rebuild_store],
        description="One set of feature definitions, online and offline; keeps the online store.",
        publishes=[FEATURES_ONLINE],
        reads={RECORDS_VALIDATED: "Replayed on start to rebuild the online store and its statistics."},
        status=status,
    )
