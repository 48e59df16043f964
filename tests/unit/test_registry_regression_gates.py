"""Registry gates for regression models: real fitted regressors scored on a run's held-out slices of raw records,
against the mean (the trivial baseline) and the champion, on rmse by default, with margins in the label's units
taken as fractions of the reference's error; classifiers keep their gates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from flywheel.common.evaluation import score_model
from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import GateSpec
from flywheel.registry.gates import (
    SliceFigures,
    baseline_gate,
    before_gate,
    champion_gate,
    chance_allowance,
    sampling_allowance,
    threshold_gates,
)
from flywheel.registry.modelstore import GATE_FIGURES, GATE_SPEC, STATUS
from flywheel.registry.registrar import Registrar
from flywheel.registry.scoring import Scorer, baseline_metrics, labelled
from flywheel.registry.settings import RegistrySettings
from flywheel.schemas import Lineage, ModelApproved, ModelRejected, ModelTrained
from tests.unit.test_registry_oot_gates import SliceStore
from tests.unit.test_registry_oot_gates import records as loans_records
from tests.unit.test_registry_oot_gates import run as classifier_run

PRICE = "price"


def houses(n: int, seed: int, turned: bool = False) -> pd.DataFrame:
    """Raw records of house prices (about 200 ± 47, in thousands); ``turned``: after a drift, x2 lowers the price."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    price = 200.0 + 30.0 * x1 + (-30.0 if turned else 30.0) * x2 + rng.normal(scale=20.0, size=n)
    return pd.DataFrame(
        {
            "id": [f"h{seed}-{i}" for i in range(n)],
            "ts": pd.date_range("1999-01-01", periods=n, freq="h", tz="UTC").astype(str),
            "x1": x1,
            "x2": x2,
            PRICE: price,
        }
    )


def feature_set(*inputs: str) -> FeatureSet:
    features = [{"name": i, "input": i} for i in inputs]
    return FeatureSet(feature_set="f", dataset="houses", entity_key="id", timestamp="ts", features=features)


def run(
    store: SliceStore,
    run_id: str,
    train: pd.DataFrame,
    slices: dict[str, pd.DataFrame],
    estimator=None,
    inputs: tuple[str, ...] = ("x1", "x2"),
    shuffled: bool = False,
    spec: str = "model",
) -> ModelTrained:
    """Fit a regressor on ``train``, log its slices, report its metrics and the mean's as training does."""
    features = feature_set(*inputs)
    x, y = features.frame(train), train[PRICE].to_numpy(dtype=float)
    if shuffled:
        y = np.random.default_rng(0).permutation(y)
    scorer = Scorer((estimator or LinearRegression()).fit(x, y), features)
    store.models[run_id] = scorer
    paths = {name: f"eval/{name}.parquet" for name in slices}
    for name, frame in slices.items():
        store.frames[(run_id, paths[name])] = frame
    recent = slices["recent"]
    x_recent, y_recent = features.frame(recent), recent[PRICE].to_numpy(dtype=float)
    mean = DummyRegressor(strategy="mean").fit(x, y)  # the trivial baseline: the mean of the training rows
    baseline = {f"baseline_{k}": v for k, v in score_model(mean, x_recent, y_recent).items()}
    lineage = Lineage(
        dataset="houses",
        dataset_version="v1",
        code_version="c",
        model_spec=spec,
        seed=1,
        label=PRICE,
        task="regression",
        eval_slices=paths,
    )
    return ModelTrained(
        producer="training",
        model_name="prices",
        run_id=run_id,
        model_uri=f"models:/m-{run_id}",
        metrics={**scorer.score(recent.drop(columns=[PRICE]), recent[PRICE]), **baseline},
        lineage=lineage,
        duration_s=1.0,
    )


class Specs:
    """A datasets directory with the houses regression spec (no gates: the registry's) and variants with gates."""

    SPEC = {
        "model_name": "prices",
        "dataset": "houses",
        "label": PRICE,
        "task": "regression",
        "estimator": {"path": "sklearn.linear_model.LinearRegression"},
    }

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "houses").mkdir()
        self.add("model", {})

    def add(self, name: str, gates: dict) -> None:
        (self.root / f"houses/{name}.yaml").write_text(yaml.safe_dump({**self.SPEC, "gates": gates}))


@pytest.fixture
def specs(tmp_path) -> Specs:
    return Specs(tmp_path)


def registrar(store: SliceStore, specs: Specs, **settings) -> Registrar:
    settings = RegistrySettings(datasets_dir=specs.root, **settings)
    return Registrar(store, catalog=None, settings=settings)


def only(events, kind):
    [event] = [e for e in events if isinstance(e, kind)]
    return event


def gate_named(gates, name):
    [gate] = [g for g in gates if g.gate == name]
    return gate


