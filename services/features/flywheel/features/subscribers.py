"""Features' Kafka side: validated records in, the entity's latest vector out on ``features.online``.

Records are consumed in batches, as ingestion consumes its raw records: each is folded in on its
own, the batch's vectors are published together (one wait for all their acks), and the batch is
committed once after that. The bodies arrive undecoded, so that one unparseable, refused or failing record
becomes one dead letter with its reason (``handle_each``), never a failed batch.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.contracts import DataContract
from flywheel.common.kafka import (
    InvalidMessage,
    SeenEvents,
    batch_subscription,
    handle_each,
    parse_each,
    publish_events,
)
from flywheel.features.metrics import UPDATES
from flywheel.features.store import OnlineStore
from flywheel.features.validation import refusal
from flywheel.schemas import RECORDS_VALIDATED, FeaturesComputed, RecordValidated


def register_subscribers(
    broker: KafkaBroker, store: OnlineStore, seen: SeenEvents, contracts: dict[str, DataContract]
) -> None:
    @broker.subscriber(RECORDS_VALIDATED.name, **batch_subscription(RECORDS_VALIDATED, "features"))
    async def on_records_validated(bodies: list[bytes], message: KafkaMessage) -> None:
        """Update each record's entity vector and the feature statistics (each record once); publish the vectors.

        Dedup guards the statistics only. A record seen before (a redelivery after a failed
        publish, or one the start-up replay folded in before this consumer reached it) is
        published again if it is still its entity's latest: at-least-once on
        ``features.online``, where the same vector twice is harmless and a lost one is not.
        A record its dataset's contract does not hold is dead-lettered, never folded in.
        """
        vectors: list[FeaturesComputed] = []
        for raw, record in await parse_each(broker, RECORDS_VALIDATED, bodies, message, service="features"):
            vectors += await handle_each(broker, raw, lambda record=record: fold(record), service="features") or []
        await publish_events(broker, vectors)

    async def fold(record: RecordValidated) -> list[FeaturesComputed]:
        if (why := refusal(record, contracts)) is not None:
            raise InvalidMessage(why)
        first = record.event_id not in seen
        vector = store.apply(record, count=first)
        seen.first_time(record.event_id)  # claimed once folded in: a failed try that is retried still counts it
        UPDATES.labels(record.dataset, ("updated" if first else "repeated") if vector else "stale").inc()
        return [vector] if vector is not None else []
