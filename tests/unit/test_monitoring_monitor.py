"""The monitor on a realistic stream: a model trained on Agrawal, labels arriving late."""

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from river.datasets import synth
from sklearn.ensemble import HistGradientBoostingClassifier

from flywheel.common.featuresets import load_feature_set
from flywheel.monitoring.monitor import ModelMonitor, MonitorConfig, Reference
from flywheel.monitoring.reference import categorical_features
from flywheel.schemas import AlertRaised, DriftDetected, PredictionMade
from tests.support.labelled import labelled

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
FEATURES = load_feature_set(DATASETS, "loans")


def agrawal(function: int, seed: int, n: int) -> list[tuple[dict, int]]:
    return list(itertools.islice(synth.Agrawal(classification_function=function, seed=seed), n))


@pytest.fixture(scope="module")
def trained():
    rows = agrawal(0, seed=1, n=5000)
    X = np.array(FEATURES.matrix([x for x, _ in rows]))
    y = np.array([label for _, label in rows])
    model = HistGradientBoostingClassifier(random_state=0).fit(X, y)
    reference = Reference(
        model_name="loans-approval",
        model_version="1",
        dataset="loans",
        dataset_version="v1",
        features={name: X[:, i] for i, name in enumerate(FEATURES.names)},
        categorical=categorical_features(FEATURES, DATASETS),
        train_accuracy=float(model.score(X, y)),
    )
    return model, reference


def serve_and_label(monitor: ModelMonitor, model, rows, start: datetime, mutate=None, clock: float = 0.0) -> list:
    """Score each record like serving would, then deliver its label; collect what the monitor publishes.
    The monitor's clock is ``clock`` plus one second a record."""
    published = []
    for i, (x, label) in enumerate(rows):
        x = mutate(x) if mutate else x
        features = dict(zip(FEATURES.names, FEATURES.vector(x), strict=True))
        predicted = int(model.predict(np.array([list(features.values())]))[0])
        prediction = PredictionMade(
            producer="serving",
            dataset="loans",
            prediction_id=str(uuid.uuid4()),
            model_name="loans-approval",
            model_version="1",
            variant="champion",
            prediction=predicted,
            features=features,
            latency_ms=2.0,
            occurred_at=start + timedelta(seconds=i),
        )
        published += monitor.on_prediction(prediction, now=clock + i)
        published += monitor.on_labelled(labelled([prediction], label), now=clock + i)
    return published


def test_a_stable_stream_raises_no_drift_and_no_alert(trained):
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig())
    monitor.set_reference(reference)
    published = serve_and_label(monitor, model, agrawal(0, seed=7, n=5000), datetime(2026, 1, 1, tzinfo=UTC))
    assert [e for e in published if isinstance(e, DriftDetected)] == []
    assert [e for e in published if isinstance(e, AlertRaised)] == []
    assert monitor.errors.accuracy > 0.9
    assert monitor.last_verdicts and not any(v.alert for v in monitor.last_verdicts)


def test_abrupt_concept_drift_is_detected_within_a_few_dozen_labels_and_requests_one_retrain(trained):
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig())
    monitor.set_reference(reference)
    serve_and_label(monitor, model, agrawal(0, seed=8, n=1000), datetime(2026, 1, 1, tzinfo=UTC))
    published, labels_until_detection = [], None
    for i, row in enumerate(agrawal(2, seed=9, n=400)):  # one labelled record at a time: when does it fire?
        at = datetime(2026, 1, 2, tzinfo=UTC) + timedelta(seconds=i)
        published += serve_and_label(monitor, model, [row], at, clock=1000.0 + i)
        if labels_until_detection is None and any(isinstance(e, DriftDetected) for e in published):
            labels_until_detection = i + 1
    drifts = [e for e in published if isinstance(e, DriftDetected)]
    assert drifts and labels_until_detection is not None, "concept drift was not detected"
    first = drifts[0]
    assert first.kind == "concept" and first.retrain
    assert labels_until_detection <= 60, labels_until_detection
    assert sum(d.retrain for d in drifts) == 1, "a persisting drift must request one retrain per champion"
    alerts = [e for e in published if isinstance(e, AlertRaised) and e.kind == "concept_drift"]
    assert len(alerts) == 1 and alerts[0].causation_id == first.event_id


def test_a_shifted_feature_distribution_is_data_drift_naming_the_feature(trained):
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig(check_every=250))
    monitor.set_reference(reference)

    def richer(x: dict) -> dict:
        return {**x, "salary": x["salary"] * 3, "commission": x["commission"]}

    published = serve_and_label(
        monitor, model, agrawal(0, seed=10, n=1000), datetime(2026, 1, 1, tzinfo=UTC), mutate=richer
    )
    data_drifts = [e for e in published if isinstance(e, DriftDetected) and e.kind == "data"]
    assert data_drifts
    drifted = {f.feature for f in data_drifts[0].features}
    assert "salary" in drifted and "age" not in drifted
    assert data_drifts[0].retrain and data_drifts[0].reference_version == "v1"
    alerts = [e for e in published if isinstance(e, AlertRaised) and e.kind == "data_drift"]
    assert len(alerts) == 1, "a persisting data drift is one alert, not one per check"


