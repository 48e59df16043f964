"""Ingestion's domain metrics."""

from prometheus_client import Counter, Gauge

from flywheel.schemas import RecordRejected, RecordValidated

RECORDS = Counter(
    "flywheel_ingestion_records_total", "Records validated or rejected.", ["dataset", "outcome", "source"]
)

VERSIONS = Counter("flywheel_ingestion_versions_sealed_total", "Dataset versions sealed.", ["dataset"])
RECOVERIES = Counter(
    "flywheel_ingestion_roller_recoveries_total", "Times the roller failed and resumed from its checkpoints."
)
BUFFERED = Gauge("flywheel_ingestion_buffered_rows", "Validated rows waiting for the next version.", ["dataset"])


def count_outcome(outcome: RecordValidated | RecordRejected, *, source: str) -> None:
    verdict = "validated" if isinstance(outcome, RecordValidated) else "rejected"
    RECORDS.labels(outcome.dataset, verdict, source).inc()
