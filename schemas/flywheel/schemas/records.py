"""Records flowing in, validated, rejected; labels arriving later."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, JsonValue

from flywheel.schemas.envelope import Event, Name


class RecordSubmitted(Event):
    """A raw record as a client sent it, before any validation (``records.raw``)."""

    dataset: Name = Field(description="Which data contract the record claims to follow.")
    record_id: str = Field(description="The client's id for the record; duplicates are rejected.")
    data: dict[str, JsonValue] = Field(description="Column name to raw value.")


class RecordValidated(Event):
    """A record that passed its data contract (``records.validated``)."""

    dataset: Name
    record_id: str
    entity_id: str = Field(description="Value of the contract's entity key.")
    event_time: AwareDatetime = Field(description="Value of the contract's timestamp column.")
    data: dict[str, JsonValue]
    contract_version: str


class Violation(BaseModel):
    """One broken rule of a data contract."""

    column: str
    rule: str = Field(description="type, nullable, range, category, duplicate, unknown, ...")
    value: JsonValue = None
    message: str


class RecordRejected(Event):
    """A record that broke its data contract, with every reason (``records.rejected``)."""

    dataset: Name
    record_id: str
    data: dict[str, Any]
    violations: list[Violation] = Field(min_length=1)
    contract_version: str | None = None


class LabelObserved(Event):
    """The true outcome for an earlier prediction or entity, arriving late (``labels``)."""

    dataset: Name
    label: JsonValue
    prediction_id: str | None = None
    entity_id: str | None = None
    record_id: str | None = None
    observed_at: AwareDatetime | None = None


class MessageDeadLettered(Event):
    """A message no consumer could parse or handle, kept with its bytes (``deadletters``)."""

    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    consumer_group: str | None = None
    reason: str
    error_type: str
    attempts: int = 1
    original_key: str | None = Field(default=None, description="base64 of the key bytes")
    original_value: str = Field(description="base64 of the message bytes, exactly as received")
