"""Ingestion's HTTP routes."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, Field, JsonValue

from flywheel.common.auth import Credentials
from flywheel.common.contracts import DataContract
from flywheel.common.kafka import SeenEvents, publish_event
from flywheel.common.problems import problems
from flywheel.ingestion.metrics import count_outcome
from flywheel.ingestion.validation import PRODUCER, validate
from flywheel.schemas import RecordRejected, RecordSubmitted, RecordValidated, Violation

# A record travels as one Kafka message (1 MiB at most), twice over when rejected (its data and the
# values the violations quote): bigger records are refused at the door, not failed at the broker.
MAX_RECORD_BYTES = 256 * 1024


class RecordBatch(BaseModel):
    """A batch of records of one dataset; a record may carry its own ``record_id``."""

    dataset: str
    records: list[dict[str, JsonValue]] = Field(min_length=1)


class RecordOutcome(BaseModel):
    index: int
    record_id: str
    accepted: bool
    violations: list[Violation] = []


class BatchOutcome(BaseModel):
    accepted: int
    rejected: int
    results: list[RecordOutcome]


def record_id_of(record: dict[str, Any]) -> str:
    """The record's own id, or a hash of its content so a resend counts as a duplicate."""
    if isinstance(record.get("record_id"), str | int):
        return str(record["record_id"])
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def create_router(
    broker: KafkaBroker,
    contracts: dict[str, DataContract],
    seen_records: SeenEvents,
    max_batch: int,
    credentials: Credentials,
) -> APIRouter:
    router = APIRouter(tags=["records"])

    @router.post(
        "/records",
        response_model=BatchOutcome,
        dependencies=[Depends(credentials.require("producer"))],
        responses=problems(401, 403, 404, 413, 503),
    )
    async def post_records(batch: Annotated[RecordBatch, Body()]) -> BatchOutcome:
        """Validate a batch of records; publish each as validated or rejected, and say why."""
        if len(batch.records) > max_batch:
            raise HTTPException(413, f"batch of {len(batch.records)} records exceeds {max_batch}")
        if batch.dataset not in contracts:
            raise HTTPException(404, f"no data contract for dataset {batch.dataset[:80]!r}; known: {sorted(contracts)}")
        for index, record in enumerate(batch.records):
            size = len(json.dumps(record, default=str))
            if size > MAX_RECORD_BYTES:
                raise HTTPException(413, f"record {index} is {size} bytes of JSON; the limit is {MAX_RECORD_BYTES}")
        results = []
        for index, record in enumerate(batch.records):
            data = {k: v for k, v in record.items() if k != "record_id"}
            submitted = RecordSubmitted(
                producer=PRODUCER, dataset=batch.dataset, record_id=record_id_of(record), data=data
            )
            outcome = validate(submitted, contracts, seen_records)
            try:
                await publish_event(broker, outcome)
            except Exception as exc:  # the broker is unavailable: not the request's fault
                if isinstance(outcome, RecordValidated):  # not accepted after all: a resend is not a duplicate
                    seen_records.forget(f"{outcome.dataset}/{outcome.record_id}")
                raise HTTPException(
                    503, f"could not publish record {index}: {type(exc).__name__}: {exc}"[:300]
                ) from exc
            count_outcome(outcome, source="http")
            rejected = isinstance(outcome, RecordRejected)
            results.append(
                RecordOutcome(
                    index=index,
                    record_id=submitted.record_id,
                    accepted=not rejected,
                    violations=outcome.violations if rejected else [],
                )
            )
        accepted = sum(r.accepted for r in results)
        return BatchOutcome(accepted=accepted, rejected=len(results) - accepted, results=results)

    @router.get("/contracts")
    async def get_contracts() -> dict[str, DataContract]:
        """The data contracts records are validated against, by dataset."""
        return contracts

    return router
