"""Ingestion's Kafka side: raw records in, validated records or rejections out.

Records are consumed in batches: each is validated on its own, the outcomes of the batch
are published together (acks=all, in order), and the batch is committed once after that.
The bodies arrive undecoded so that one unparseable message becomes one dead letter with
its bytes and reason, not a failed batch.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import ValidationError

from flywheel.common.contracts import DataContract
from flywheel.common.kafka import SeenEvents, consumer_options, publish_dead_letter, publish_event
from flywheel.ingestion.metrics import count_outcome
from flywheel.ingestion.validation import validate
from flywheel.schemas import RECORDS_RAW, RecordSubmitted

BATCH = 500


async def undecoded(message: StreamMessage[Any], decode: Any) -> list[bytes]:
    """The batch's bodies as bytes: parsing is the handler's, record by record."""
    return message.body


def register_subscribers(broker: KafkaBroker, contracts: dict[str, DataContract], seen_records: SeenEvents) -> None:
    @broker.subscriber(
        RECORDS_RAW.name,
        batch=True,
        max_records=BATCH,
        decoder=undecoded,
        **consumer_options("ingestion", batch_timeout_ms=20),
    )
    async def on_records_submitted(bodies: list[bytes], message: KafkaMessage) -> None:
        """Validate each raw record against its data contract and publish the outcomes."""
        raw_records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        outcomes = []
        for raw, body in zip(raw_records, bodies, strict=True):
            try:
                submitted = RecordSubmitted.model_validate_json(body)
            except ValidationError as exc:
                if getattr(raw, "topic", None) is None:  # the in-memory test broker's records carry less
                    raw = SimpleNamespace(value=body, key=None, topic=RECORDS_RAW.name, headers=())
                await publish_dead_letter(broker, raw, exc, service="ingestion", attempts=1)
                continue
            outcomes.append(validate(submitted, contracts, seen_records))
        await asyncio.gather(*(publish_event(broker, outcome) for outcome in outcomes))
        for outcome in outcomes:
            count_outcome(outcome, source="kafka")
