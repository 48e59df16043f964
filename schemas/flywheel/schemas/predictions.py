"""Prediction requests and the prediction log."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, JsonValue

from flywheel.schemas.envelope import Event, Name


class PredictionRequested(Event):
    """Ask serving to score one record over Kafka (``predictions.requests``)."""

    dataset: Name
    request_id: str
    entity_id: str | None = None
    data: dict[str, JsonValue]
    model_name: Name | None = Field(default=None, description="None: the dataset's default model.")


class PredictionMade(Event):
    """One prediction, from HTTP or Kafka, as served and logged (``predictions``)."""

    dataset: Name
    prediction_id: str
    request_id: str | None = None
    entity_id: str | None = None
    model_name: Name
    model_version: Name
    variant: Name = Field(description="champion, canary, shadow, a, b, ...")
    served: bool = Field(default=True, description="False for a shadow answer never returned.")
    prediction: JsonValue
    probability: float | None = Field(default=None, ge=0, le=1, description="Of the positive class.")
    features: dict[str, float | None] = Field(default={}, description="The features the model was fed (null: NaN).")
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    feature_set_version: Name | None = Field(
        default=None, description="The feature-set version ``features`` were computed with: the answering model's."
    )
    inputs: dict[str, JsonValue] = Field(
        default={},
        description="The request's raw inputs the model reads: logged for a served answer of a model whose spec "
        "keeps an online challenger learning beside it (empty for any other).",
    )


class LabelledAnswer(BaseModel):
    """One answer given to a labelled request: the one served, or a shadow candidate's beside it."""

    prediction_id: str
    variant: Name = Field(description="The variant that gave it: champion, candidate or shadow.")
    served: bool = True
    model_version: Name
    prediction: JsonValue
    probability: float | None = Field(default=None, ge=0, le=1)
    predicted_at: AwareDatetime


class PredictionLabelled(Event):
    """A late label joined to the answers given for it (``predictions.labelled``): the one join of
    ``predictions`` and ``labels``, which serving's rollout judge and guard and monitoring all read."""

    dataset: Name
    model_name: Name
    label: JsonValue
    label_event_id: UUID = Field(description="The ``labels`` event joined; this event's id derives from it.")
    request_id: str | None = None
    entity_id: str | None = None
    observed_at: AwareDatetime | None = None
    answers: list[LabelledAnswer] = Field(min_length=1)
    inputs: dict[str, JsonValue] = Field(
        default={},
        description="The served answer's logged raw inputs (``PredictionMade.inputs``): what an online "
        "challenger learns from.",
    )

    def served(self) -> LabelledAnswer:
        """The answer the client was given."""
        return next((a for a in self.answers if a.served), self.answers[0])