# -- the pure parts ---------------------------------------------------------------------------------


def test_regression_labels_are_read_as_values_and_the_baseline_is_the_mean():
    frame = pd.DataFrame({"x": [1, 2, 3, 4], PRICE: [2.5, None, 4.0, 7.5]})
    _, labels = labelled(frame, PRICE, "regression")
    assert labels.tolist() == [2.5, 4.0, 7.5]  # not truncated to class numbers
    baseline = baseline_metrics(labels, "regression")
    assert baseline["rmse"] == pytest.approx(np.std([2.5, 4.0, 7.5])) and baseline["r2"] == 0.0
    assert baseline["mae"] == pytest.approx(np.mean(np.abs(np.array([2.5, 4.0, 7.5]) - 14 / 3)))


def test_margins_on_errors_in_the_label_s_units_are_fractions_of_the_reference_and_r2_s_are_absolute():
    recent = SliceFigures("recent", 10_000, {"rmse": 95.0, "r2": 0.30}, champion={"rmse": 100.0, "r2": 0.31})
    assert champion_gate("rmse", recent, 0.0, "1").passed  # 95 <= 100: not worse
    assert not champion_gate("rmse", recent, 0.06, "1").passed  # must be 6% lower: 94
    assert champion_gate("rmse", recent, 0.05, "1").threshold == pytest.approx(95.0)
    assert champion_gate("rmse", recent, -0.10, "1").threshold == pytest.approx(110.0)  # a tolerance of 10%
    assert champion_gate("r2", recent, -0.02, "1").threshold == pytest.approx(0.29)  # r2: absolute
    # the same 1% margin asks for the same relative gain whatever the label's scale (dollars or thousands)
    for scale in (1.0, 1000.0):
        at = SliceFigures("recent", 10_000, {"rmse": 0.985 * scale}, baseline={"rmse": 1.0 * scale})
        assert baseline_gate("rmse", at, 0.01).threshold == pytest.approx(
            scale * (1 - 0.01 - chance_allowance("rmse", at))
        )
        assert baseline_gate("rmse", at, 0.01).passed


def test_the_chance_allowance_on_errors_is_what_chance_correlation_explains_and_shrinks_with_the_rows():
    small = SliceFigures("recent", 100, {}, baseline={"rmse": 10.0, "r2": 0.0})
    large = SliceFigures("recent", 10_000, {}, baseline={"rmse": 10.0, "r2": -0.5})
    assert chance_allowance("r2", small) == pytest.approx(2.326**2 / 100)
    assert chance_allowance("rmse", small) == pytest.approx(1 - np.sqrt(1 - 2.326**2 / 100))
    assert chance_allowance("rmse", large) < chance_allowance("rmse", small) / 50
    assert chance_allowance("r2", large) == pytest.approx(1.5 * 2.326**2 / 10_000)  # of the baseline's error


def test_the_sampling_allowance_on_errors_is_relative_and_log_loss_still_gets_none():
    assert sampling_allowance("rmse", 10.0, 10.0, 400) == pytest.approx(sampling_allowance("rmse", 1e4, 1e4, 400))
    assert sampling_allowance("rmse", 10.0, 10.0, 1600) == pytest.approx(
        sampling_allowance("rmse", 10.0, 10.0, 400) / 2
    )
    assert 0 < sampling_allowance("mae", 10.0, 10.0, 400) < 0.1
    assert sampling_allowance("log_loss", 0.5, 0.4, 400) == 0.0
    assert sampling_allowance("rmse", float("nan"), 10.0, 400) == 0.0
    at = SliceFigures("before", 400, {"rmse": 10.5}, champion={"rmse": 10.0})
    gate = before_gate("rmse", at, 0.0, "1")  # within the noise of two errors on 400 rows
    assert gate.passed and "sampling allowance" in gate.message and "fractions of the champion's rmse" in gate.message


def test_thresholds_on_errors_are_ceilings_and_on_r2_a_floor():
    recent = SliceFigures("recent", 400, {"rmse": 20.0, "mae": 16.0, "r2": 0.8})
    gates = threshold_gates(recent, {"rmse": 25.0, "mae": 15.0, "r2": 0.85})
    assert [g.passed for g in gates] == [True, False, False]
    assert [g.message for g in gates] == [
        "rmse 20.0000 <= 25.0000 on recent (400 rows)",
        "mae 16.0000 > 15.0000 on recent (400 rows)",
        "r2 0.8000 < 0.8500 on recent (400 rows)",
    ]


