"""Ingestion's domain metrics."""

from prometheus_client import Counter

from flywheel.schemas import RecordRejected, RecordValidated

RECORDS = Counter(
    "flywheel_ingestion_records_total", "Records validated or rejected.", ["dataset", "outcome", "source"]
)


def count_outcome(outcome: RecordValidated | RecordRejected, *, source: str) -> None:
    verdict = "validated" if isinstance(outcome, RecordValidated) else "rejected"
    RECORDS.labels(outcome.dataset, verdict, source).inc()
