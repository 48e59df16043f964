"""The monitor of a regressor: its residuals on delayed labels, concept drift and the MAE alert.

The served answers are a value plus gaussian noise of standard deviation ``scale`` (so the
training MAE is about 0.8 of it); a shift multiplies the noise. Run at two scales, as a label
in kWh and one in dollars: the detector judges residuals in units of the training MAE.
"""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.monitoring import performance
from flywheel.monitoring.http import drift_summary
from flywheel.monitoring.metrics import ROLLING_MAE
from flywheel.monitoring.monitor import ModelMonitor, MonitorConfig, Reference
from flywheel.monitoring.reference import judged_by
from flywheel.monitoring.report import render_report
from flywheel.monitoring.settings import MonitoringSettings
from flywheel.monitoring.watch import Watch
from flywheel.schemas import AlertRaised, DriftDetected, Event, PredictionMade
from tests.support.labelled import labelled

MAE_OF_UNIT_NOISE = float(np.sqrt(2 / np.pi))  # the mean of |N(0, 1)|


def reference(scale: float = 1.0) -> Reference:
    return Reference(
        "m", "1", "energy", "v1", features={}, categorical=set(), task="regression", train_mae=MAE_OF_UNIT_NOISE * scale
    )


def regressor(scale: float = 1.0, **config) -> ModelMonitor:
    monitor = ModelMonitor("m", MonitorConfig(**config))
    monitor.set_reference(reference(scale))
    return monitor


SERVED: dict[tuple[int, int], PredictionMade] = {}  # (monitor, i) -> the answer a label is for


def serve(monitor: ModelMonitor, i: int, value: object, now: float) -> list[Event]:
    prediction = SERVED[(id(monitor), i)] = PredictionMade(
        producer="serving",
        dataset="energy",
        prediction_id=f"p{i}",
        model_name="m",
        model_version="1",
        variant="champion",
        prediction=value,  # type: ignore[arg-type]
        features={},
        latency_ms=1.0,
    )
    return monitor.on_prediction(prediction, now=now)


def label(monitor: ModelMonitor, i: int, value: object, now: float) -> list[Event]:
    return monitor.on_labelled(labelled([SERVED.pop((id(monitor), i))], value), now=now)


def stream(monitor: ModelMonitor, rng: np.random.Generator, n: int, noise: float, start: int, scale: float) -> list:
    """``n`` answers, one a second from ``start``, whose labels are off by N(0, noise * scale); what was published."""
    published = []
    for i in range(start, start + n):
        predicted = float(rng.normal(100, 10) * scale)
        published += serve(monitor, i, predicted, now=float(i))
        published += label(monitor, i, predicted + float(rng.normal(0, noise)) * scale, now=float(i))
    return published


def drifts(published: list) -> list[DriftDetected]:
    return [e for e in published if isinstance(e, DriftDetected)]


def mae_alerts(published: list) -> list[AlertRaised]:
    return [e for e in published if isinstance(e, AlertRaised) and e.kind == "mae"]


