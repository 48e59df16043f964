"""Ingestion's domain metrics."""

from collections import Counter

from prometheus_client import Counter as CounterMetric
from prometheus_client import Gauge

from flywheel.schemas import RecordRejected, RecordValidated

RECORDS = CounterMetric(
    "flywheel_ingestion_records_total", "Records validated or rejected.", ["dataset", "outcome", "source"]
)

VERSIONS = CounterMetric("flywheel_ingestion_versions_sealed_total", "Dataset versions sealed.", ["dataset"])
RECOVERIES = CounterMetric(
    "flywheel_ingestion_roller_recoveries_total", "Times the roller failed and resumed from its checkpoints."
)
BUFFERED = Gauge("flywheel_ingestion_buffered_rows", "Validated rows waiting for the next version.", ["dataset"])


def count_outcome(outcome: RecordValidated | RecordRejected, *, source: str) -> None:
    count_outcomes([outcome], source=source)


def count_outcomes(outcomes: list[RecordValidated | RecordRejected], *, source: str) -> None:
    """Count a batch's outcomes, one increment per dataset and verdict (each ``labels`` call takes a lock)."""
    counted = Counter((o.dataset, "validated" if isinstance(o, RecordValidated) else "rejected") for o in outcomes)
    for (dataset, verdict), n in counted.items():
        RECORDS.labels(dataset, verdict, source).inc(n)
