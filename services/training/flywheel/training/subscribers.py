"""Training's Kafka side: drift findings become training requests; requests join the coalescer."""

from __future__ import annotations

import structlog
from faststream.kafka import KafkaBroker

from flywheel.common.kafka import SeenEvents, consumer_options, publish_event
from flywheel.schemas import MONITORING_DRIFT, TRAINING_REQUESTED, DriftDetected, TrainModel
from flywheel.training.coalesce import Coalescer
from flywheel.training.handlers import request_from_drift

log = structlog.get_logger(__name__)


def register_subscribers(broker: KafkaBroker, coalescer: Coalescer, seen: SeenEvents, group: str) -> None:
    @broker.subscriber(MONITORING_DRIFT.name, **consumer_options(group))
    async def on_drift_detected(drift: DriftDetected) -> None:
        """Turn a drift finding that asks for a retrain into a ``TrainModel`` caused by it."""
        request = request_from_drift(drift)
        if request is not None:
            await publish_event(broker, request)
            log.info("retrain requested by drift", model_name=request.model_name, drift=str(drift.event_id))

    @broker.subscriber(TRAINING_REQUESTED.name, **consumer_options(group))
    async def on_train_model(request: TrainModel) -> None:
        """Queue a training request; a burst for one model is merged into one run."""
        if not seen.first_time(request.event_id):
            log.info("duplicate training request ignored", request=str(request.event_id))
            return
        coalescer.submit(request)
