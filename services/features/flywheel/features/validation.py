"""What the online store refuses to fold in: a record its dataset's contract does not hold.

Ingestion validated every record on ``records.validated``, but anyone may write to the topic;
an absurd value (NaN, 1e308, a 10,000-character category) must not reach the statistics.
"""

from __future__ import annotations

from flywheel.common.contracts import DataContract, by_dataset
from flywheel.schemas import RecordValidated


def refusal(record: RecordValidated, contracts: dict[str, DataContract]) -> str | None:
    """Why ``record`` may not be folded in (unknown dataset, contract broken); None when it may.

    >>> contracts = {"d": DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
    ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "x": {"type": "float", "max": 10}})}
    >>> record = RecordValidated(dataset="d", record_id="r", entity_id="a", contract_version="1",
    ...     event_time="2026-01-01T00:00:00Z", data={"id": "a", "ts": "2026-01-01T00:00:00Z", "x": 1e308})
    >>> refusal(record, contracts)
    'record r breaks the contract of d: x=1e+308 outside [None, 10.0]'
    >>> refusal(record.model_copy(update={"dataset": "nope"}), contracts)
    "no data contract for dataset 'nope'; known: ['d']"
    """
    return refusals([record], contracts)[0]


def refusals(records: list[RecordValidated], contracts: dict[str, DataContract]) -> list[str | None]:
    """``refusal`` of each record of a batch, each dataset's records checked together (a column at a time)."""
    found: list[str | None] = [None] * len(records)
    for dataset, indexes in by_dataset(records).items():
        contract = contracts.get(dataset)
        if contract is None:
            for i in indexes:
                found[i] = f"no data contract for dataset {dataset!r}; known: {sorted(contracts)}"
            continue
        for i, problem in zip(indexes, contract.record_problems([records[i].data for i in indexes]), strict=True):
            if problem:
                found[i] = f"record {records[i].record_id} breaks the contract of {dataset}: {problem}"
    return found
