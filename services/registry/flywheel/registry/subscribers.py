"""Registry's Kafka side: finished training runs are gated."""

from __future__ import annotations

import structlog
from faststream.kafka import KafkaBroker

from flywheel.common.kafka import SeenEvents, consumer_options
from flywheel.registry.registrar import Registrar
from flywheel.schemas import TRAINING_COMPLETED, ModelTrained

log = structlog.get_logger(__name__)


def register_subscribers(broker: KafkaBroker, registrar: Registrar, seen: SeenEvents, group: str) -> None:
    @broker.subscriber(TRAINING_COMPLETED.name, **consumer_options(group))
    async def on_model_trained(trained: ModelTrained) -> None:
        """Gate a candidate; register it approved (challenger or first champion) or rejected."""
        if not seen.first_time(trained.event_id):
            return
        await registrar.on_trained(trained)
