"""``GET /maturity``: the MLOps maturity level the deployment, or one model, meets, criterion by criterion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Query

from flywheel.common.problems import problems
from flywheel.registry.http import answer
from flywheel.registry.maturity import Assessor, MaturityReport
from flywheel.registry.registrar import Registrar


def create_maturity_router(registrar: Registrar) -> APIRouter:
    router = APIRouter(tags=["maturity"])
    assessor = Assessor(registrar.store, registrar.catalog, registrar.settings.kafka.bootstrap_servers)

    @router.get("/maturity", response_model=MaturityReport, responses=problems(404, 503))
    async def maturity(
        model: Annotated[str | None, Query(max_length=200, description="One model; default: all.")] = None,
        since: Annotated[
            str | None,
            # a date-time in ISO 8601 only: pydantic would also take a number of seconds, which is not one
            Query(
                pattern=r"^\d{4}-\d{2}-\d{2}",
                max_length=40,
                description="Only evidence from this time on (ISO 8601; UTC if no offset).",
            ),
        ] = None,
    ) -> MaturityReport:
        """The maturity level met per area (data, development, deployment, monitoring, continuous training)."""
        try:
            start = datetime.fromisoformat(since) if since else None
        except ValueError as exc:
            raise HTTPException(422, f"since {since!r} is not an ISO 8601 date-time: {exc}"[:300]) from exc
        start = start.replace(tzinfo=UTC) if start is not None and start.tzinfo is None else start
        try:
            return await answer(assessor.assess(model or None, start))
        except KafkaError as exc:
            raise HTTPException(503, f"Kafka is unreachable: {exc!r}"[:300]) from exc

    return router
