"""Sealing dataset versions: content addressing, the size/age rules, the manifest."""

from __future__ import annotations

import asyncio
import io
import random
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

import httpx
import pandas as pd
import pytest
from aiokafka import TopicPartition
from fastapi import FastAPI

from flywheel.common.contracts import load_contracts
from flywheel.common.datasets import DatasetCatalog
from flywheel.ingestion.datasets_http import create_dataset_router
from flywheel.ingestion.roller import Roller, versioned_event
from flywheel.ingestion.versions import RECORD_ID, Buffered, merge_offsets, seal
from flywheel.schemas import RECORDS_VALIDATED, RecordValidated
from tests.support.auth import DEV_CREDENTIALS, OPERATOR
from tests.unit.test_ingestion_kafka import loan

CONTRACT = load_contracts(Path(__file__).resolve().parents[2] / "datasets")["loans"]
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def validated(i: int, **overrides) -> RecordValidated:
    data = loan(
        applicant_id=f"a-{i}", applied_at=f"2026-01-01T10:{i % 60:02d}:00+00:00", salary=1000.0 * i, **overrides
    )
    return RecordValidated(
        producer="t",
        dataset="loans",
        record_id=f"r-{i}",
        entity_id=f"a-{i}",
        event_time=data["applied_at"],
        data=data,
        contract_version="1.0",
    )


def sealed(records, parent=None, offsets=None):
    return seal(records, CONTRACT, parent=parent, offsets=offsets or {"0": 10}, bucket="b", created_at=NOW)


def test_the_same_records_in_any_order_give_the_same_version_and_bytes() -> None:
    records = [validated(i) for i in range(50)]
    shuffled = random.Random(3).sample(records, len(records))
    (first, data), (second, again) = sealed(records), sealed(shuffled)
    assert first.version == second.version and data == again
    assert first.content_hash.startswith(first.version)
    assert sealed(records[:-1])[0].version != first.version


def test_the_manifest_names_rows_schema_time_range_quality_and_parent() -> None:
    records = [validated(i) for i in range(10)] + [validated(10, approved=None)]
    parent, _ = sealed(records[:5], offsets={"0": 5, "1": 3})
    manifest, _ = sealed(records, parent=parent, offsets={"0": 12})
    assert manifest.row_count == 11 and manifest.parent_version == parent.version
    assert manifest.columns["salary"] == "float64" and manifest.columns["age"] == "Int64"
    assert manifest.time_min.minute == 0 and manifest.time_max.minute == 10
    assert manifest.quality["approved"].null_rate == 1 / 11
    assert manifest.quality["salary"].max == 10_000.0 and manifest.quality["salary"].min == 0.0
    assert manifest.quality["elevel"].mean == 2.0
    assert manifest.source_offsets == {"0": 12, "1": 3}  # the checkpoint carries over partitions not touched
    assert manifest.uri == f"s3://b/datasets/loans/{manifest.version}/data.parquet"


def test_a_buffer_is_due_at_its_row_count_or_age_whichever_first() -> None:
    buffer = Buffered()
    assert not buffer.due(now=100.0, max_rows=3, max_age_s=10)
    buffer.add(validated(1), partition=0, offset=7, now=100.0)
    assert not buffer.due(now=105.0, max_rows=3, max_age_s=10)
    assert buffer.due(now=110.0, max_rows=3, max_age_s=10)
    buffer.add(validated(2), 1, 3, 101.0)
    buffer.add(validated(3), 0, 9, 102.0)
    assert buffer.due(now=101.0, max_rows=3, max_age_s=10)
    assert buffer.offsets == {"0": 10, "1": 4}


def test_a_redelivered_record_is_buffered_once() -> None:
    buffer = Buffered()
    assert buffer.add(validated(1), 0, 1, 0.0) is True
    assert buffer.add(validated(1), 0, 1, 0.0) is False
    assert len(buffer.records) == 1


# --- the roller's bookkeeping, with the object store and Kafka faked at the edges ---------------


