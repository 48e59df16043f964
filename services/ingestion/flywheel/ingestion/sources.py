"""What a roller reads and seals: validated records into dataset versions, labels into label batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from flywheel.common.contracts import DataContract
from flywheel.common.offline import LABEL_ID
from flywheel.ingestion.versions import RECORD_ID, seal, seal_labels
from flywheel.schemas import (
    LABELS,
    RECORDS_VALIDATED,
    DatasetManifest,
    DatasetVersioned,
    Event,
    LabelObserved,
    RecordValidated,
)


@dataclass(frozen=True)
class Source:
    """What a roller reads and seals: a topic, its event, the id a version remembers, the sealing."""

    topic: str
    parse: Callable[[bytes], Any]
    key: Callable[[Any], str]
    id_column: str
    seal: Callable[..., tuple[DatasetManifest, bytes]]
    # why each of a dataset's items may not be sealed (None where it may)
    invalid: Callable[[list[Any], DataContract], list[str | None]] = lambda items, contract: [None] * len(items)


def _invalid_labels(labels: list[LabelObserved], contract: DataContract) -> list[str | None]:
    return [_invalid_label(label, contract) for label in labels]


def _invalid_label(label: LabelObserved, contract: DataContract) -> str | None:
    _, problems = contract.check_label(label.label)
    if problems:
        return f"label of dataset {label.dataset!r}: " + "; ".join(p.message for p in problems)
    if label.record_id is None and label.entity_id is None and label.prediction_id is None:
        return "a label names no record, entity or prediction: nothing to join it to"
    return None


def _invalid_records(records: list[RecordValidated], contract: DataContract) -> list[str | None]:
    """Records on records.validated their contract does not hold (not ingestion's own): never sealed, or the
    version could not be written and the roller would stop on it. Checked together, a column at a time."""
    problems = contract.record_problems([record.data for record in records])
    return [
        f"record {record.record_id[:80]!r}: {problem}" if problem else None
        for record, problem in zip(records, problems, strict=True)
    ]


RECORDS_SOURCE = Source(
    RECORDS_VALIDATED.name,
    RecordValidated.model_validate_json,
    lambda r: r.record_id,
    RECORD_ID,
    seal,
    _invalid_records,
)
LABELS_SOURCE = Source(
    LABELS.name, LabelObserved.model_validate_json, lambda e: str(e.event_id), LABEL_ID, seal_labels, _invalid_labels
)


def versioned_event(manifest: DatasetManifest, cause: Event | None) -> DatasetVersioned:
    """The event announcing a version; its id derives from dataset and version, so a re-publish dedups."""
    return DatasetVersioned(
        event_id=uuid5(NAMESPACE_URL, f"flywheel:dataset:{manifest.dataset}:{manifest.version}"),
        producer="ingestion",
        dataset=manifest.dataset,
        version=manifest.version,
        manifest=manifest,
        **(cause.caused() if cause else {}),
    )
