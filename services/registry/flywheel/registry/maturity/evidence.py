"""What the maturity criteria are judged from: plain data the edge gathered from MinIO, MLflow and Kafka."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from flywheel.schemas import AlertRaised, ChampionChanged, DriftDetected, PredictionMade, RecordRejected, RolloutStepped

T = TypeVar("T")


@dataclass(frozen=True)
class DataVersion:
    """A sealed dataset version (``kind`` records) or label batch (``kind`` labels), from its manifest."""

    dataset: str
    version: str
    rows: int
    created_at: datetime | None
    kind: str = "records"
    contract_version: str | None = None


@dataclass(frozen=True)
class TrainedVersion:
    """A registered model version and what its MLflow run recorded."""

    model_name: str
    version: str
    run_id: str
    created_at: datetime
    status: str = "unknown"
    gates: Mapping[str, bool] = field(default_factory=dict)  # gate name -> passed
    champion_at_gate: str | None = None  # the champion it was judged against: a retrain
    trigger: str | None = None  # api, schedule, drift, manual; None: not made by the training service
    dataset: str | None = None
    dataset_version: str | None = None
    params: int = 0
    metrics: int = 0
    code_version: str | None = None
    seed: str | None = None
    fingerprint: str | None = None
    feature_set_version: str | None = None


@dataclass(frozen=True)
class Evidence:
    """Everything the criteria are judged from: dataset manifests, registered versions and their runs, events."""

    datasets: tuple[DataVersion, ...] = ()
    versions: tuple[TrainedVersion, ...] = ()
    rejected: tuple[RecordRejected, ...] = ()
    predictions: tuple[PredictionMade, ...] = ()
    rollouts: tuple[RolloutStepped, ...] = ()
    champions: tuple[ChampionChanged, ...] = ()
    drifts: tuple[DriftDetected, ...] = ()
    alerts: tuple[AlertRaised, ...] = ()

    def of_model(self, name: str) -> Evidence:
        """What concerns one model: its versions, events and alerts, and the datasets its runs trained on."""
        versions = tuple(v for v in self.versions if v.model_name == name)
        datasets = {v.dataset for v in versions}
        return Evidence(
            datasets=tuple(d for d in self.datasets if d.dataset in datasets),
            versions=versions,
            rejected=tuple(r for r in self.rejected if r.dataset in datasets),
            predictions=tuple(p for p in self.predictions if p.model_name == name),
            rollouts=tuple(r for r in self.rollouts if r.model_name == name),
            champions=tuple(c for c in self.champions if c.model_name == name),
            drifts=tuple(d for d in self.drifts if d.model_name == name),
            alerts=tuple(a for a in self.alerts if a.dedup_key.endswith(f":{name}")),  # monitoring's <kind>:<model>
        )

    def since(self, start: datetime) -> Evidence:
        """Only what happened at or after ``start``: what the deployment has shown lately."""

        def recent(items: Iterable[T], when: Callable[[T], datetime | None]) -> tuple[T, ...]:
            return tuple(i for i in items if (at := when(i)) is not None and at >= start)

        def occurred(e: RecordRejected | PredictionMade | RolloutStepped | ChampionChanged) -> datetime:
            return e.occurred_at

        return replace(
            self,
            datasets=recent(self.datasets, lambda d: d.created_at),
            versions=recent(self.versions, lambda v: v.created_at),
            rejected=recent(self.rejected, occurred),
            predictions=recent(self.predictions, occurred),
            rollouts=recent(self.rollouts, occurred),
            champions=recent(self.champions, occurred),
            drifts=recent(self.drifts, lambda d: d.occurred_at),
            alerts=recent(self.alerts, lambda a: a.occurred_at),
        )
