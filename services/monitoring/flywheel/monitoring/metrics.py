"""Monitoring's domain metrics: drift statistics, accuracy or MAE on labels, reference version."""

import functools

from prometheus_client import Gauge

from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.monitor import ModelMonitor

FEATURE_PSI = Gauge("flywheel_monitoring_feature_psi", "PSI of a feature in the current window.", ["model", "feature"])
ROLLING_ACCURACY = Gauge("flywheel_monitoring_rolling_accuracy", "Accuracy on delayed labels.", ["model"])
ROLLING_MAE = Gauge("flywheel_monitoring_rolling_mae", "A regressor's MAE on delayed labels.", ["model"])
ROLLING = {"accuracy": ROLLING_ACCURACY, "mae": ROLLING_MAE}
DRIFT_EVENTS = Gauge("flywheel_monitoring_drift_events", "Drift events published so far.", ["model", "kind"])
LABELS_JOINED = Gauge("flywheel_monitoring_labels_joined", "Labels joined to predictions.", ["model"])
JOIN_REMEMBERED = Gauge("flywheel_monitoring_join_answers", "Answers the join holds for their labels.")
JOIN_WAITING = Gauge("flywheel_monitoring_join_labels_waiting", "Labels the join read before their answer.")
JOIN_GAVE_UP = Gauge("flywheel_monitoring_join_labels_given_up", "Labels whose answer never came within the wait.")
CHAMPION_VERSION = Gauge("flywheel_monitoring_reference_model_version", "Champion version monitored.", ["model"])


def observe_join(join: LabelJoin) -> None:
    JOIN_REMEMBERED.set(join.held)
    JOIN_WAITING.set(join.waiting)
    JOIN_GAVE_UP.set(join.given_up)


def observe(monitor: ModelMonitor) -> None:
    """The monitor's figures to its gauges, when they change: after a drift check and on every label."""
    name = monitor.model_name
    for verdict in monitor.last_verdicts:
        _child(FEATURE_PSI, name, verdict.feature).set(verdict.psi)
    if monitor.errors.value is not None:
        _child(ROLLING[monitor.errors.figure], name).set(monitor.errors.value)
    for kind in ("data", "concept"):
        _child(DRIFT_EVENTS, name, kind).set(sum(1 for d in monitor.drift_events if d.kind == kind))
    _child(LABELS_JOINED, name).set(monitor.labels_joined)
    if monitor.reference and monitor.reference.model_version and monitor.reference.model_version.isdigit():
        _child(CHAMPION_VERSION, name).set(int(monitor.reference.model_version))


@functools.cache
def _child(gauge: Gauge, *labels: str) -> Gauge:
    """``gauge.labels(*labels)``, once: it takes a lock and checks every value, ~8 µs, which on every prediction
    was most of what monitoring spent on it (17 lookups of a model with 13 features)."""
    return gauge.labels(*labels)