@pytest.mark.parametrize("scale", [1.0, 50_000.0])
def test_a_stable_residual_stream_raises_nothing_at_any_scale(scale: float) -> None:
    monitor = regressor(scale)
    published = stream(monitor, np.random.default_rng(0), 5000, noise=1.0, start=0, scale=scale)
    assert published == []
    assert monitor.errors.figure == "mae" and monitor.errors.seen == 5000
    assert monitor.errors.value == pytest.approx(MAE_OF_UNIT_NOISE * scale, rel=0.1)


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin"])
@pytest.mark.parametrize("scale", [1.0, 50_000.0])
def test_residuals_that_double_raise_concept_drift_with_a_retrain_and_the_mae_alert(
    scale: float, detector: str
) -> None:
    monitor = regressor(scale, detector=detector)
    rng = np.random.default_rng(1)
    assert stream(monitor, rng, 1000, noise=1.0, start=0, scale=scale) == []
    by_label = [stream(monitor, rng, 1, noise=2.0, start=1000 + i, scale=scale) for i in range(600)]
    published = [event for events in by_label for event in events]

    [drift] = drifts(published)  # one request per champion per cooldown
    assert drift.kind == "concept" and drift.retrain and drift.model_version == "1"
    [evidence] = drift.features
    train_mae = MAE_OF_UNIT_NOISE * scale
    assert (evidence.feature, evidence.statistic) == ("mae", detector)
    assert evidence.threshold == pytest.approx(1.25 * train_mae)  # the MAE alert's level
    assert train_mae < evidence.value < 2 * train_mae  # the rolling MAE: the window still holds the old errors
    labels_until_detection = next(i for i, events in enumerate(by_label) if drifts(events))
    assert labels_until_detection <= 80  # 13 to 58 over 30 seeds, the same at either scale

    [concept_alert] = [e for e in published if isinstance(e, AlertRaised) and e.kind == "concept_drift"]
    assert concept_alert.causation_id == drift.event_id and "rolling MAE" in concept_alert.message
    [alert] = mae_alerts(published)
    assert not alert.resolved and alert.severity == "critical"
    assert alert.evidence["mae"] > alert.evidence["raise_at"] == pytest.approx(1.25 * train_mae)
    assert alert.evidence["train_mae"] == pytest.approx(train_mae)
    assert f"MAE {alert.evidence['mae']:.4g} over the last 500 labels" in alert.message


@pytest.mark.parametrize("hysteresis", [True, False])
def test_the_mae_alert_holds_between_its_thresholds_and_resolves_below_the_lower_one(hysteresis: bool) -> None:
    """Raised above training MAE + 25%; at about + 20% (between the two) it stays open, where a band
    without hysteresis flaps; once the MAE is below + 15% it resolves."""
    monitor = regressor(**({} if hysteresis else {"mae_resolve_margin": 0.25, "alert_hold_s": 0.0}))
    rng = np.random.default_rng(2)
    published = stream(monitor, rng, 1000, noise=1.0, start=0, scale=1.0)
    published += stream(monitor, rng, 800, noise=2.0, start=1000, scale=1.0)
    published += stream(monitor, rng, 500, noise=1.2, start=1800, scale=1.0)  # a window's time to forget the shift
    between = []
    for start in range(2300, 3800, 100):
        published += stream(monitor, rng, 100, noise=1.2, start=start, scale=1.0)
        between.append(monitor.errors.value)
    resolve_at, raise_at = 1.15 * MAE_OF_UNIT_NOISE, 1.25 * MAE_OF_UNIT_NOISE
    assert resolve_at < np.mean(between) < raise_at
    assert min(between) < raise_at  # below the raise threshold at times: an alert without a band resolves
    if not hysteresis:
        assert len(mae_alerts(published)) >= 3, "raised, resolved, raised again: it flaps"
        return
    assert [a.resolved for a in mae_alerts(published)] == [False], "one alert, not resolved between the thresholds"
    assert "mae:m" in monitor.alerts.open

    [resolution] = mae_alerts(stream(monitor, rng, 1000, noise=1.0, start=3800, scale=1.0))
    assert resolution.resolved and resolution.evidence["mae"] < resolution.evidence["resolve_at"]
    assert resolution.evidence["resolve_at"] == pytest.approx(1.15 * MAE_OF_UNIT_NOISE)
    assert resolution.message.startswith(f"resolved: m: MAE {resolution.evidence['mae']:.4g}")
    assert "mae:m" not in monitor.alerts.open


def test_a_regressor_still_above_its_ceiling_after_a_retrain_in_vain_asks_again() -> None:
    monitor = regressor(retrain_again_s=100_000)
    rng = np.random.default_rng(3)
    stream(monitor, rng, 1000, noise=1.0, start=0, scale=1.0)
    [asked] = [d for d in drifts(stream(monitor, rng, 600, noise=2.0, start=1000, scale=1.0)) if d.retrain]
    assert asked.features[0].statistic == "page_hinkley"  # the detector's own request
    monitor.candidate_ended(now=1699.5)
    again = [d for d in drifts(stream(monitor, rng, 200, noise=2.0, start=1700, scale=1.0)) if d.retrain]
    [still] = [d for d in again if d.features[0].statistic == "above_ceiling"]
    assert still.features[0].feature == "mae" and still.features[0].value > still.features[0].threshold
    assert still.features[0].threshold == pytest.approx(1.25 * MAE_OF_UNIT_NOISE)


