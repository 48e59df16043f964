"""Online feature vectors."""

from __future__ import annotations

from pydantic import AwareDatetime, JsonValue

from flywheel.schemas.envelope import Event


class FeaturesComputed(Event):
    """The latest feature vector of one entity (``features.online``)."""

    dataset: str
    feature_set: str
    feature_set_version: str
    entity_id: str
    event_time: AwareDatetime
    values: dict[str, JsonValue]
