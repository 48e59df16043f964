"""Monitoring's domain metrics: drift statistics, accuracy or MAE on labels, reference version."""

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
    name = monitor.model_name
    for verdict in monitor.last_verdicts:
        FEATURE_PSI.labels(name, verdict.feature).set(verdict.psi)
    if monitor.errors.value is not None:
        ROLLING[monitor.errors.figure].labels(name).set(monitor.errors.value)
    for kind in ("data", "concept"):
        DRIFT_EVENTS.labels(name, kind).set(sum(1 for d in monitor.drift_events if d.kind == kind))
    LABELS_JOINED.labels(name).set(monitor.labels_joined)
    if monitor.reference and monitor.reference.model_version and monitor.reference.model_version.isdigit():
        CHAMPION_VERSION.labels(name).set(int(monitor.reference.model_version))
