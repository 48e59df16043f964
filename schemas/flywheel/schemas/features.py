"""Online feature vectors."""

from __future__ import annotations

from pydantic import AwareDatetime, JsonValue

from flywheel.schemas.envelope import Event, Name


class FeaturesComputed(Event):
    """The latest feature vector of one entity (``features.online``)."""

    dataset: Name
    feature_set: Name
    feature_set_version: Name
    entity_id: str
    event_time: AwareDatetime
    values: dict[str, JsonValue]
