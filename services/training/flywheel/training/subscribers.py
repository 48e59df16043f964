"""Training's Kafka side: drift findings become training requests; requests go to the intake."""

from __future__ import annotations

import structlog
from aiokafka import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.contracts import DataContract, label_refusal
from flywheel.common.kafka import (
    InvalidMessage,
    exactly_once,
    parse_each,
    subscription,
    undecoded,
)
from flywheel.schemas import (
    DATASETS_VERSIONED,
    MONITORING_DRIFT,
    PREDICTIONS_LABELLED,
    TRAINING_REQUESTED,
    DatasetVersioned,
    DriftDetected,
    PredictionLabelled,
    TrainModel,
)
from flywheel.training.arrivals import Arrivals
from flywheel.training.challenging import Challengers
from flywheel.training.handlers import PRODUCER, request_from_drift
from flywheel.training.intake import Handover, Intake

log = structlog.get_logger(__name__)


def register_subscribers(
    broker: KafkaBroker, intake: Intake, group: str, arrivals: Arrivals, datasets: set[str]
) -> None:
    """``datasets``: the ones this service can train on; a drift or version of any other is dead-lettered."""

    # only versions sealed from now on: one sealed before this replica started woke no run of it
    @broker.subscriber(DATASETS_VERSIONED.name, **subscription(DATASETS_VERSIONED, group, auto_offset_reset="latest"))
    async def on_dataset_versioned(versioned: DatasetVersioned) -> None:
        """New records or labels were sealed: wake the runs waiting for fresh labelled data."""
        if versioned.dataset not in datasets:
            raise InvalidMessage(f"version of dataset {versioned.dataset!r}, which nothing here trains on")
        arrivals.announce(versioned.dataset)

    @broker.subscriber(MONITORING_DRIFT.name, **subscription(MONITORING_DRIFT, group))
    @exactly_once(broker)
    async def on_drift_detected(drift: DriftDetected) -> TrainModel | None:
        """Turn a drift finding that asks for a retrain into a ``TrainModel`` caused by it."""
        if drift.dataset not in datasets:
            raise InvalidMessage(
                f"drift of dataset {drift.dataset!r}, which no model here trains on: {sorted(datasets)}"
            )
        request = request_from_drift(drift)
        if request is not None:
            log.info("retrain requested by drift", model_name=request.model_name, drift=str(drift.event_id))
        return request

    # Offsets are committed by the intake, once the requests' runs have ended: never on receipt.
    # Bodies arrive undecoded: a message that is no request is dead-lettered here, and the intake
    # commits past it like any settled request (a manual commit never moves past an unknown offset).
    requests = broker.subscriber(
        TRAINING_REQUESTED.name,
        decoder=undecoded,
        **subscription(
            TRAINING_REQUESTED, group, ack_policy=AckPolicy.MANUAL, listener=Handover(intake, TRAINING_REQUESTED.name)
        ),
    )

    @requests
    async def on_train_model(body: bytes, message: KafkaMessage) -> None:
        """Take a training request: its run is coalesced per model, its offset committed when the run ends."""
        record = message.raw_message
        parsed = await parse_each(broker, TRAINING_REQUESTED, [body], message, service=PRODUCER)
        if not parsed:
            await intake.skip(record.partition, record.offset)
            return
        await intake.take(parsed[0].event, record.partition, record.offset)

    async def commit(points: dict[int, int]) -> None:
        consumer = requests.consumer
        if consumer is not None:
            await consumer.commit({TopicPartition(TRAINING_REQUESTED.name, p): o for p, o in points.items()})

    intake.commit = commit


def register_challenger(
    broker: KafkaBroker, challengers: Challengers, group: str, contracts: dict[str, DataContract]
) -> None:
    """The online challengers' labelled answers, in the service's group (keyed by model: one replica learns a
    model, in order), from the moment training first joins it. Committed in the background, not message by
    message: the learner lives in memory (a restart forgets it) and must keep up with the stream it learns.
    The drifts and outcomes that open and end its episodes reach every replica (``challenging.follow``)."""

    @broker.subscriber(
        PREDICTIONS_LABELLED.name,
        **subscription(PREDICTIONS_LABELLED, group, auto_offset_reset="latest", ack_policy=AckPolicy.ACK_FIRST),
    )
    async def on_labelled(labelled: PredictionLabelled) -> None:
        """Learn a labelled answer (its snapshots are logged and published by the challengers, in the background)."""
        if (refusal := label_refusal(contracts, labelled)) is not None:
            raise InvalidMessage(refusal)
        await challengers.learn(labelled)