@pytest.mark.parametrize("bad", ["n/a", "nan", True, None, [1.0], {"kwh": 1.0}])
def test_a_label_that_is_no_number_is_skipped_with_a_log_line(bad: object, monkeypatch) -> None:
    logs: list[tuple[str, dict]] = []
    # the module's own logger, not structlog's global config, which the apps other tests build reconfigure
    monkeypatch.setattr(performance.log, "warning", lambda event, **kw: logs.append((event, kw)))
    monitor = regressor()
    rng = np.random.default_rng(4)
    stream(monitor, rng, 50, noise=1.0, start=0, scale=1.0)
    serve(monitor, 50, 100.0, now=50.0)
    assert label(monitor, 50, bad, now=50.0) == []
    assert monitor.errors.seen == 50
    [(event, fields)] = logs
    assert "label skipped" in event and fields["model"] == "m" and fields["label"] == repr(bad)
    serve(monitor, 51, "high", now=51.0)  # nor does an answer that is no number crash it
    assert label(monitor, 51, 99.0, now=51.0) == [] and monitor.errors.seen == 50
    stream(monitor, rng, 10, noise=1.0, start=52, scale=1.0)
    assert monitor.errors.seen == 60


def test_a_regressors_reference_and_outputs_show_its_mae_and_a_classifiers_its_accuracy() -> None:
    assert judged_by({"flywheel.task": "regression"}, {"mae": 3.0, "rmse": 4.0}) == {
        "task": "regression",
        "train_accuracy": None,
        "train_mae": 3.0,
    }
    assert judged_by({}, {"accuracy": 0.9})["task"] == "classification"  # runs from before the tag

    watch = Watch(MonitorConfig(), lambda name: None)
    watch.monitors["m"] = regressor()
    stream(watch.monitors["m"], np.random.default_rng(5), 100, noise=1.0, start=0, scale=1.0)
    classifier = watch.monitors["c"] = ModelMonitor("c")
    classifier.set_reference(Reference("c", "1", "loans", "v1", features={}, categorical=set(), train_accuracy=0.9))

    regression, classification = drift_summary(watch, "m"), drift_summary(watch, "c")
    assert regression["task"] == "regression" and regression["rolling_accuracy"] is None
    assert regression["rolling_mae"] == pytest.approx(MAE_OF_UNIT_NOISE, rel=0.2)
    assert regression["reference"]["train_mae"] == pytest.approx(MAE_OF_UNIT_NOISE)
    assert classification["task"] == "classification" and classification["rolling_mae"] is None
    assert classification["reference"]["train_accuracy"] == 0.9 and classifier.errors.figure == "accuracy"

    report = render_report(watch)
    assert f"training MAE {MAE_OF_UNIT_NOISE:.4g}" in report and "rolling MAE" in report
    assert "training accuracy 90.0%" in report and "rolling accuracy: n/a" in report
    assert "Blue: rolling MAE" in report

    from flywheel.monitoring.metrics import observe

    observe(watch.monitors["m"])
    assert ROLLING_MAE.labels("m")._value.get() == pytest.approx(regression["rolling_mae"])


def test_the_mae_margins_are_settings_and_the_resolve_one_must_be_the_smaller(monkeypatch) -> None:
    monkeypatch.setenv("MONITORING_MAE_MARGIN", "0.5")
    monkeypatch.setenv("MONITORING_MAE_RESOLVE_MARGIN", "0.2")
    bands = MonitoringSettings().monitor_config().bands(train_mae=2.0)
    assert (bands["mae"].raise_at, bands["mae"].resolve_at) == (3.0, 2.4)
    monkeypatch.setenv("MONITORING_MAE_RESOLVE_MARGIN", "0.6")
    with pytest.raises(ValueError, match="safe side"):
        MonitoringSettings()
