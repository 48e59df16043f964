"""Online feature vectors."""

from __future__ import annotations

from pydantic import AwareDatetime, Field, JsonValue

from flywheel.schemas.envelope import Event, Name


class FeaturesComputed(Event):
    """The latest feature vector of one entity (``features.online``)."""

    dataset: Name
    feature_set: Name
    feature_set_version: Name = Field(description="The content hash of the feature-set definition the values are by.")
    entity_id: str
    event_time: AwareDatetime
    values: dict[str, JsonValue]
    inputs: dict[str, JsonValue] = Field(
        default={},
        description="The record the vector was computed from: a reader pinned to another feature-set version"
        " (a model trained before features.yaml changed) computes its own vector from it.",
    )