def test_the_registry_s_defaults_are_per_task_and_its_thresholds_apply_to_the_task_that_reports_them():
    settings = RegistrySettings(thresholds={"f1": 0.8, "r2": 0.5})
    assert settings.default_gates("regression") == GateSpec(
        primary_metric="rmse", thresholds={"r2": 0.5}, baseline_margin=0.01, min_improvement=0.0, before_tolerance=0.1
    )
    classification = settings.default_gates("classification")
    assert classification.primary_metric == "balanced_accuracy" and classification.thresholds == {"f1": 0.8}
    assert settings.default_gates() == classification
    assert RegistrySettings(regression_primary_metric="r2").default_gates("regression").primary_metric == "r2"
    with pytest.raises(ValidationError, match="not a classification metric"):
        RegistrySettings(primary_metric="rmse")
    with pytest.raises(ValidationError, match="not a regression metric"):
        RegistrySettings(regression_primary_metric="accuracy")


# -- the registrar on real regressors and slices -----------------------------------------------------


async def test_a_good_first_regressor_becomes_champion_with_the_default_gate_on_rmse(specs):
    store = SliceStore()
    candidate = run(store, "r1", houses(1500, 1), {"recent": houses(400, 2)})
    approval = only(await registrar(store, specs).on_trained(candidate), ModelApproved)
    assert store.aliases("prices") == {"champion": "1"}
    assert [g.gate for g in approval.gates] == ["beats_baseline:rmse", "beats_champion:rmse"]
    baseline = gate_named(approval.gates, "beats_baseline:rmse")
    assert baseline.slice == "recent" and baseline.reference == pytest.approx(candidate.metrics["baseline_rmse"])
    assert baseline.value < 0.5 * baseline.reference  # the price is mostly explained: far below the mean's error
    tags = store.versions["prices"]["1"].tags
    assert json.loads(tags[GATE_SPEC])["primary_metric"] == "rmse"
    figures = json.loads(tags[GATE_FIGURES])["recent"]
    assert figures["candidate"]["r2"] > 0.7 and set(figures["baseline"]) == {"rmse", "mae", "r2"}


@pytest.mark.parametrize(
    "estimator, shuffled",
    [(LinearRegression(), True), (DummyRegressor(strategy="mean"), False)],
    ids=["shuffled", "mean"],
)
async def test_a_regressor_no_better_than_the_mean_is_rejected_with_the_figures_that_say_why(
    specs, estimator, shuffled
):
    store = SliceStore()
    useless = run(store, "r1", houses(1500, 1), {"recent": houses(400, 2)}, estimator=estimator, shuffled=shuffled)
    rejection = only(await registrar(store, specs).on_trained(useless), ModelRejected)
    assert rejection.failed_gates == ["beats_baseline:rmse"] and rejection.champion_version is None
    gate = gate_named(rejection.gates, "beats_baseline:rmse")
    assert gate.reference == pytest.approx(useless.metrics["baseline_rmse"])
    assert gate.value >= gate.reference * 0.99  # within a point of the mean: no better than it
    assert gate.message.startswith(f"rmse {gate.value:.4f} > {gate.threshold:.4f} = trivial baseline (the mean) ")
    assert "on recent (400 rows) (margin 1% + chance allowance" in gate.message
    assert gate.message.endswith("fractions of the baseline's rmse)")
    assert store.versions["prices"]["1"].tags[STATUS] == "rejected" and store.aliases("prices") == {}


async def test_without_a_reported_baseline_the_mean_is_the_slice_s_own(specs):
    store = SliceStore()
    recent = houses(400, 2)
    trained = run(store, "r1", houses(1500, 1), {"recent": recent})
    unreported = trained.model_copy(
        update={"metrics": {k: v for k, v in trained.metrics.items() if "baseline" not in k}}
    )
    approval = only(await registrar(store, specs).on_trained(unreported), ModelApproved)
    gate = gate_named(approval.gates, "beats_baseline:rmse")
    assert gate.reference == pytest.approx(np.std(recent[PRICE]))  # the slice's own mean: the least error of a constant


async def test_a_regressor_worse_than_the_champion_on_recent_is_rejected_unless_its_spec_tolerates_it(specs):
    store = SliceStore()
    recent = houses(400, 3)
    r = registrar(store, specs)
    await r.on_trained(run(store, "r1", houses(1500, 1), {"recent": recent}))
    weaker = run(store, "r2", houses(1500, 2), {"recent": recent}, inputs=("x1",))  # misses x2
    rejection = only(await r.on_trained(weaker), ModelRejected)
    assert rejection.failed_gates == ["beats_champion:rmse"] and rejection.champion_version == "1"
    gate = gate_named(rejection.gates, "beats_champion:rmse")
    champion_alone = store.models["r1"].score(recent.drop(columns=[PRICE]), recent[PRICE])["rmse"]
    assert gate.reference == pytest.approx(champion_alone) and gate.value > 1.3 * gate.reference
    assert gate.message.startswith(
        f"rmse {gate.value:.4f} > {champion_alone:.4f} = champion v1 {champion_alone:.4f} +0% "
    )
    # a spec may tolerate a relative shortfall: at most 90% higher RMSE than the champion
    specs.add("tolerant", {"min_improvement": -0.9})
    approval = only(
        await r.on_trained(run(store, "r3", houses(1500, 2), {"recent": recent}, inputs=("x1",), spec="tolerant")),
        ModelApproved,
    )
    tolerated = gate_named(approval.gates, "beats_champion:rmse")
    assert tolerated.threshold == pytest.approx(1.9 * champion_alone) and "+90%" in tolerated.message
    assert store.aliases("prices") == {"champion": "1", "challenger": "3"}


