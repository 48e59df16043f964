"""One model's monitor: data drift, concept drift and service health, as events.

Pure state: predictions and labelled predictions go in, ``DriftDetected`` and ``AlertRaised``
events come out; the subscribers do the I/O. The label side (error stream, concept
drift, accuracy or MAE alert) is ``flywheel.monitoring.performance``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Literal

import numpy as np

from flywheel.common.evaluation import p99 as latency_p99
from flywheel.monitoring.alerts import AlertBook, Band
from flywheel.monitoring.concept import Detector, ErrorStream
from flywheel.monitoring.performance import PRODUCER, PerformanceWatch, clock
from flywheel.monitoring.residuals import ResidualStream
from flywheel.monitoring.retrain import RetrainBook
from flywheel.monitoring.statistics import FeatureVerdict, ReferenceProfile, Thresholds
from flywheel.monitoring.window import Window
from flywheel.schemas import AlertRaised, DriftDetected, Event, FeatureDrift, PredictionLabelled, PredictionMade


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
    detector: Detector = "page_hinkley"
    retrain_cooldown_s: float = 600.0
    retrain_again_s: float = 4200.0  # > training's fresh-data wait + serving's longest rollout: no canary superseded
    retrain_on: tuple[str, ...] = ("data", "concept")  # the kinds of drift that ask for a retrain
    renotify_s: float = 3600.0
    accuracy_resolve_drop: float = 0.03
    latency_p99_resolve_ms: float = 400.0
    missing_rate_resolve: float = 0.03
    psi_resolve: float = 0.05
    alert_hold_s: float = 30.0
    mae_margin: float = 0.25  # a regressor's MAE alert: above training's MAE times 1 + this
    mae_resolve_margin: float = 0.15

    def bands(self, train_accuracy: float | None = None, train_mae: float | None = None) -> dict[str, Band]:
        """Each alert's raise and resolve thresholds (accuracy's and MAE's relative to the champion's training).

        MAE's margin is relative: a label's units (kWh, dollars) differ from one dataset to the next.

        >>> MonitorConfig().bands(train_mae=10.0)["mae"]
        Band(raise_at=12.5, resolve_at=11.5, above=True)
        >>> "mae" in MonitorConfig().bands(train_mae=0.0), "mae" in MonitorConfig().bands(train_mae=float("nan"))
        (False, False)
        """
        bands = {
            "latency": Band(self.latency_p99_ms, self.latency_p99_resolve_ms),
            "missing_features": Band(self.missing_rate, self.missing_rate_resolve),
        }
        if train_accuracy is not None:
            floor, back = train_accuracy - self.accuracy_drop, train_accuracy - self.accuracy_resolve_drop
            bands["accuracy"] = Band(floor, back, above=False)
        if train_mae is not None and math.isfinite(train_mae) and train_mae > 0:  # else no unit to judge MAE in
            bands["mae"] = Band(train_mae * (1 + self.mae_margin), train_mae * (1 + self.mae_resolve_margin))
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
    task: Literal["classification", "regression"] = "classification"
    train_mae: float | None = None  # a regressor's, on its out-of-time slice like its run's other metrics

    @cached_property
    def profile(self) -> ReferenceProfile:
        """What every window is compared with, computed once per champion, not once per window."""
        return ReferenceProfile.of(self.features, self.categorical)

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
        self.window = Window(self.config.window_size)
        if self.reference is not None:
            self.window.watch(list(self.reference.features))
        # answers served as champion by another version than the reference's (serving switched to a new
        # champion before this monitor loaded its reference): judged once that version's reference is set.
        # A canary's answers are not: they are the rollout's to judge, not the data-drift window's.
        self.unjudged: deque[PredictionMade] = deque(maxlen=self.config.window_size)
        self.since_check = 0
        self.predictions_seen = 0
        self.labels_joined = 0
        self.last_verdicts: list[FeatureVerdict] = []
        self.retrain = RetrainBook(cooldown_s=self.config.retrain_cooldown_s, again_s=self.config.retrain_again_s)
        self.timeline: list[TimelinePoint] = []
        self.drift_events: list[DriftDetected] = []
        self.performance = PerformanceWatch(
            self.model_name, self.config, self.alerts, self.retrain, self.drift_events, self._mark, self.reference
        )

    # -- reference --------------------------------------------------------------------

    def set_reference(self, reference: Reference, now: float | None = None) -> list[tuple[PredictionMade, list[Event]]]:
        """A new champion: judge traffic against its training data from now on.

        Its answers that came before its reference loaded are judged now, as if they came after:
        the verdicts they make are returned with the answer that filled each check, since no later
        answer may come to trigger them.
        """
        self.reference = reference
        self.window.watch(list(reference.features))
        self.performance.start(reference)
        self.since_check = 0
        self.retrain.reset()
        self.last_verdicts = []
        self._mark("champion", None, f"champion is version {reference.model_version}")
        waiting = [p for p in self.unjudged if reference.judges(p)]
        self.unjudged.clear()
        verdicts = [(prediction, self._judge(prediction, now)) for prediction in waiting]
        return [(prediction, events) for prediction, events in verdicts if events]

    # -- predictions ------------------------------------------------------------------

    def on_prediction(self, prediction: PredictionMade, now: float | None = None) -> list[Event]:
        """Every ``check_every`` served predictions, check data drift."""
        if not prediction.served:
            return []
        if self.reference is not None and not self.reference.judges(prediction):
            if prediction.variant == "champion":
                self.unjudged.append(prediction)
            return []
        return self._judge(prediction, now)

    def _judge(self, prediction: PredictionMade, now: float | None) -> list[Event]:
        """Add a served answer to the window; every ``check_every`` of them, check data drift and health."""
        self._add(prediction)
        self.since_check += 1
        if self.since_check < self.config.check_every or len(self.window) < self.config.min_window:
            return []
        self.since_check = 0
        return [*self._check_data_drift(prediction, now), *self._check_health(prediction, now)]

    def _add(self, prediction: PredictionMade) -> None:
        self.predictions_seen += 1
        self.window.add(prediction.features, prediction.occurred_at, prediction.latency_ms)

    def _check_data_drift(self, cause: PredictionMade, now: float | None) -> list[Event]:
        if self.reference is None:
            return []
        verdicts = self.reference.profile.detect(self.window.columns(), self.config.thresholds)
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
            any(v.retrain for v in drifted) and "data" in self.config.retrain_on and self.retrain.may_ask(clock(now))
        )
        drift = DriftDetected(
            producer=PRODUCER,
            causation_id=cause.event_id,
            dataset=self.reference.dataset,
            model_name=self.model_name,
            kind="data",
            features=[_feature_drift(v, self.config.thresholds) for v in drifted],
            window_start=self.window.times[0],
            window_end=self.window.times[-1],
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
        p99 = float(latency_p99(self.window.latencies))
        missing = self.window.missing_rate()
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

    def on_labelled(self, labelled: PredictionLabelled, now: float | None = None) -> list[Event]:
        """Judge the champion's answer by its late label (``PerformanceWatch``)."""
        served = labelled.served()
        if self.reference and self.reference.model_version and served.model_version != self.reference.model_version:
            return []  # a canary's or old champion's answer: not the champion's error stream
        self.labels_joined += 1
        return self.performance.judge(labelled, served.prediction, now)

    @property
    def errors(self) -> ErrorStream | ResidualStream:
        """The champion's error stream: 0/1 errors of a classifier, residuals of a regressor."""
        return self.performance.stream

    def candidate_ended(self, now: float | None = None) -> None:
        """A candidate of this model was rejected by the registry, or its rollout ended without promoting it
        (rolled back, inconclusive, aborted): the champion it was to replace still serves."""
        self.retrain.candidate_ended(clock(now))

    # -- helpers ----------------------------------------------------------------------

    def _mark(self, kind: str, value: float | None, detail: str) -> None:
        from flywheel.schemas import utc_now

        self.timeline.append(
            TimelinePoint(utc_now(), kind, self.reference.model_version if self.reference else None, value, detail)
        )
        del self.timeline[:-5000]


def _feature_drift(verdict: FeatureVerdict, thresholds: Thresholds) -> FeatureDrift:
    return FeatureDrift(
        feature=verdict.feature,
        statistic="psi",
        value=round(verdict.psi, 6),
        threshold=thresholds.psi_retrain if verdict.retrain else thresholds.psi_alert,
        drifted=True,
    )


__all__ = ["AlertRaised", "ModelMonitor", "MonitorConfig", "Reference"]
