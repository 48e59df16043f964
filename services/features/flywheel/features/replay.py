"""Rebuilding the online store after a restart by replaying ``records.validated``.

The store lives in memory; the topic (retained, not compacted) is its log. On start, a
consumer without a group reads every partition from the beginning up to the end offsets
of that moment, while the ``flywheel-features`` subscriber resumes from its committed
offsets beside it. Both fold records in with the same dedup by event id, so a record
both see counts once in the statistics; the latest vector per entity is idempotent.

Why a bounded replay and not a consumer group that rereads from the beginning: the
group's committed offsets are what make ``features.online`` at-least-once (a record is
published before its offset is committed), and a reread through the subscriber would
republish every historical vector on each start. The replay only rebuilds state; it
publishes nothing. Until it has reached the end offsets ``/health`` reports
``store: rebuilding`` (and an unknown entity answers 503, not 404).
"""

from __future__ import annotations

from pydantic import ValidationError

from flywheel.common.contracts import DataContract
from flywheel.common.history import read_history
from flywheel.common.kafka import SeenEvents
from flywheel.features.store import OnlineStore
from flywheel.features.validation import refusal
from flywheel.schemas import RECORDS_VALIDATED, RecordValidated


async def replay(
    bootstrap_servers: str, store: OnlineStore, seen: SeenEvents, contracts: dict[str, DataContract]
) -> int:
    """Fold the topic's history into the store (not the records the subscriber dead-lettered); the number read."""
    read = 0
    async for message in read_history(bootstrap_servers, RECORDS_VALIDATED.name):
        read += 1
        try:
            record = RecordValidated.model_validate_json(message.value)
        except ValidationError:
            continue
        if refusal(record, contracts) is not None:
            continue
        store.apply(record, count=seen.first_time(record.event_id))
    return read