def test_a_dataset_that_retrains_on_concept_drift_only_alerts_on_data_drift_and_keeps_its_retrain(trained):
    """``retrain_on: [concept]`` (rain's seasons): data drift alerts without spending the one retrain per
    champion, and the concept drift that follows still asks for it."""
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig(check_every=250, retrain_on=("concept",)))
    monitor.set_reference(reference)

    def richer(x: dict) -> dict:
        return {**x, "salary": x["salary"] * 3}

    start = datetime(2026, 1, 1, tzinfo=UTC)
    published = serve_and_label(monitor, model, agrawal(0, seed=10, n=1000), start, mutate=richer)
    data_drifts = [e for e in published if isinstance(e, DriftDetected) and e.kind == "data"]
    assert data_drifts and not any(d.retrain for d in data_drifts)
    assert [e for e in published if isinstance(e, AlertRaised) and e.kind == "data_drift"]
    published = serve_and_label(monitor, model, agrawal(2, seed=9, n=400), start + timedelta(days=1))
    concept = [e for e in published if isinstance(e, DriftDetected) and e.kind == "concept"]
    assert concept and concept[0].retrain


def test_a_champion_still_below_its_floor_a_cooldown_after_a_retrain_that_did_not_replace_it_asks_again(trained):
    """The drift detector fires on a change; a retrain that was rejected leaves the champion as bad as before,
    with no further change to detect. ``retrain_again_s`` later (not a mere cooldown: a canary may still be
    running then), still below its accuracy floor, the monitor asks again."""
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig(retrain_cooldown_s=300, retrain_again_s=400))
    monitor.set_reference(reference)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    serve_and_label(monitor, model, agrawal(0, seed=8, n=500), start)
    published = serve_and_label(monitor, model, agrawal(2, seed=9, n=600), start + timedelta(days=1))  # 600 s
    asked = [e for e in published if isinstance(e, DriftDetected) and e.retrain]
    assert len(asked) == 2, [(e.features[0].statistic, e.retrain) for e in asked]
    again = asked[1]
    assert again.features[0].feature == "accuracy" and again.features[0].statistic == "below_floor"
    assert again.features[0].value < again.features[0].threshold
    monitor.set_reference(reference)  # a new champion: no request of its own yet, so nothing to ask again
    assert monitor.retrain.requested_at is None


def test_a_candidate_that_ended_in_vain_lets_a_champion_still_below_its_floor_ask_again_at_once(trained):
    """A rejected candidate, or a rollout ended without promotion, answers the request: the monitor need
    not wait ``retrain_again_s`` to ask again, once per candidate that ended after its request."""
    model, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig(retrain_again_s=100_000))
    monitor.set_reference(reference)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    serve_and_label(monitor, model, agrawal(0, seed=8, n=500), start)
    published = serve_and_label(monitor, model, agrawal(2, seed=9, n=400), start + timedelta(days=1), clock=500)
    [asked] = [e for e in published if isinstance(e, DriftDetected) and e.retrain]
    assert asked.features[0].statistic != "below_floor"  # the detector's own request
    monitor.candidate_ended(now=900.0)
    published = serve_and_label(monitor, model, agrawal(2, seed=10, n=200), start + timedelta(days=2), clock=901)
    [again] = [e for e in published if isinstance(e, DriftDetected) and e.features[0].statistic == "below_floor"]
    assert again.retrain and again.features[0].value < again.features[0].threshold
    published = serve_and_label(monitor, model, agrawal(2, seed=11, n=200), start + timedelta(days=3), clock=1101)
    asked_again = [e for e in published if isinstance(e, DriftDetected) and e.features[0].statistic == "below_floor"]
    assert not asked_again  # no candidate ended since (the detector itself may ask, a cooldown after its last)


def test_slow_predictions_and_missing_features_raise_service_health_alerts(trained):
    _, reference = trained
    monitor = ModelMonitor("loans-approval", MonitorConfig(check_every=50, min_window=50))
    monitor.set_reference(reference)
    rng = random.Random(0)
    published = []
    for i in range(100):
        features = {name: (None if rng.random() < 0.2 else 1.0) for name in FEATURES.names}
        published += monitor.on_prediction(
            PredictionMade(
                producer="serving",
                dataset="loans",
                prediction_id=str(i),
                model_name="loans-approval",
                model_version="1",
                variant="champion",
                prediction=1,
                features=features,
                latency_ms=900.0,
            ),
            now=float(i),  # one a second: checked at 49 s and 99 s, the condition held past the 30 s hold
        )
    kinds = {e.kind for e in published if isinstance(e, AlertRaised)}
    assert {"latency", "missing_features"} <= kinds
    latency = next(e for e in published if isinstance(e, AlertRaised) and e.kind == "latency")
    assert "p99 900 ms" in latency.message and latency.evidence["resolve_at"] == 400.0


