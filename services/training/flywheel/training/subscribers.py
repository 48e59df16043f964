"""Training's Kafka side: drift findings become training requests; requests go to the intake."""

from __future__ import annotations

import structlog
from aiokafka import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.kafka import consumer_options, exactly_once
from flywheel.schemas import (
    DATASETS_VERSIONED,
    MONITORING_DRIFT,
    TRAINING_REQUESTED,
    DatasetVersioned,
    DriftDetected,
    TrainModel,
)
from flywheel.training.arrivals import Arrivals
from flywheel.training.handlers import request_from_drift
from flywheel.training.intake import Handover, Intake

log = structlog.get_logger(__name__)


def register_subscribers(broker: KafkaBroker, intake: Intake, group: str, arrivals: Arrivals) -> None:
    # no group: every replica hears every new version, since any of them may be waiting for data
    @broker.subscriber(DATASETS_VERSIONED.name, auto_offset_reset="latest", ack_policy=AckPolicy.ACK_FIRST)
    async def on_dataset_versioned(versioned: DatasetVersioned) -> None:
        """New records or labels were sealed: wake the runs waiting for fresh labelled data."""
        arrivals.announce(versioned.dataset)

    @broker.subscriber(MONITORING_DRIFT.name, **consumer_options(group))
    @exactly_once(broker)
    async def on_drift_detected(drift: DriftDetected) -> TrainModel | None:
        """Turn a drift finding that asks for a retrain into a ``TrainModel`` caused by it."""
        request = request_from_drift(drift)
        if request is not None:
            log.info("retrain requested by drift", model_name=request.model_name, drift=str(drift.event_id))
        return request

    # Offsets are committed by the intake, once the requests' runs have ended: never on receipt.
    requests = broker.subscriber(
        TRAINING_REQUESTED.name,
        **consumer_options(group, ack_policy=AckPolicy.MANUAL, listener=Handover(intake, TRAINING_REQUESTED.name)),
    )

    @requests
    async def on_train_model(request: TrainModel, message: KafkaMessage) -> None:
        """Take a training request: its run is coalesced per model, its offset committed when the run ends."""
        await intake.take(request, message.raw_message.partition, message.raw_message.offset)

    async def commit(points: dict[int, int]) -> None:
        consumer = requests.consumer
        if consumer is not None:
            await consumer.commit({TopicPartition(TRAINING_REQUESTED.name, p): o for p, o in points.items()})

    intake.commit = commit
