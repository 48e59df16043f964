"""Registry's ``why`` routes: a version's story from the control-plane topics (``why.py`` tells it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException

from flywheel.common.history import read_events
from flywheel.registry.http import READS, answer, numbered
from flywheel.registry.registrar import Registrar
from flywheel.registry.why import explain
from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    TRAINING_COMPLETED,
    TRAINING_FAILED,
    TRAINING_REQUESTED,
    Event,
)

# the topics a loop's story is on: small ones (one event per decision or step), read whole
LOOP_TOPICS = (
    MONITORING_DRIFT,
    TRAINING_REQUESTED,
    TRAINING_COMPLETED,
    TRAINING_FAILED,
    MODELS_APPROVED,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    MODELS_CHAMPION,
)
READ_TIMEOUT_S = 30.0

ReadEvents = Callable[[str], Awaitable[list[Event]]]  # a model's events on the loop topics


def loop_events_reader(bootstrap_servers: str) -> ReadEvents:
    """Read a model's events from the loop topics, all at once; Kafka away is a 503, never a 500."""

    async def read_topic(topic: Any, name: str) -> list[Event]:
        return [e async for e in read_events(bootstrap_servers, topic) if getattr(e, "model_name", None) == name]

    async def read(name: str) -> list[Event]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                found = await asyncio.gather(*(read_topic(topic, name) for topic in LOOP_TOPICS))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise HTTPException(503, f"Kafka could not be read for the loop's events: {exc!r}"[:300]) from exc
        return [e for events in found for e in events]

    return read


def create_why_router(registrar: Registrar, read: ReadEvents) -> APIRouter:
    router = APIRouter(tags=["models"])

    async def why(name: str, version: str) -> dict[str, Any]:
        lineage = await answer(registrar.read(registrar.lineage_sync, name, version))
        return explain(await read(name), lineage)

    @router.get("/models/{name}/why", responses=READS)
    async def why_champion(name: str) -> dict[str, Any]:
        """Why the champion serves: drift, request, run, gates, rollout and promotion, timed, with any hole."""
        detail = await answer(registrar.read(registrar.describe_sync, name))
        champion = (detail.get("aliases") or {}).get("champion")
        if champion is None:
            raise HTTPException(404, f"model {name[:80]!r} has no champion yet; ask for a version")
        return await why(name, str(champion))

    @router.get("/models/{name}/versions/{version}/why", responses=READS)
    async def why_version(name: str, version: str) -> dict[str, Any]:
        """Why the version exists (and serves, if it does), event by event, timed, with any hole in the chain."""
        return await why(name, numbered(name, version))

    return router