async def test_a_drift_retrain_that_forgets_the_old_concept_fails_the_before_gate_by_its_relative_tolerance(specs):
    old, new = houses(1500, 1), houses(1500, 2, turned=True)
    store = SliceStore()
    r = registrar(store, specs)
    await r.on_trained(run(store, "r1", old, {"recent": houses(400, 5)}))
    slices = {"recent": houses(400, 3, turned=True), "before": houses(400, 4)}
    rejection = only(await r.on_trained(run(store, "r2", new, slices)), ModelRejected)
    assert rejection.failed_gates == ["holds_before:rmse"]
    before = gate_named(rejection.gates, "holds_before:rmse")
    allowance = sampling_allowance("rmse", before.value, before.reference, 400)
    assert before.threshold == pytest.approx(before.reference * (1 + 0.10 + allowance))
    assert before.slice == "before" and "champion v1" in before.message
    assert "(tolerance 10% + sampling allowance" in before.message and "of the champion's rmse" in before.message
    assert gate_named(rejection.gates, "beats_champion:rmse").passed  # far better on the new concept
    # a retrain on the same concept holds the old one within the tolerance (and may be 5% off the champion: noise)
    specs.add("retrain", {"min_improvement": -0.05})
    same_concept = {"recent": houses(400, 7), "before": houses(400, 4)}
    same = only(await r.on_trained(run(store, "r3", houses(1500, 6), same_concept, spec="retrain")), ModelApproved)
    assert gate_named(same.gates, "holds_before:rmse").passed
    specs.add("forgetful", {"before_tolerance": 5.0})  # a spec that accepts a real change of concept: 500% higher
    approval = only(await r.on_trained(run(store, "r4", new, slices, spec="forgetful")), ModelApproved)
    assert gate_named(approval.gates, "holds_before:rmse").passed


async def test_a_regression_spec_s_thresholds_on_errors_are_ceilings_and_on_r2_a_floor(specs):
    store = SliceStore()
    specs.add("strict", {"thresholds": {"rmse": 1000.0, "mae": 1.0, "r2": 0.99}})
    trained = run(store, "r1", houses(1500, 1), {"recent": houses(400, 2)}, spec="strict")
    rejection = only(await registrar(store, specs).on_trained(trained), ModelRejected)
    assert rejection.failed_gates == ["threshold:mae", "threshold:r2"]
    assert gate_named(rejection.gates, "threshold:rmse").message.startswith("rmse ")


async def test_the_registry_s_thresholds_apply_only_to_the_task_that_reports_them(specs):
    thresholds = {"f1": 0.99, "r2": 0.99}
    store = SliceStore()
    regressor = run(store, "r1", houses(1500, 1), {"recent": houses(400, 2)})
    rejection = only(await registrar(store, specs, thresholds=thresholds).on_trained(regressor), ModelRejected)
    assert rejection.failed_gates == ["threshold:r2"]
    loans = SliceStore()
    classifier = classifier_run(loans, "r1", loans_records(1500, 1), {"recent": loans_records(400, 2)})
    events = await registrar(loans, specs, thresholds=thresholds).on_trained(classifier)
    rejected = only(events, ModelRejected)  # unchanged: balanced accuracy against the majority class, f1 floor
    assert rejected.failed_gates == ["threshold:f1"]
    assert gate_named(rejected.gates, "beats_baseline:balanced_accuracy").passed


async def test_a_champion_of_the_other_task_cannot_judge_a_regressor_and_says_so(specs):
    store = SliceStore()
    recent = houses(400, 2)
    champion = Scorer(LogisticRegression().fit(recent[["x1", "x2"]], recent[PRICE] > 200), feature_set("x1", "x2"))
    store.models["r0"] = champion
    store.register("prices", "models:/m-r0", "r0", {STATUS: "approved"})
    store.set_alias("prices", "champion", "1")
    rejection = only(
        await registrar(store, specs).on_trained(run(store, "r1", houses(1500, 1), {"recent": recent})), ModelRejected
    )
    assert rejection.failed_gates == ["beats_champion:rmse"]
    gate = gate_named(rejection.gates, "beats_champion:rmse")
    assert "champion v1 could not be compared" in gate.message
    assert "is a classification model and the candidate a regression one" in gate.message