def test_a_new_champions_answers_that_come_before_its_reference_are_judged_once_it_loads():
    """Serving may switch to a new champion before monitoring has loaded that champion's reference:
    the answers in between are held, then judged against the new reference, not dropped; if they
    fill a check, its verdict comes with the reference, since no later answer may come. The answers
    v2 gave as a canary before are not held: the rollout judged them, the drift window does not."""

    def reference(version: str) -> Reference:
        return Reference("m", version, "loans", "v", {"x": np.arange(100.0)}, set(), train_accuracy=0.9)

    def answer(version: str, i: int, variant: str = "champion") -> PredictionMade:
        return PredictionMade(
            producer="t",
            dataset="loans",
            prediction_id=f"{version}-{variant}-{i}",
            model_name="m",
            model_version=version,
            variant=variant,
            prediction=1,
            features={"x": float(i)},
            latency_ms=1.0,
        )

    monitor = ModelMonitor("m", MonitorConfig(window_size=50, check_every=5, min_window=5))
    assert monitor.set_reference(reference("1")) == []
    for i in range(4):
        monitor.on_prediction(answer("1", i))
        monitor.on_prediction(answer("2", 90 + i, "candidate"))  # v2's canary
    for i in range(70, 77):  # v2 answers before monitoring heard of v2, far from its training data
        monitor.on_prediction(answer("2", i))
    assert len(monitor.window) == 4 and not monitor.last_verdicts
    caused = monitor.set_reference(reference("2"))
    assert [row["x"] for row in monitor.window] == [float(i) for i in range(70, 77)]
    assert not monitor.unjudged
    assert [v.feature for v in monitor.last_verdicts] == ["x"]
    assert monitor.since_check == 2  # the check came at the fifth held answer
    [(filled, verdicts)] = caused  # the fifth held answer filled the one check
    assert filled.prediction_id == "2-champion-74"
    assert {type(e).__name__ for e in verdicts} >= {"DriftDetected"}, verdicts


def test_the_window_keeps_its_last_rows_columns_and_missing_cells_as_answers_come():
    import random
    from datetime import datetime

    from flywheel.monitoring.window import Window

    rng = random.Random(7)
    window, rows = Window(50), []
    window.watch(["a", "b"])
    for i in range(180):
        row = {name: rng.choice([None, float("nan"), rng.gauss(0, 1)]) for name in rng.sample("abc", rng.randint(0, 3))}
        window.add(row, datetime(2026, 1, 1), float(i))
        rows.append(row)
        last = rows[-50:]
        cells = [v for r in last for v in r.values()]
        missing = sum(1 for v in cells if v is None or v != v)
        assert window.missing_rate() == (missing / len(cells) if cells else 0.0)
        for name in ("a", "b"):  # a missing or null feature is NaN
            expected = np.sort(np.array([r.get(name) for r in last], dtype=float))
            assert np.array_equal(np.sort(window.columns()[name]), expected, equal_nan=True)
    assert list(window) == rows[-50:] and list(window.latencies) == [float(i) for i in range(130, 180)]


def test_a_new_champion_with_other_features_is_judged_on_its_own_columns_and_latencies_go_on():
    rng = np.random.default_rng(5)

    def answer(version: str, i: int, features: dict[str, float]) -> PredictionMade:
        return PredictionMade(
            producer="t",
            dataset="d",
            prediction_id=f"{version}-{i}",
            model_name="m",
            model_version=version,
            variant="champion",
            prediction=1,
            features=features,
            latency_ms=float(i),
        )

    def reference(version: str, names: list[str]) -> Reference:
        return Reference("m", version, "d", version, {n: rng.normal(size=2000) for n in names}, set())

    monitor = ModelMonitor("m", MonitorConfig(window_size=100, check_every=50, min_window=50))
    monitor.set_reference(reference("1", ["x", "y"]))
    for i in range(100):
        monitor.on_prediction(answer("1", i, {"x": rng.normal(), "y": rng.normal()}))
    assert [v.feature for v in monitor.last_verdicts] == ["x", "y"] and not any(v.alert for v in monitor.last_verdicts)
    monitor.set_reference(reference("2", ["y", "z"]))
    assert len(monitor.window) == 0 and list(monitor.window.latencies)[-1] == 99.0
    for i in range(100):
        monitor.on_prediction(answer("2", i, {"y": rng.normal(), "z": rng.normal(3.0)}))
    assert [(v.feature, v.alert) for v in monitor.last_verdicts] == [("y", False), ("z", True)]
