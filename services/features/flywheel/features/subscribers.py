"""Features' Kafka side: validated records in, the entity's latest vector out on ``features.online``."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import SeenEvents, consumer_options, publish_event
from flywheel.features.metrics import UPDATES
from flywheel.features.store import OnlineStore
from flywheel.schemas import RECORDS_VALIDATED, RecordValidated


def register_subscribers(broker: KafkaBroker, store: OnlineStore, seen: SeenEvents) -> None:
    @broker.subscriber(RECORDS_VALIDATED.name, **consumer_options("features"))
    async def on_record_validated(record: RecordValidated) -> None:
        """Update the entity's vector and the feature statistics (each record once)."""
        if not seen.first_time(record.event_id):
            return
        vector = store.apply(record)
        UPDATES.labels(record.dataset, "updated" if vector else "stale").inc()
        if vector is not None:
            await publish_event(broker, vector)
