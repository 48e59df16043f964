"""Labels are data: the label roller seals outcomes into immutable label batches, holding back a
label whose record is not known yet (at most the wait), dead-lettering what cannot be joined."""

from __future__ import annotations

import time

from flywheel.common.datasets import DatasetCatalog
from flywheel.ingestion.roller import Roller
from flywheel.ingestion.sources import LABELS_SOURCE
from flywheel.schemas import LabelObserved
from tests.unit.test_ingestion_versions import CONTRACT, MemoryStore, claimed, feed, roller_on, validated

LABELS = DatasetCatalog.labels


def label(i: int, value: int = 1, **fields) -> LabelObserved:
    named = {"record_id": f"r-{i}", "entity_id": f"a-{i}", **fields}
    return LabelObserved(producer="t", dataset="loans", label=value, **named)


def label_roller(
    store: MemoryStore, records: Roller, published: list, letters: list, wait_s: float = 60, learn=None
) -> Roller:
    async def publish(event) -> None:
        published.append(event)

    async def dead_letter(raw, reason: str) -> None:
        letters.append((raw, reason))

    return Roller(
        LABELS(store),
        {"loans": CONTRACT},
        publish,
        "unused:9092",
        bucket="b",
        max_rows=1000,
        max_age_s=60,
        source=LABELS_SOURCE,
        ready=lambda e: e.record_id is None or records.knows(e.dataset, e.record_id),
        wait_s=wait_s,
        dead_letter=dead_letter,
        learn=learn,
    )


async def take(roller: Roller, stream: list[tuple[int, int, LabelObserved]]) -> None:
    for partition, offset, event in stream:
        await roller._take_batch(
            roller.generation, partition, [(offset, event.to_bytes(), f"raw@{partition}:{offset}")]
        )


async def test_labels_of_known_records_are_sealed_into_a_label_batch_beside_the_versions() -> None:
    store, published, letters = MemoryStore(), [], []
    records = roller_on(store, published)
    await claimed(records)
    await feed(records, [(0, i, validated(i)) for i in range(3)])
    labels = label_roller(store, records, published, letters)
    await claimed(labels)
    await take(labels, [(0, i, label(i, value=i % 2)) for i in range(3)])
    manifest = await labels.seal_now("loans")
    assert manifest.kind == "labels" and manifest.row_count == 3 and not letters
    assert manifest.uri == f"s3://b/labels/loans/{manifest.version}/data.parquet"
    frame = LABELS(store).load("loans", manifest.version)
    assert frame["record_id"].tolist() == ["r-0", "r-1", "r-2"] and frame["label"].tolist() == [0, 1, 0]
    assert DatasetCatalog(store).manifests("loans") == []  # records are still buffered: labels are their own data


async def test_a_label_before_its_record_waits_for_it_and_holds_the_checkpoint_back() -> None:
    store, published, letters = MemoryStore(), [], []
    records = roller_on(store, published)
    await claimed(records)
    labels = label_roller(store, records, published, letters)
    await claimed(labels)
    await take(labels, [(0, 0, label(7)), (0, 1, label(8, record_id=None))])  # r-7 unknown; the other by entity
    first = await labels.seal_now("loans")
    assert first.row_count == 1 and first.source_offsets == {"0": 0}  # the held label is read again after a crash
    await feed(records, [(0, 0, validated(7))])  # its record arrives
    second = await labels.seal_now("loans")
    assert second.row_count == 1 and second.source_offsets == {"0": 2} and not letters
    restarted = label_roller(store, records, published, letters)  # a crash now: nothing is sealed twice
    consumer = await claimed(restarted)
    assert consumer.positions == {0: 2, 1: 0}


async def test_a_label_for_a_record_never_seen_is_dead_lettered_after_the_wait_with_the_reason() -> None:
    store, published, letters = MemoryStore(), [], []
    records = roller_on(store, published)
    await claimed(records)
    labels = label_roller(store, records, published, letters, wait_s=0.05)
    await claimed(labels)
    await take(labels, [(0, 0, label(99))])
    time.sleep(0.06)
    assert await labels.seal_now("loans") is None
    assert letters == [("raw@0:0", "labels: waited 0.05 s for what it names: no record 'r-99' of dataset 'loans'")]
    assert labels.waiting["loans"].held == {}


async def test_an_outcome_outside_the_contract_or_joinable_to_nothing_is_dead_lettered_at_once() -> None:
    store, published, letters = MemoryStore(), [], []
    records = roller_on(store, published)
    await claimed(records)
    labels = label_roller(store, records, published, letters)
    await claimed(labels)
    nothing = LabelObserved(producer="t", dataset="loans", label=1)
    await take(labels, [(0, 0, label(1, value=7)), (0, 1, nothing)])
    assert [raw for raw, _ in letters] == ["raw@0:0", "raw@0:1"]
    assert "approved" in letters[0][1] and "nothing to join it to" in letters[1][1]
    assert not labels.buffers["loans"].records


async def test_a_label_whose_record_another_replica_sealed_is_sealed_once_the_roller_learns_of_it() -> None:
    """Records and labels are assigned by two groups: the replica holding a label's partition may not be the one
    that sealed its record. It learns of the versions sealed since from the store, while labels wait."""
    store, published, letters = MemoryStore(), [], []
    here, there = roller_on(store, published), roller_on(store, published)
    await claimed(here)
    await claimed(there)
    labels = label_roller(store, here, published, letters, learn=here.learn)
    await claimed(labels)
    await feed(there, [(0, 0, validated(7))])
    await there.seal_now("loans")  # r-7 is sealed by the other replica, after this one's claim
    await take(labels, [(0, 0, label(7))])
    assert not here.knows("loans", "r-7") and labels.waiting["loans"].held
    manifest = await labels.seal_now("loans")
    assert manifest is not None and manifest.row_count == 1 and not letters
