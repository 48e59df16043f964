"""The label side of a model's monitor: the champion's answers judged by their delayed labels.

A classifier is judged by its accuracy on 0/1 errors (``ErrorStream``), a regressor by the mean
absolute error of its residuals (``ResidualStream``): the champion's run says which
(``Reference.task``). Either stream's detector raises concept drift; the figure over its window
has an alert with hysteresis against the champion's own training figure (accuracy below training
minus ``accuracy_drop``, MAE above training times 1 + ``mae_margin``); and a champion still past
that threshold after a retrain request in vain asks again (``RetrainBook.ask_again``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import structlog

from flywheel.common.evaluation import answer_error
from flywheel.monitoring.alerts import AlertBook, Band
from flywheel.monitoring.concept import ErrorStream
from flywheel.monitoring.residuals import ResidualStream
from flywheel.monitoring.retrain import RetrainBook
from flywheel.schemas import DriftDetected, Event, FeatureDrift
from flywheel.schemas import PredictionLabelled as Labelled

if TYPE_CHECKING:
    from flywheel.monitoring.monitor import MonitorConfig, Reference

log = structlog.get_logger(__name__)

PRODUCER = "monitoring"
Stream = ErrorStream | ResidualStream
NAMES = {"accuracy": "accuracy", "mae": "MAE"}
PAST = {"accuracy": "below_floor", "mae": "above_ceiling"}  # a champion still past its threshold


def clock(now: float | None) -> float:
    """The time of a check: the caller's (tests, replays) or the wall clock."""
    return time.time() if now is None else now


def shown(figure: str, value: float) -> str:
    """A figure as messages print it: accuracy as a percentage, MAE in the label's units.

    >>> shown("accuracy", 0.85123), shown("mae", 1234.5678), shown("mae", 0.0123456)
    ('85.1%', '1235', '0.01235')
    """
    return f"{value:.1%}" if figure == "accuracy" else f"{value:.4g}"


def performance_message(model: str, figure: str, value: float, trained: float, band: Band, labels: int) -> str:
    """The performance alert's text, with the figure now, training's, and the band's two thresholds.

    >>> band = Band(raise_at=12.5, resolve_at=11.5)
    >>> performance_message("m", "mae", 14.0, 10.0, band, 500)
    'm: MAE 14 over the last 500 labels, training 10 (alert above 12.5, resolved below 11.5)'
    """
    worse, better = ("above", "below") if band.above else ("below", "above")
    return (
        f"{model}: {NAMES[figure]} {shown(figure, value)} over the last {labels} labels, training"
        f" {shown(figure, trained)} (alert {worse} {shown(figure, band.raise_at)},"
        f" resolved {better} {shown(figure, band.resolve_at)})"
    )


def new_stream(reference: Reference | None, config: MonitorConfig) -> Stream:
    """The error stream of a champion's task (a classifier's until there is a champion)."""
    if reference is not None and reference.task == "regression":
        return ResidualStream(scale=reference.train_mae, detector=config.detector)
    return ErrorStream(detector=config.detector)


