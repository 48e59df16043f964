"""The topic catalogue: the one place that names Flywheel's topics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel.schemas.datasets import DatasetVersioned
from flywheel.schemas.envelope import Event
from flywheel.schemas.features import FeaturesComputed
from flywheel.schemas.models import ChampionChanged, ModelApproved, ModelRejected, RolloutStepped
from flywheel.schemas.monitoring import AlertRaised, DriftDetected
from flywheel.schemas.predictions import PredictionMade, PredictionRequested
from flywheel.schemas.records import (
    LabelObserved,
    MessageDeadLettered,
    RecordRejected,
    RecordSubmitted,
    RecordValidated,
)
from flywheel.schemas.training import ModelTrained, TrainingFailed, TrainModel


@dataclass(frozen=True)
class Topic:
    """A topic, the one event type it carries, the field its messages are keyed by, and any
    topic-level Kafka config it needs beyond the broker's defaults."""

    name: str
    event: type[Event]
    key: str
    description: str
    config: Mapping[str, str] = field(default_factory=dict)

    def key_of(self, event: Event) -> bytes | None:
        value = getattr(event, self.key, None)
        return None if value is None else str(value).encode()

    def parse(self, raw: bytes | str) -> Event:
        return self.event.model_validate_json(raw)


RECORDS_RAW = Topic("records.raw", RecordSubmitted, "record_id", "Raw records from clients.")
RECORDS_VALIDATED = Topic("records.validated", RecordValidated, "entity_id", "Records that passed their data contract.")
RECORDS_REJECTED = Topic(
    "records.rejected", RecordRejected, "record_id", "Records that broke their contract, with why."
)
LABELS = Topic("labels", LabelObserved, "entity_id", "True outcomes, arriving late.")
DATASETS_VERSIONED = Topic(
    "datasets.versioned", DatasetVersioned, "dataset", "Sealed, content-addressed dataset versions."
)
FEATURES_ONLINE = Topic("features.online", FeaturesComputed, "entity_id", "Latest feature vector per entity.")
TRAINING_REQUESTED = Topic("training.requested", TrainModel, "model_name", "Commands to train a model.")
TRAINING_COMPLETED = Topic("training.completed", ModelTrained, "model_name", "Finished training runs.")
TRAINING_FAILED = Topic("training.failed", TrainingFailed, "model_name", "Failed training runs.")
MODELS_APPROVED = Topic("models.approved", ModelApproved, "model_name", "Candidates that passed the quality gates.")
MODELS_REJECTED = Topic("models.rejected", ModelRejected, "model_name", "Candidates that failed a quality gate.")
MODELS_CHAMPION = Topic("models.champion", ChampionChanged, "model_name", "Champion alias moves: promote, rollback.")
MODELS_ROLLOUT = Topic("models.rollout", RolloutStepped, "model_name", "Rollout steps, promotions and rollbacks.")
PREDICTIONS_REQUESTS = Topic("predictions.requests", PredictionRequested, "entity_id", "Records to score over Kafka.")
PREDICTIONS = Topic("predictions", PredictionMade, "entity_id", "The prediction log.")
MONITORING_DRIFT = Topic("monitoring.drift", DriftDetected, "model_name", "Data and concept drift findings.")
ALERTS = Topic("alerts", AlertRaised, "dedup_key", "Alerts for operators.")
# A dead letter carries a whole message base64-encoded (4/3 of its size) plus why: the topic takes
# letters of any message the broker's default limit (1,048,588 bytes) let onto another topic.
DEADLETTER_MAX_BYTES = 2 * 1024 * 1024
DEADLETTERS = Topic(
    "deadletters",
    MessageDeadLettered,
    "source_topic",
    "Messages no consumer could handle.",
    config={"max.message.bytes": str(DEADLETTER_MAX_BYTES)},
)

TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        RECORDS_RAW,
        RECORDS_VALIDATED,
        RECORDS_REJECTED,
        LABELS,
        DATASETS_VERSIONED,
        FEATURES_ONLINE,
        TRAINING_REQUESTED,
        TRAINING_COMPLETED,
        TRAINING_FAILED,
        MODELS_APPROVED,
        MODELS_REJECTED,
        MODELS_CHAMPION,
        MODELS_ROLLOUT,
        PREDICTIONS_REQUESTS,
        PREDICTIONS,
        MONITORING_DRIFT,
        ALERTS,
        DEADLETTERS,
    )
}

EVENT_TYPES: dict[str, type[Event]] = {t.event.__name__: t.event for t in TOPICS.values()}


def topic_for(event: Event | type[Event]) -> Topic:
    """The topic that carries this event type."""
    cls = event if isinstance(event, type) else type(event)
    for topic in TOPICS.values():
        if topic.event is cls:
            return topic
    raise KeyError(f"no topic carries {cls.__name__}")
