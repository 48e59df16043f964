"""Ingestion's acceptance: 10,000 records through records.raw, 5% invalid, a SIGKILL in the middle.

Counts are by ``event_id`` (what consumers dedup on) and by record id in the dataset versions:
the crash must neither lose an accepted record nor count one twice.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.objectstore import ObjectStore
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import RECORDS_RAW, RECORDS_REJECTED, RECORDS_VALIDATED, RecordSubmitted
from tests.integration.test_ingestion_versions import kill_ingestion, rows_sealed, start_ingestion
from tests.support.kafka import TopicReader, producer
from tests.unit.test_ingestion_kafka import loan

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(400)]

TOTAL = 10_000


def stream(tag: str, total: int = TOTAL) -> tuple[list[RecordSubmitted], set[str]]:
    """The records, every 20th one invalid in one of three ways; and the ids of the invalid ones."""
    breakers = [{"age": 5}, {"elevel": 9}, {"salary": None}]
    events, invalid = [], set()
    for i in range(total):
        record = loan(applicant_id=f"{tag}-{i}", salary=20_000.0 + i)
        if i % 20 == 7:
            record |= breakers[len(invalid) % 3]
            invalid.add(record["applicant_id"])
        events.append(RecordSubmitted(producer="it", dataset="loans", record_id=record["applicant_id"], data=record))
    return events, invalid


async def test_ten_thousand_records_with_a_crash_midway_give_exact_totals(
    kafka: KafkaSettings, store_settings, services
):
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    events, invalid_ids = stream(tag)
    invalid = len(invalid_ids)
    valid = TOTAL - invalid
    mine = lambda body: str(body.get("record_id", "")).startswith(f"{tag}-")  # noqa: E731
    async with (
        TopicReader(kafka.bootstrap_servers, RECORDS_VALIDATED.name) as validated,
        TopicReader(kafka.bootstrap_servers, RECORDS_REJECTED.name) as rejected,
    ):
        send = await producer(kafka.bootstrap_servers)
        try:
            for event in events:
                await send.send(RECORDS_RAW.name, event.to_bytes(), key=event.record_id.encode())
            await send.flush()
        finally:
            await send.stop()
        await validated.collect(lambda found: len(found) >= 3000, timeout=120, where=mine)
        kill_ingestion()  # SIGKILL, mid-stream
        start_ingestion()
        seen_valid = await validated.collect(
            lambda found: len({b["event_id"] for b in found}) >= valid, timeout=240, where=mine
        )
        seen_rejected = await rejected.collect(
            lambda found: len({b["event_id"] for b in found}) >= invalid, timeout=120, where=mine
        )
        await asyncio.sleep(3)  # anything extra would arrive now
        await validated.collect(lambda found: True, timeout=1, where=mine)
        await rejected.collect(lambda found: True, timeout=1, where=mine)
    assert len({b["event_id"] for b in seen_valid}) == valid
    assert len({b["record_id"] for b in seen_valid}) == valid
    assert len({b["event_id"] for b in rejected.seen}) == invalid
    assert all(b["violations"] and b["violations"][0]["rule"] for b in seen_rejected)
    assert {v["rule"] for b in seen_rejected for v in b["violations"]} == {"range", "category", "nullable"}

    catalog = DatasetCatalog(ObjectStore(store_settings))
    async with httpx.AsyncClient(base_url=services["ingestion"], timeout=30) as http:
        sealed = await rows_sealed(http, catalog, tag, valid)
    assert len(sealed) == valid and sealed.is_unique
