"""One model's monitor: data drift, concept drift and service health, as events.

Pure state: predictions and labels go in, ``DriftDetected`` and ``AlertRaised``
events come out; the subscribers do the I/O.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

import numpy as np

from flywheel.monitoring.alerts import AlertBook, Band
from flywheel.monitoring.concept import ErrorStream
from flywheel.monitoring.retrain import RetrainBook
from flywheel.monitoring.statistics import FeatureVerdict, Thresholds, detect_drift
from flywheel.schemas import AlertRaised, DriftDetected, Event, FeatureDrift, LabelObserved, PredictionMade

PRODUCER = "monitoring"


@dataclass(frozen=True)
class MonitorConfig:
    window_size: int = 1000
    check_every: int = 250
    min_window: int = 200
    thresholds: Thresholds = field(default_factory=Thresholds)
    accuracy_drop: float = 0.05
    min_labels: int = 100
    latency_p99_ms: float = 500.0
    missing_rate: float = 0.05
    detector: str = "page_hinkley"
    retrain_cooldown_s: float = 600.0
    retrain_again_s: float = 4200.0  # > training's fresh-data wait + serving's longest rollout: no canary superseded
    retrain_on: tuple[str, ...] = ("data", "concept")  # the kinds of drift that ask for a retrain
    renotify_s: float = 3600.0
    accuracy_resolve_drop: float = 0.03
    latency_p99_resolve_ms: float = 400.0
    missing_rate_resolve: float = 0.03
    psi_resolve: float = 0.05
    alert_hold_s: float = 30.0

    def bands(self, train_accuracy: float | None = None) -> dict[str, Band]:
        """Each alert's raise and resolve thresholds (accuracy's relative to the training accuracy)."""
        bands = {
            "latency": Band(self.latency_p99_ms, self.latency_p99_resolve_ms),
            "missing_features": Band(self.missing_rate, self.missing_rate_resolve),
        }
        if train_accuracy is not None:
            floor, back = train_accuracy - self.accuracy_drop, train_accuracy - self.accuracy_resolve_drop
            bands["accuracy"] = Band(floor, back, above=False)
        return bands


@dataclass
class Reference:
    """What "normal" is: the features of the data the champion was trained on, by its own feature-set version."""

    model_name: str
    model_version: str | None
    dataset: str
    dataset_version: str | None
    features: dict[str, np.ndarray]
    categorical: set[str]
    train_accuracy: float | None = None
    feature_set_version: str | None = None

    def judges(self, prediction: PredictionMade) -> bool:
        """Whether this reference is the one to compare a prediction's features with: its model's own.

        Another version's answer (a canary's, an old champion's) was computed with that model's
        feature-set version, so it is not compared with this one.
        """
        return not self.model_version or prediction.model_version == self.model_version


@dataclass
class TimelinePoint:
    at: datetime
    kind: str
    model_version: str | None
    value: float | None = None
    detail: str = ""


@dataclass
class ModelMonitor:
    """Watches one model's traffic and labels against its reference."""

    model_name: str
    config: MonitorConfig = field(default_factory=MonitorConfig)
    reference: Reference | None = None

    def __post_init__(self) -> None:
        self.alerts = AlertBook(renotify_s=self.config.renotify_s, producer=PRODUCER, hold_s=self.config.alert_hold_s)
        self.errors = ErrorStream(detector=self.config.detector)  # type: ignore[arg-type]
        self.window: deque[dict[str, Any]] = deque(maxlen=self.config.window_size)
        self.window_times: deque[datetime] = deque(maxlen=self.config.window_size)
        self.latencies: deque[float] = deque(maxlen=self.config.window_size)
        self.pending: OrderedDict[str, tuple[Any, str]] = OrderedDict()
        self.latest_by_entity: dict[str, str] = {}
        self.since_check = 0
        self.predictions_seen = 0
        self.labels_joined = 0
        self.last_verdicts: list[FeatureVerdict] = []
        self.retrain = RetrainBook(cooldown_s=self.config.retrain_cooldown_s, again_s=self.config.retrain_again_s)
        self.timeline: list[TimelinePoint] = []
        self.drift_events: list[DriftDetected] = []

    # -- reference --------------------------------------------------------------------

    def set_reference(self, reference: Reference) -> None:
        """A new champion: judge traffic against its training data from now on."""
        self.reference = reference
        self.window.clear()
        self.window_times.clear()
        self.errors.reset()
        self.since_check = 0
        self.retrain.reset()
        self.last_verdicts = []
        self._mark("champion", None, f"champion is version {reference.model_version}")

    # -- predictions ------------------------------------------------------------------

    def on_prediction(self, prediction: PredictionMade, now: float | None = None) -> list[Event]:
        """Remember a prediction for its label; every ``check_every`` served ones, check data drift."""
        self.pending[prediction.prediction_id] = (prediction.prediction, prediction.model_version)
        if len(self.pending) > 200_000:
            self.pending.popitem(last=False)
        if prediction.entity_id and prediction.served:
            self.latest_by_entity[prediction.entity_id] = prediction.prediction_id
        if not prediction.served or (self.reference is not None and not self.reference.judges(prediction)):
            return []
        self.predictions_seen += 1
        self.window.append(prediction.features)
        self.window_times.append(prediction.occurred_at)
        self.latencies.append(prediction.latency_ms)
        self.since_check += 1
        if self.since_check < self.config.check_every or len(self.window) < self.config.min_window:
            return []
        self.since_check = 0
        return [*self._check_data_drift(prediction, now), *self._check_health(prediction, now)]

    def _check_data_drift(self, cause: PredictionMade, now: float | None) -> list[Event]:
        if self.reference is None:
            return []
        current = {
            name: np.array([_as_float(row.get(name)) for row in self.window]) for name in self.reference.features
        }
        verdicts = detect_drift(self.reference.features, current, self.reference.categorical, self.config.thresholds)
        self.last_verdicts = verdicts
        worst = max((v.psi for v in verdicts), default=0.0)
        self._mark("data_drift", worst, "max PSI")
        events: list[Event] = []
        drifted = [v for v in verdicts if v.alert]
        key = f"data_drift:{self.model_name}"
        if not drifted:  # resolved once every feature's PSI is back under psi_resolve, for alert_hold_s
            calm = worst < self.config.psi_resolve
            message = f"{self.model_name}: no feature drifted (max PSI {worst:.2f})"
            resolved = self.alerts.observe(key, False, calm, "warning", "data_drift", message, {"max_psi": worst}, now)
            return [resolved] if resolved else []
        retrain = (
            any(v.retrain for v in drifted) and "data" in self.config.retrain_on and self.retrain.may_ask(_now(now))
        )
        drift = DriftDetected(
            producer=PRODUCER,
            causation_id=cause.event_id,
            dataset=self.reference.dataset,
            model_name=self.model_name,
            kind="data",
            features=[_feature_drift(v, self.config.thresholds) for v in drifted],
            window_start=self.window_times[0],
            window_end=self.window_times[-1],
            window_size=len(self.window),
            reference_version=self.reference.dataset_version,
            model_version=self.reference.model_version,
            retrain=retrain,
        )
        events.append(drift)
        self.drift_events.append(drift)
        names = ", ".join(f"{v.feature} (PSI {v.psi:.2f})" for v in drifted)
        alert = self.alerts.observe(
            key,
            True,
            False,
            "critical" if retrain else "warning",
            "data_drift",
            f"{self.model_name}: data drift in {names}",
            {"drift_event_id": str(drift.event_id), "features": [v.feature for v in drifted], "max_psi": worst},
            now,
            **drift.caused(),
        )
        if alert:
            events.append(alert)
        return events

    def _check_health(self, cause: PredictionMade, now: float | None = None) -> list[Event]:
        events: list[Event] = []
        bands = self.config.bands()
        p99 = float(np.percentile(list(self.latencies), 99)) if self.latencies else 0.0
        missing = _missing_rate(self.window)
        checks = [
            ("latency", p99, f"prediction latency p99 {p99:.0f} ms", {"p99_ms": p99}),
            ("missing_features", missing, f"missing-feature rate {missing:.1%}", {"rate": missing}),
        ]
        for kind, value, message, evidence in checks:
            band = bands[kind]
            evidence = {**evidence, "raise_at": band.raise_at, "resolve_at": band.resolve_at}
            alert = self.alerts.observe(
                f"{kind}:{self.model_name}",
                band.breached(value),
                band.cleared(value),
                "warning",
                kind,
                f"{self.model_name}: {message} (alert above {band.raise_at:g}, resolved below {band.resolve_at:g})",
                evidence,
                now,
                **cause.caused(),
            )
            if alert:
                events.append(alert)
        return events

    # -- labels -----------------------------------------------------------------------

    def on_label(self, label: LabelObserved, now: float | None = None) -> list[Event]:
        """Join a late label to its prediction; feed the error stream; raise concept drift."""
        prediction_id = label.prediction_id or self.latest_by_entity.get(label.entity_id or "")
        if prediction_id is None or prediction_id not in self.pending:
            return []
        predicted, version = self.pending.pop(prediction_id)
        if self.reference and self.reference.model_version and version != self.reference.model_version:
            return []  # a canary's or old champion's answer: not the champion's error stream
        self.labels_joined += 1
        wrong = str(predicted) != str(label.label)
        drifted = self.errors.update(wrong)
        accuracy = self.errors.accuracy
        if self.labels_joined % 25 == 0:
            self._mark("accuracy", accuracy, f"rolling accuracy over {self.errors.window_size} labels")
        events: list[Event] = []
        if drifted:
            events += self._concept_drift(label, accuracy, now)
        events += self._check_performance(label, accuracy, now)
        return events

    def _concept_drift(self, label: LabelObserved, accuracy: float | None, now: float | None) -> list[Event]:
        retrain = "concept" in self.config.retrain_on and self.retrain.may_ask(_now(now))
        error_rate = FeatureDrift(
            feature="error_rate",
            statistic=self.errors.detector_name,
            value=1 - (accuracy or 0.0),
            threshold=self.config.accuracy_drop,
            drifted=True,
        )
        drift = self._concept_event(label, error_rate, retrain)
        self._mark("concept_drift", accuracy, "error stream changed")
        alert = self.alerts.raise_alert(
            f"concept_drift:{self.model_name}",
            "critical",
            "concept_drift",
            f"{self.model_name}: error rate rose (rolling accuracy {accuracy:.1%})"
            + ("; retraining requested" if retrain else ""),
            {"drift_event_id": str(drift.event_id), "rolling_accuracy": accuracy, "labels": self.errors.seen},
            **drift.caused(),
        )
        return [drift, *([alert] if alert else [])]

    def _concept_event(self, label: LabelObserved, evidence: FeatureDrift, retrain: bool) -> DriftDetected:
        """A concept drift of this champion, remembered for ``/drift``."""
        reference = self.reference
        drift = DriftDetected(
            producer=PRODUCER,
            causation_id=label.event_id,
            dataset=label.dataset,
            model_name=self.model_name,
            kind="concept",
            features=[evidence],
            window_size=self.errors.window_size,
            reference_version=reference.dataset_version if reference else None,
            model_version=reference.model_version if reference else None,
            retrain=retrain,
        )
        self.drift_events.append(drift)
        return drift

    def _check_performance(self, label: LabelObserved, accuracy: float | None, now: float | None) -> list[Event]:
        """The accuracy alert: raised below training minus ``accuracy_drop``, resolved above minus the resolve drop."""
        reference = self.reference
        if accuracy is None or reference is None or reference.train_accuracy is None:
            return []
        if self.errors.window_size < self.config.min_labels:
            return []
        band = self.config.bands(reference.train_accuracy)["accuracy"]
        alert = self.alerts.observe(
            f"accuracy:{self.model_name}",
            band.breached(accuracy),
            band.cleared(accuracy),
            "critical",
            "accuracy",
            f"{self.model_name}: accuracy {accuracy:.1%} over the last {self.errors.window_size} labels, training"
            f" {reference.train_accuracy:.1%} (alert below {band.raise_at:.1%}, resolved above {band.resolve_at:.1%})",
            {
                "accuracy": accuracy,
                "train_accuracy": reference.train_accuracy,
                "labels": self.errors.window_size,
                "raise_at": band.raise_at,
                "resolve_at": band.resolve_at,
            },
            now,
            correlation_id=uuid4(),
            causation_id=label.event_id,
        )
        events: list[Event] = [alert] if alert else []
        below = band.breached(accuracy)
        if self.retrain.ask_again(below, _now(now)) and "concept" in self.config.retrain_on:
            events.append(self._still_below(label, accuracy, band.raise_at, now))
        return events

    def candidate_ended(self, now: float | None = None) -> None:
        """A candidate of this model was rejected by the registry, or its rollout ended without promoting it
        (rolled back, inconclusive, aborted): the champion it was to replace still serves."""
        self.retrain.candidate_ended(_now(now))

    def _still_below(self, label: LabelObserved, accuracy: float, floor: float, now: float | None) -> DriftDetected:
        """Ask again (``RetrainBook.ask_again``): the champion is still below its floor, and its error rate
        changes no more, so the drift detector will not fire again."""
        self.retrain.asked(_now(now))  # a request of its own, cooldown or not
        below = FeatureDrift(feature="accuracy", statistic="below_floor", value=accuracy, threshold=floor, drifted=True)
        drift = self._concept_event(label, below, retrain=True)
        self._mark("concept_drift", accuracy, "still below the accuracy floor after a retrain request in vain")
        return drift

    # -- helpers ----------------------------------------------------------------------

    def _mark(self, kind: str, value: float | None, detail: str) -> None:
        from flywheel.schemas import utc_now

        self.timeline.append(
            TimelinePoint(utc_now(), kind, self.reference.model_version if self.reference else None, value, detail)
        )
        del self.timeline[:-5000]


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _as_float(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _missing_rate(rows: deque[dict[str, Any]]) -> float:
    cells = sum(len(r) for r in rows)
    missing = sum(1 for r in rows for v in r.values() if v is None or (isinstance(v, float) and math.isnan(v)))
    return missing / cells if cells else 0.0


def _feature_drift(verdict: FeatureVerdict, thresholds: Thresholds) -> FeatureDrift:
    return FeatureDrift(
        feature=verdict.feature,
        statistic="psi",
        value=round(verdict.psi, 6),
        threshold=thresholds.psi_retrain if verdict.retrain else thresholds.psi_alert,
        drifted=True,
    )


__all__ = ["AlertRaised", "ModelMonitor", "MonitorConfig", "Reference"]
