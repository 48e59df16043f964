"""Prediction requests and the prediction log."""

from __future__ import annotations

from pydantic import Field, JsonValue

from flywheel.schemas.envelope import Event


class PredictionRequested(Event):
    """Ask serving to score one record over Kafka (``predictions.requests``)."""

    dataset: str
    request_id: str
    entity_id: str | None = None
    data: dict[str, JsonValue]
    model_name: str | None = Field(default=None, description="None: the dataset's default model.")


class PredictionMade(Event):
    """One prediction, from HTTP or Kafka, as served and logged (``predictions``)."""

    dataset: str
    prediction_id: str
    request_id: str | None = None
    entity_id: str | None = None
    model_name: str
    model_version: str
    variant: str = Field(description="champion, canary, shadow, a, b, ...")
    served: bool = Field(default=True, description="False for a shadow answer never returned.")
    prediction: JsonValue
    probability: float | None = None
    features: dict[str, JsonValue] = {}
    latency_ms: float
