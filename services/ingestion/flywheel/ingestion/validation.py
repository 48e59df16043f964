"""Validating submitted records against their dataset's data contract."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL

from flywheel.common.contracts import DataContract, by_dataset
from flywheel.common.kafka import SeenEvents
from flywheel.schemas import RecordRejected, RecordSubmitted, RecordValidated, Violation, name_id

PRODUCER = "ingestion"


def validate(
    submitted: RecordSubmitted, contracts: dict[str, DataContract], seen_records: SeenEvents
) -> RecordValidated | RecordRejected:
    """Check one record against its contract: a validated record, or a rejection with every reason."""
    return validate_all([submitted], contracts, seen_records)[0]


def validate_all(
    batch: list[RecordSubmitted], contracts: dict[str, DataContract], seen_records: SeenEvents
) -> list[RecordValidated | RecordRejected]:
    """Check each record of a batch against its contract (each dataset's records together, a column at a
    time), then decide each in order: a validated record, or a rejection with every reason.

    An outcome's event id is derived from its submission's, so a redelivered
    submission yields the same event and downstream dedup by ``event_id`` holds.
    """
    checked: list[tuple[dict[str, Any], list[Violation]] | None] = [None] * len(batch)
    for dataset, indexes in by_dataset(batch).items():
        if (contract := contracts.get(dataset)) is not None:
            for i, outcome in zip(indexes, contract.check_many([batch[i].data for i in indexes]), strict=True):
                checked[i] = outcome
    return [_decided(s, contracts, c, seen_records) for s, c in zip(batch, checked, strict=True)]


def _decided(
    submitted: RecordSubmitted,
    contracts: dict[str, DataContract],
    checked: tuple[dict[str, Any], list[Violation]] | None,
    seen_records: SeenEvents,
) -> RecordValidated | RecordRejected:
    outcome_id = name_id(NAMESPACE_URL, f"flywheel:ingestion:{submitted.event_id}")
    envelope = {"event_id": outcome_id, "producer": PRODUCER, **submitted.caused()}
    contract = contracts.get(submitted.dataset)
    if contract is None or checked is None:
        return RecordRejected(
            **envelope,
            dataset=submitted.dataset,
            record_id=submitted.record_id,
            data=submitted.data,
            violations=[
                Violation(
                    column="<dataset>",
                    rule="contract",
                    value=submitted.dataset,
                    message=f"no data contract for dataset {submitted.dataset!r}; known: {sorted(contracts)}",
                )
            ],
        )
    clean, violations = checked
    if not violations and not seen_records.first_time(
        f"{submitted.dataset}/{submitted.record_id}", owner=submitted.event_id
    ):
        violations.append(
            Violation(
                column="record_id",
                rule="duplicate",
                value=submitted.record_id,
                message=f"record {submitted.record_id!r} was already accepted",
            )
        )
    if violations:
        return RecordRejected(
            **envelope,
            dataset=submitted.dataset,
            record_id=submitted.record_id,
            data=submitted.data,
            violations=violations,
            contract_version=contract.version,
        )
    event_time = clean[contract.timestamp]
    return RecordValidated(
        **envelope,
        dataset=submitted.dataset,
        record_id=submitted.record_id,
        entity_id=str(clean[contract.entity_key]),
        event_time=event_time,
        data={k: (v.isoformat() if k == contract.timestamp else v) for k, v in clean.items()},
        contract_version=contract.version,
    )
