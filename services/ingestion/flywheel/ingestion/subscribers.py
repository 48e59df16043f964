"""Ingestion's Kafka side: raw records in, validated records or rejections out.

Records are consumed in batches: each is validated on its own, the outcomes of the batch
are published together (acks=all, in order), and the batch is committed once after that.
The bodies arrive undecoded so that one unparseable message becomes one dead letter with
its bytes and reason, not a failed batch.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.contracts import DataContract
from flywheel.common.kafka import SeenEvents, batch_subscription, parse_each, publish_events
from flywheel.ingestion.metrics import count_outcomes
from flywheel.ingestion.validation import validate_all
from flywheel.schemas import RECORDS_RAW


def register_subscribers(broker: KafkaBroker, contracts: dict[str, DataContract], seen_records: SeenEvents) -> None:
    @broker.subscriber(RECORDS_RAW.name, **batch_subscription(RECORDS_RAW, "ingestion"))
    async def on_records_submitted(bodies: list[bytes], message: KafkaMessage) -> None:
        """Validate each raw record against its data contract and publish the outcomes."""
        submitted = await parse_each(broker, RECORDS_RAW, bodies, message, service="ingestion")
        outcomes = validate_all([event for _, event in submitted], contracts, seen_records)
        await publish_events(broker, outcomes)
        count_outcomes(outcomes, source="kafka")
