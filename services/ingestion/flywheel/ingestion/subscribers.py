"""Ingestion's Kafka side: raw records in, validated records or rejections out."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.contracts import DataContract
from flywheel.common.kafka import SeenEvents, consumer_options, publish_event
from flywheel.ingestion.metrics import count_outcome
from flywheel.ingestion.validation import validate
from flywheel.schemas import RECORDS_RAW, RecordSubmitted


def register_subscribers(broker: KafkaBroker, contracts: dict[str, DataContract], seen_records: SeenEvents) -> None:
    @broker.subscriber(RECORDS_RAW.name, **consumer_options("ingestion"))
    async def on_record_submitted(submitted: RecordSubmitted) -> None:
        """Validate a raw record against its data contract and publish the outcome."""
        outcome = validate(submitted, contracts, seen_records)
        await publish_event(broker, outcome)
        count_outcome(outcome, source="kafka")
