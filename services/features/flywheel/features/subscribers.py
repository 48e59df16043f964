"""Features' Kafka side: validated records in, the entity's latest vector out on ``features.online``."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.contracts import DataContract
from flywheel.common.kafka import InvalidMessage, SeenEvents, publish_event, subscription
from flywheel.features.metrics import UPDATES
from flywheel.features.store import OnlineStore
from flywheel.features.validation import refusal
from flywheel.schemas import RECORDS_VALIDATED, RecordValidated


def register_subscribers(
    broker: KafkaBroker, store: OnlineStore, seen: SeenEvents, contracts: dict[str, DataContract]
) -> None:
    @broker.subscriber(RECORDS_VALIDATED.name, **subscription(RECORDS_VALIDATED, "features"))
    async def on_record_validated(record: RecordValidated) -> None:
        """Update the entity's vector and the feature statistics (each record once); publish the vector.

        Dedup guards the statistics only. A record seen before (a redelivery after a failed
        publish, or one the start-up replay folded in before this consumer reached it) is
        published again if it is still its entity's latest: at-least-once on
        ``features.online``, where the same vector twice is harmless and a lost one is not.
        A record its dataset's contract does not hold is dead-lettered, never folded in.
        """
        if (why := refusal(record, contracts)) is not None:
            raise InvalidMessage(why)
        first = seen.first_time(record.event_id)
        vector = store.apply(record, count=first)
        UPDATES.labels(record.dataset, ("updated" if first else "repeated") if vector else "stale").inc()
        if vector is not None:
            await publish_event(broker, vector)