class MemoryStore:
    """Just enough of ObjectStore for DatasetCatalog: bytes by key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> str:
        self.objects[key] = data
        return key

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_parquet(self, key: str):
        return pd.read_parquet(io.BytesIO(self.objects[key]))


class FakeConsumer:
    def __init__(self) -> None:
        self.positions: dict[int, int] = {}

    async def beginning_offsets(self, partitions):
        return {tp: 0 for tp in partitions}

    def seek(self, tp, offset: int) -> None:
        self.positions[tp.partition] = offset


def roller_on(store: MemoryStore, published: list, *, fail_publish: bool = False) -> Roller:
    async def publish(event) -> None:
        if fail_publish:
            raise ConnectionError("kafka down")
        published.append(event)

    return Roller(
        DatasetCatalog(store), {"loans": CONTRACT}, publish, "unused:9092", bucket="b", max_rows=1000, max_age_s=60
    )


PARTITIONS = [TopicPartition(RECORDS_VALIDATED.name, p) for p in range(2)]


async def claimed(roller: Roller) -> FakeConsumer:
    consumer = FakeConsumer()
    await roller.claim(consumer, PARTITIONS)
    return consumer


async def feed(roller: Roller, stream: list[tuple[int, int, RecordValidated]]) -> None:
    for partition, offset, record in stream:
        await roller._take_batch(roller.generation, partition, [(offset, record.to_bytes(), None)])


def sealed_ids(store: MemoryStore) -> list[str]:
    catalog = DatasetCatalog(store)
    return [i for m in catalog.manifests("loans") for i in catalog.load("loans", m.version)[RECORD_ID]]


async def test_after_a_crash_the_stream_replayed_from_the_start_is_sealed_exactly_once() -> None:
    store, published = MemoryStore(), []
    stream = [(i % 2, i // 2, validated(i)) for i in range(40)]  # two partitions, offsets 0..19 each
    first = roller_on(store, published)
    await claimed(first)
    await feed(first, stream[:20])
    await first.seal_now("loans")
    await feed(first, stream[20:30])  # buffered, then the process dies
    second = roller_on(store, published)  # a restart: memory gone, the store kept
    consumer = await claimed(second)
    assert consumer.positions == {0: 10, 1: 10}  # resumes past what the first version sealed
    await feed(second, stream)  # a replay from earlier offsets is harmless too
    manifest = await second.seal_now("loans")
    ids = sealed_ids(store)
    assert sorted(ids) == sorted(f"r-{i}" for i in range(40)) and len(ids) == len(set(ids))
    assert manifest.parent_version == published[0].version and manifest.source_offsets == {"0": 20, "1": 20}
    assert [e.event_id for e in published] == [
        versioned_event(m, None).event_id for m in (published[0].manifest, manifest)
    ]


async def test_a_rebalance_drops_the_buffer_and_ignores_batches_fetched_before_it() -> None:
    store, published = MemoryStore(), []
    roller = roller_on(store, published)
    await claimed(roller)
    await feed(roller, [(0, 0, validated(1))])
    stale = roller.generation
    await roller.release()  # partitions revoked: another replica re-reads them from the checkpoint
    assert roller.buffers["loans"].records == {} and await roller.seal_now("loans") is None
    await roller._take_batch(stale, 0, [(1, validated(2).to_bytes(), None)])
    assert roller.buffers["loans"].records == {}
    await claimed(roller)
    await roller._take_batch(stale, 0, [(1, validated(2).to_bytes(), None)])  # fetched before the new assignment
    assert roller.buffers["loans"].records == {}


async def test_a_version_is_sealed_even_when_announcing_it_fails() -> None:
    store, published = MemoryStore(), []
    roller = roller_on(store, published, fail_publish=True)
    await claimed(roller)
    await feed(roller, [(0, 0, validated(1)), (0, 1, validated(2))])
    with patch("flywheel.ingestion.roller._retrying", side_effect=_once):
        manifest = await roller.seal_now("loans")
    assert manifest.row_count == 2 and roller.buffers["loans"].records == {}
    assert DatasetCatalog(store).latest("loans").version == manifest.version


async def _once(call, **_) -> None:
    await call()


def test_checkpoints_merge_per_partition_to_the_furthest() -> None:
    assert merge_offsets({"0": 5, "1": 9}, {"0": 7}, {"2": 1}) == {"0": 7, "1": 9, "2": 1}


async def test_bad_version_names_are_404_not_500() -> None:
    roller = roller_on(MemoryStore(), [])
    app = FastAPI()
    app.include_router(create_dataset_router(roller.catalog, roller, DEV_CREDENTIALS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=OPERATOR) as http:
        for path in (
            "/datasets/loans/versions/%2e%2e",
            "/datasets/loans/versions/" + "a" * 2000,
            "/datasets/x/versions/ab",
        ):
            response = await http.get(path)
            assert response.status_code == 404, (path, response.text)
        assert (await http.get("/datasets/loans/versions/abc/data")).status_code == 404
        assert (await http.post("/datasets/nope/seal")).status_code == 404
        assert (await http.get("/datasets")).json()["loans"]["versions"] == []


async def test_a_claim_the_object_store_refuses_owns_nothing_and_makes_the_roller_start_over() -> None:
    """aiokafka swallows a rebalance listener's exception: the roller keeps it and raises it from its loop."""
    store, published = MemoryStore(), []
    roller = roller_on(store, published)

    def down(prefix: str) -> list[str]:
        raise ConnectionError("minio down")

    store.list_keys = down  # type: ignore[method-assign]
    consumer = await claimed(roller)
    await feed(roller, [(0, 0, validated(0))])
    assert consumer.positions == {} and roller.owned == set() and not roller.buffers["loans"].records
    assert isinstance(roller._claim_failed, ConnectionError)


async def test_a_cancellation_from_inside_the_consumer_restarts_it_and_only_the_services_own_stops_it() -> None:
    """aiokafka may cancel a task of its own under the roller while Kafka is away: the roller must start its
    consumer over, not end silently (out of its group, sealing nothing, still "rolling" on /health)."""
    roller = roller_on(MemoryStore(), [])
    roller.max_backoff_s = 0.01
    starts = 0

    async def consume() -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise asyncio.CancelledError  # from something it awaited, not a cancel of the roller
        await asyncio.sleep(3600)

    roller._consume = consume
    task = asyncio.create_task(roller.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if starts == 2:
            break
    assert starts == 2 and not task.done()
    task.cancel()  # the service stopping: the roller stops with it
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_fetched_batch_is_checked_together_and_each_broken_record_is_dead_lettered_with_its_own_reason():
    store, published, letters = MemoryStore(), [], []

    async def dead_letter(raw, reason: str) -> None:
        letters.append((raw, reason))

    roller = roller_on(store, published)
    roller.dead_letter = dead_letter
    await claimed(roller)
    records = [validated(i) for i in range(6)]
    records[2].data["age"], records[4].data["salary"] = -5, "lots"  # not as ingestion would have passed them
    await roller._take_batch(roller.generation, 0, [(i, r.to_bytes(), f"raw-{i}") for i, r in enumerate(records)])
    assert [raw for raw, _ in letters] == ["raw-2", "raw-4"]
    assert (
        "'r-2'" in letters[0][1] and "age" in letters[0][1] and "'r-4'" in letters[1][1] and "salary" in letters[1][1]
    )
    assert sorted(roller.buffers["loans"].records) == ["r-0", "r-1", "r-3", "r-5"]
