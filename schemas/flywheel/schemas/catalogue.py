"""The topic catalogue: the one place that names Flywheel's topics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel.schemas.datasets import DatasetVersioned
from flywheel.schemas.envelope import Event
from flywheel.schemas.features import FeaturesComputed
from flywheel.schemas.models import (
    ChampionChanged,
    ModelApproved,
    ModelRejected,
    RegistryAnswered,
    RegistryCommand,
    RolloutStepped,
)
from flywheel.schemas.monitoring import AlertRaised, DriftDetected
from flywheel.schemas.predictions import PredictionLabelled, PredictionMade, PredictionRequested
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
    """A topic, the one event type it carries, the field(s) its messages are keyed by, and any
    topic-level Kafka config it needs beyond the broker's defaults.

    ``key`` names one field, or several joined by ``/`` (the key is their values joined the
    same way). A ``compacted`` topic (``cleanup.policy=compact``) keeps each key's latest
    message, so a reader that starts from the beginning rebuilds the latest state.
    ``every_replica`` topics are read in full by every replica of a consuming service (no
    shared consumer group); ``every_replica_of`` names the services for which that holds of a topic
    the others share; any other topic is shared between a service's replicas through its group.
    ``clients_write``: clients outside Flywheel publish it; ``operators_read``: it is for people
    (``flywheel tail``, alerting), so operators are a reader of it in the topic graph.
    """

    name: str
    event: type[Event]
    key: str
    description: str
    config: Mapping[str, str] = field(default_factory=dict)
    every_replica: bool = False
    every_replica_of: frozenset[str] = frozenset()
    clients_write: bool = False
    operators_read: bool = False

    def __hash__(self) -> int:  # a topic is its name (its config, a mapping, is not hashable)
        return hash(self.name)

    @property
    def key_fields(self) -> list[str]:
        return self.key.split("/")

    def read_in_full_by(self, service: str) -> bool:
        """Whether every replica of ``service`` reads this topic in full (no consumer group)."""
        return self.every_replica or service in self.every_replica_of

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"

    def key_of(self, event: Event) -> bytes | None:
        """The message key of ``event``; None when a key field is unset.

        >>> FEATURES_ONLINE.key_of(FeaturesComputed(producer="t", dataset="loans", feature_set="f",
        ...     feature_set_version="1", entity_id="a-1", event_time="2026-01-01T00:00:00Z", values={}))
        b'loans/a-1'
        """
        values = [getattr(event, name, None) for name in self.key_fields]
        return None if None in values else "/".join(str(v) for v in values).encode()

    def parse(self, raw: bytes | str) -> Event:
        return self.event.model_validate_json(raw)


RECORDS_RAW = Topic("records.raw", RecordSubmitted, "record_id", "Raw records from clients.", clients_write=True)
RECORDS_VALIDATED = Topic("records.validated", RecordValidated, "entity_id", "Records that passed their data contract.")
RECORDS_REJECTED = Topic(
    "records.rejected", RecordRejected, "record_id", "Records that broke their contract, with why.", operators_read=True
)
LABELS = Topic("labels", LabelObserved, "entity_id", "True outcomes, arriving late.", clients_write=True)
# Every training replica hears each new version: any of them may hold a run waiting for fresh data.
DATASETS_VERSIONED = Topic(
    "datasets.versioned", DatasetVersioned, "dataset", "Sealed, content-addressed dataset versions.", every_replica=True
)
# Compacted and keyed by dataset and entity: the latest vector of each entity outlives retention,
# and a serving replica rebuilds its view of the online store by reading the topic from the start.
FEATURES_ONLINE = Topic(
    "features.online",
    FeaturesComputed,
    "dataset/entity_id",
    "Latest feature vector per entity.",
    config={"cleanup.policy": "compact"},
    every_replica=True,
)
TRAINING_REQUESTED = Topic("training.requested", TrainModel, "model_name", "Commands to train a model.")
TRAINING_COMPLETED = Topic("training.completed", ModelTrained, "model_name", "Finished training runs.")
TRAINING_FAILED = Topic("training.failed", TrainingFailed, "model_name", "Failed training runs.")
MODELS_APPROVED = Topic("models.approved", ModelApproved, "model_name", "Candidates that passed the quality gates.")
# A retrain in vain (a candidate rejected or not promoted) is news to the monitoring replica that judges the model's
# error stream (the one given its partition of predictions.labelled): every monitoring replica hears it.
MODELS_REJECTED = Topic(
    "models.rejected",
    ModelRejected,
    "model_name",
    "Candidates that failed a quality gate.",
    operators_read=True,
    every_replica_of=frozenset({"monitoring"}),
)
# Every serving replica answers with the champion and every monitoring replica judges against it: each hears
# every move (and, reading from the start, checks each against the registry rather than trusting old ones).
MODELS_CHAMPION = Topic(
    "models.champion", ChampionChanged, "model_name", "Champion alias moves: promote, rollback.", every_replica=True
)
MODELS_ROLLOUT = Topic(
    "models.rollout",
    RolloutStepped,
    "model_name",
    "Rollout steps, promotions and rollbacks.",
    # every serving replica follows a rollout (its candidate warm, its share of traffic), and every monitoring
    # replica hears a rollout that ended in vain
    every_replica_of=frozenset({"serving", "monitoring"}),
)
# Keyed by model like training.completed and models.rollout, so one model's decisions of all three land on one
# partition number, which one registry replica owns: that replica decides them one at a time.
REGISTRY_COMMANDS = Topic(
    "registry.commands", RegistryCommand, "model_name", "Decisions asked of the registry, serialized per model."
)
# Every registry replica reads the answers: the one whose HTTP request waits for a command answers it.
REGISTRY_ANSWERS = Topic(
    "registry.answers", RegistryAnswered, "model_name", "How each registry command ended.", every_replica=True
)
PREDICTIONS_REQUESTS = Topic(
    "predictions.requests", PredictionRequested, "entity_id", "Records to score over Kafka.", clients_write=True
)
PREDICTIONS = Topic("predictions", PredictionMade, "entity_id", "The prediction log.")
# The one join of predictions and labels (both keyed by entity, so co-partitioned), keyed by model: a model's
# labelled answers keep their order, and one monitoring replica holds its error stream. Every serving replica
# reads it in full: whichever runs a model's rollout judges it on every replica's answers.
PREDICTIONS_LABELLED = Topic(
    "predictions.labelled",
    PredictionLabelled,
    "model_name",
    "Late labels joined to the answers given for them.",
    every_replica_of=frozenset({"serving"}),
)
MONITORING_DRIFT = Topic("monitoring.drift", DriftDetected, "model_name", "Data and concept drift findings.")
ALERTS = Topic("alerts", AlertRaised, "dedup_key", "Alerts for operators.", operators_read=True)
# A dead letter carries a whole message base64-encoded (4/3 of its size) plus why: the topic takes
# letters of any message the broker's default limit (1,048,588 bytes) let onto another topic.
DEADLETTER_MAX_BYTES = 2 * 1024 * 1024
DEADLETTERS = Topic(
    "deadletters",
    MessageDeadLettered,
    "source_topic",
    "Messages no consumer could handle.",
    config={"max.message.bytes": str(DEADLETTER_MAX_BYTES)},
    operators_read=True,
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
        REGISTRY_COMMANDS,
        REGISTRY_ANSWERS,
        PREDICTIONS_REQUESTS,
        PREDICTIONS,
        PREDICTIONS_LABELLED,
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