@dataclass
class PerformanceWatch:
    """One model's champion against its delayed labels: error stream, concept drift, performance alert.

    Its alerts, retrain requests, drift events and timeline (``mark``) are the monitor's own, shared.
    """

    model_name: str
    config: MonitorConfig
    alerts: AlertBook
    retrain: RetrainBook
    drift_events: list[DriftDetected]
    mark: Callable[[str, float | None, str], None]
    reference: Reference | None = None
    stream: Stream = field(init=False)

    def __post_init__(self) -> None:
        self.stream = new_stream(self.reference, self.config)

    def start(self, reference: Reference) -> None:
        """A new champion: a fresh stream of its task, in the units of its own training figure."""
        self.reference = reference
        self.stream = new_stream(reference, self.config)

    @property
    def trained(self) -> float | None:
        """The champion's training figure the stream's is compared with."""
        if self.reference is None:
            return None
        return self.reference.train_mae if self.stream.figure == "mae" else self.reference.train_accuracy

    def band(self) -> Band | None:
        """The performance alert's thresholds; None without a training figure to set them by."""
        reference = self.reference
        if reference is None:
            return None
        return self.config.bands(reference.train_accuracy, reference.train_mae).get(self.stream.figure)

    def judge(self, label: Labelled, predicted: Any, now: float | None = None) -> list[Event]:
        """One label joined to the champion's answer: feed the error stream; raise concept drift and alerts."""
        error = answer_error(self.reference.task if self.reference else "classification", predicted, label.label)
        if error is None:
            log.warning(
                "label skipped: a regressor's answer and label must be numbers",
                model=self.model_name,
                label=repr(label.label)[:80],
                prediction=repr(predicted)[:80],
                correlation_id=str(label.correlation_id),
            )
            return []
        drifted = self.stream.update(error)
        value = self.stream.value
        figure = self.stream.figure
        if self.stream.seen % 25 == 0:
            self.mark(figure, value, f"rolling {NAMES[figure]} over {self.stream.window_size} labels")
        events = self._concept_drift(label, value, now) if drifted else []
        return events + self._check_performance(label, value, now)

    def _concept_drift(self, label: Labelled, value: float | None, now: float | None) -> list[Event]:
        retrain = "concept" in self.config.retrain_on and self.retrain.may_ask(clock(now))
        drift = self._concept_event(label, self._detector_evidence(value or 0.0), retrain)
        self.mark("concept_drift", value, "error stream changed")
        figure = self.stream.figure
        alert = self.alerts.raise_alert(
            f"concept_drift:{self.model_name}",
            "critical",
            "concept_drift",
            self._drift_message(value or 0.0) + ("; retraining requested" if retrain else ""),
            {"drift_event_id": str(drift.event_id), f"rolling_{figure}": value, "labels": self.stream.seen},
            **drift.caused(),
        )
        return [drift, *([alert] if alert else [])]

    def _detector_evidence(self, value: float) -> FeatureDrift:
        """What the detector saw: a classifier's error rate, or a regressor's rolling MAE against its alert level."""
        detector = self.stream.detector_name
        if self.stream.figure == "accuracy":
            return FeatureDrift(
                feature="error_rate",
                statistic=detector,
                value=1 - value,
                threshold=self.config.accuracy_drop,
                drifted=True,
            )
        band = self.band()  # a regressor's detector runs only with a training MAE, so there is a band
        ceiling = band.raise_at if band is not None else value
        return FeatureDrift(feature="mae", statistic=detector, value=value, threshold=ceiling, drifted=True)

    def _drift_message(self, value: float) -> str:
        if self.stream.figure == "accuracy":
            return f"{self.model_name}: error rate rose (rolling accuracy {value:.1%})"
        trained = self.trained
        training = f", training {shown('mae', trained)}" if trained is not None else ""
        return f"{self.model_name}: absolute errors rose (rolling MAE {shown('mae', value)}{training})"

    def _concept_event(self, label: Labelled, evidence: FeatureDrift, retrain: bool) -> DriftDetected:
        """A concept drift of this champion, remembered for ``/drift``."""
        reference = self.reference
        drift = DriftDetected(
            producer=PRODUCER,
            causation_id=label.event_id,
            dataset=label.dataset,
            model_name=self.model_name,
            kind="concept",
            features=[evidence],
            window_size=self.stream.window_size,
            reference_version=reference.dataset_version if reference else None,
            model_version=reference.model_version if reference else None,
            retrain=retrain,
        )
        self.drift_events.append(drift)
        return drift

    def _check_performance(self, label: Labelled, value: float | None, now: float | None) -> list[Event]:
        """The performance alert: raised past the band's raise threshold, resolved back past its resolve one."""
        band, trained = self.band(), self.trained
        if value is None or band is None or trained is None or self.stream.window_size < self.config.min_labels:
            return []
        figure, labels = self.stream.figure, self.stream.window_size
        alert = self.alerts.observe(
            f"{figure}:{self.model_name}",
            band.breached(value),
            band.cleared(value),
            "critical",
            figure,
            performance_message(self.model_name, figure, value, trained, band, labels),
            {
                figure: value,
                f"train_{figure}": trained,
                "labels": labels,
                "raise_at": band.raise_at,
                "resolve_at": band.resolve_at,
            },
            now,
            correlation_id=uuid4(),
            causation_id=label.event_id,
        )
        events: list[Event] = [alert] if alert else []
        if self.retrain.ask_again(band.breached(value), clock(now)) and "concept" in self.config.retrain_on:
            events.append(self._still_past(label, value, band.raise_at, now))
        return events

    def _still_past(self, label: Labelled, value: float, threshold: float, now: float | None) -> DriftDetected:
        """Ask again (``RetrainBook.ask_again``): the champion is still past its threshold, and its errors
        change no more, so the drift detector will not fire again."""
        self.retrain.asked(clock(now))  # a request of its own, cooldown or not
        figure = self.stream.figure
        past = FeatureDrift(feature=figure, statistic=PAST[figure], value=value, threshold=threshold, drifted=True)
        drift = self._concept_event(label, past, retrain=True)
        where = "below the accuracy floor" if figure == "accuracy" else "above the MAE ceiling"
        self.mark("concept_drift", value, f"still {where} after a retrain request in vain")
        return drift
