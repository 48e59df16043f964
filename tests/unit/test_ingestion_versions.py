"""Sealing dataset versions: content addressing, the size/age rules, the manifest."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from flywheel.common.contracts import load_contracts
from flywheel.ingestion.versions import Buffered, seal
from flywheel.schemas import RecordValidated
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
