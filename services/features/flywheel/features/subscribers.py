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
from flywheel.features.validation import refusals
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
        parsed = await parse_each(broker, RECORDS_VALIDATED, bodies, message, service="features")
        records = [record for _, record in parsed]
        # checked and computed a batch at a time, a column at a time; folded in one by one
        refused, computed = refusals(records, contracts), store.vectors(records)
        vectors: list[FeaturesComputed] = []
        for (raw, record), why, values in zip(parsed, refused, computed, strict=True):
            folded = await handle_each(broker, raw, lambda r=record, w=why, v=values: fold(r, w, v), service="features")
            vectors += folded or []
        await publish_events(broker, vectors)

    async def fold(record: RecordValidated, why: str | None, values: dict[str, float] | None) -> list[FeaturesComputed]:
        if why is not None:
            raise InvalidMessage(why)
        first = record.event_id not in seen
        vector = store.apply(record, count=first, values=values)
        seen.first_time(record.event_id)  # claimed once folded in: a failed try that is retried still counts it
        UPDATES.labels(record.dataset, ("updated" if first else "repeated") if vector else "stale").inc()
        return [vector] if vector is not None else []
