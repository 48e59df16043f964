"""Registry gates per model and out of time: the default gate (beat the majority class, not worse than the
champion), a model spec's gates over the registry's settings, and champion and candidate scored on the
run's held-out slices, each with its own pinned feature set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression

from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import GateSpec, ModelSpec, load_model_spec
from flywheel.registry.gates import SliceFigures, baseline_gate, before_gate, champion_gate, judge, resolve
from flywheel.registry.modelstore import GATE_FIGURES, GATE_SPEC, STATUS
from flywheel.registry.registrar import Registrar
from flywheel.registry.scoring import Scorer, baseline_metrics
from flywheel.registry.settings import RegistrySettings
from flywheel.schemas import Lineage, ModelApproved, ModelRejected, ModelTrained
from tests.unit.test_registry_gates import FakeStore

LABEL = "approved"
ROOT = Path(__file__).resolve().parents[2]


def records(n: int, seed: int, flipped: bool = False) -> pd.DataFrame:
    """Raw labelled records, about 24% positive; ``flipped``: the concept after a drift (x2's sign turns)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    score = 1.2 * x1 + (-1.2 if flipped else 1.2) * x2 + rng.normal(scale=1.0, size=n)
    return pd.DataFrame(
        {
            "id": [f"e{seed}-{i}" for i in range(n)],
            "ts": pd.date_range("1999-01-01", periods=n, freq="h", tz="UTC").astype(str),
            "x1": x1,
            "x2": x2,
            LABEL: (score > 1.4).astype(int),
        }
    )


def feature_set(*inputs: str, prefix: str = "") -> FeatureSet:
    features = [{"name": f"{prefix}{i}", "input": i} for i in inputs]
    return FeatureSet(feature_set="f", dataset="loans", entity_key="id", timestamp="ts", features=features)


class SliceStore(FakeStore):
    """The fake model store, with runs' slices and fitted models: every model really scores the slices."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[tuple[str, str], pd.DataFrame] = {}
        self.models: dict[str, Scorer] = {}

    def slice(self, run_id: str, artifact: str) -> pd.DataFrame:
        return self.frames[(run_id, artifact)]

    def scorer(self, model_uri: str, run_id: str) -> Scorer:
        return self.models[run_id]


def run(
    store: SliceStore,
    run_id: str,
    train: pd.DataFrame,
    slices: dict[str, pd.DataFrame],
    features: FeatureSet | None = None,
    shuffled: bool = False,
    name: str = "m",
    spec: str = "model",
) -> ModelTrained:
    """Fit a model on ``train``, log its held-out slices in the store, and say it finished (as training does)."""
    features = features or feature_set("x1", "x2")
    y = train[LABEL].to_numpy()
    if shuffled:
        y = np.random.default_rng(0).permutation(y)
    scorer = Scorer(LogisticRegression().fit(features.frame(train), y), features)
    store.models[run_id] = scorer
    paths = {}
    for slice_name, frame in slices.items():
        paths[slice_name] = f"eval/{slice_name}.parquet"
        store.frames[(run_id, paths[slice_name])] = frame
    recent = slices["recent"]
    metrics = scorer.score(recent.drop(columns=[LABEL]), recent[LABEL]) if len(recent) else {}
    majority = int(y.mean() > 0.5)  # the trivial baseline: always the majority class of the training rows
    lineage = Lineage(
        dataset="loans",
        dataset_version="v1",
        code_version="c",
        model_spec=spec,
        seed=1,
        label=LABEL,
        eval_slices=paths,
    )
    return ModelTrained(
        producer="training",
        model_name=name,
        run_id=run_id,
        model_uri=f"models:/m-{run_id}",
        metrics={**metrics, "baseline_accuracy": float((recent[LABEL] == majority).mean())},
        lineage=lineage,
        duration_s=1.0,
    )


def registrar(store: SliceStore, **settings) -> Registrar:
    return Registrar(store, catalog=None, settings=RegistrySettings(**settings))


def only(events, kind):
    [event] = [e for e in events if isinstance(e, kind)]
    return event


# -- the pure gates ------------------------------------------------------------------------------


def test_a_spec_s_gates_win_over_the_registry_s_defaults_field_by_field():
    defaults = RegistrySettings().default_gates()
    assert defaults == GateSpec(
        primary_metric="balanced_accuracy",
        thresholds={},
        baseline_margin=0.01,
        min_improvement=0.0,
        before_tolerance=0.10,
    )
    declared = GateSpec(primary_metric="log_loss", thresholds={"roc_auc": 0.7}, before_tolerance=1.0)
    gates = resolve(declared, defaults)
    assert (gates.primary_metric, gates.thresholds, gates.baseline_margin, gates.before_tolerance) == (
        "log_loss",
        {"roc_auc": 0.7},
        0.01,
        1.0,
    )
    assert resolve(GateSpec(thresholds={}), RegistrySettings(thresholds={"f1": 0.8}).default_gates()).thresholds == {}


def test_log_loss_is_better_lower_in_every_gate():
    recent = SliceFigures("recent", 300, {"log_loss": 0.40}, baseline={"log_loss": 0.56}, champion={"log_loss": 0.38})
    assert baseline_gate("log_loss", recent, 0.01).passed
    assert not champion_gate("log_loss", recent, 0.0, "1").passed
    assert champion_gate("log_loss", recent, -0.05, "1").passed
    worse_before = SliceFigures("before", 300, {"log_loss": 0.60}, champion={"log_loss": 0.50})
    assert not before_gate("log_loss", worse_before, 0.05, "1").passed
    assert before_gate("log_loss", worse_before, 0.2, "1").passed
    [ceiling] = judge(
        GateSpec(primary_metric="log_loss", thresholds={"log_loss": 0.3}, baseline_margin=0.0),
        {"recent": recent},
        None,
    )[:1]
    assert not ceiling.passed and ceiling.message == "log_loss 0.4000 > 0.3000 on recent (300 rows)"


def test_a_figure_that_cannot_be_computed_fails_its_gate_and_says_so():
    single_class = SliceFigures("recent", 40, {"roc_auc": float("nan")}, baseline={"roc_auc": float("nan")})
    gate = baseline_gate("roc_auc", single_class, 0.01)
    assert not gate.passed and "could not be compared on recent (40 rows)" in gate.message
    unscored = SliceFigures("recent", 40, {"accuracy": 0.9}, champion=None, problem="KeyError: 'x9'")
    gate = champion_gate("accuracy", unscored, 0.0, "4")
    assert not gate.passed and "champion v4 could not be compared" in gate.message and "x9" in gate.message


def test_the_trivial_baseline_is_the_majority_class():
    baseline = baseline_metrics([0] * 76 + [1] * 24)
    assert baseline["accuracy"] == pytest.approx(0.76) and baseline["balanced_accuracy"] == 0.5
    assert baseline["roc_auc"] == 0.5 and baseline["log_loss"] == pytest.approx(0.5511, abs=1e-3)


def test_a_model_spec_declares_its_gates_and_refuses_unknown_ones(tmp_path):
    spec = yaml.safe_load((ROOT / "datasets/loans/model.yaml").read_text())
    (tmp_path / "loans").mkdir()
    gates = {"primary_metric": "balanced_accuracy", "thresholds": {"roc_auc": 0.7}, "baseline_margin": 0.02}
    (tmp_path / "loans/model.yaml").write_text(yaml.safe_dump({**spec, "gates": gates}))
    assert load_model_spec(tmp_path, "loans").gates == GateSpec(**gates)
    assert ModelSpec.model_validate({**spec, "gates": {}}).gates == GateSpec()  # a field left out: the registry's
    for wrong in ({"primary_metric": "mse"}, {"thresholds": {"auc": 0.7}}, {"margin": 0.1}):
        with pytest.raises(ValidationError):
            GateSpec.model_validate(wrong)
    with pytest.raises(ValidationError, match="do not fit a classification model"):  # a regression metric
        ModelSpec.model_validate({**spec, "gates": {"primary_metric": "rmse"}})
    with pytest.raises(ValidationError, match="do not fit a regression model"):
        ModelSpec.model_validate({**spec, "task": "regression", "gates": {"thresholds": {"roc_auc": 0.7}}})


# -- the registrar on real models and slices -------------------------------------------------------


async def test_a_good_first_model_on_imbalanced_data_becomes_champion_with_the_default_gate():
    store = SliceStore()
    candidate = run(store, "r1", records(1500, 1), {"recent": records(400, 2)})
    recent = only(await registrar(store).on_trained(candidate), ModelApproved)
    assert store.aliases("m") == {"champion": "1"}
    [baseline] = [g for g in recent.gates if g.gate == "beats_baseline:balanced_accuracy"]
    assert baseline.slice == "recent" and baseline.reference == 0.5  # the majority class, whatever its share
    assert baseline.value > baseline.reference + 0.01
    # The thresholds the registry used to apply to every model reject this one (its F1 is far below 0.8).
    strict = SliceStore()
    events = await registrar(strict, thresholds={"accuracy": 0.85, "f1": 0.80}).on_trained(
        run(strict, "r1", records(1500, 1), {"recent": records(400, 2)})
    )
    assert "threshold:f1" in only(events, ModelRejected).failed_gates


async def test_a_first_model_no_better_than_the_majority_class_is_rejected_with_the_figures_that_say_why():
    store = SliceStore()
    useless = run(store, "r1", records(1500, 1), {"recent": records(400, 2)}, shuffled=True)
    rejection = only(await registrar(store).on_trained(useless), ModelRejected)
    assert rejection.failed_gates == ["beats_baseline:balanced_accuracy"] and rejection.champion_version is None
    [gate] = [g for g in rejection.gates if not g.passed]
    assert "trivial baseline (majority class)" in gate.message and "on recent (400 rows)" in gate.message
    tags = store.versions["m"]["1"].tags
    assert tags[STATUS] == "rejected" and store.aliases("m") == {}
    figures = json.loads(tags[GATE_FIGURES])["recent"]
    assert figures["rows"] == 400
    assert figures["candidate"]["balanced_accuracy"] <= figures["baseline"]["balanced_accuracy"] + 0.01
    assert json.loads(tags[GATE_SPEC])["primary_metric"] == "balanced_accuracy"


async def test_champion_and_candidate_are_scored_on_the_same_slice_each_with_its_own_feature_set():
    store = SliceStore()
    recent = records(400, 3)
    weak = run(store, "r1", records(1500, 1), {"recent": recent}, features=feature_set("x1", prefix="old_"))
    strong = run(store, "r2", records(1500, 2), {"recent": recent}, features=feature_set("x1", "x2", prefix="new_"))
    r = registrar(store)
    await r.on_trained(weak)
    approval = only(await r.on_trained(strong), ModelApproved)
    assert store.aliases("m") == {"champion": "1", "challenger": "2"}
    [gate] = [g for g in approval.gates if g.gate == "beats_champion:balanced_accuracy"]
    champion_alone = store.models["r1"].score(recent.drop(columns=[LABEL]), recent[LABEL])["balanced_accuracy"]
    assert gate.reference == pytest.approx(champion_alone) and gate.value > gate.reference
    # the other way round: the weak model is judged against the strong champion on the same records
    other = SliceStore()
    r = registrar(other)
    await r.on_trained(run(other, "r2", records(1500, 2), {"recent": recent}, features=feature_set("x1", "x2")))
    again = run(other, "r1", records(1500, 1), {"recent": recent}, features=feature_set("x1", prefix="old_"))
    assert only(await r.on_trained(again), ModelRejected).failed_gates == ["beats_champion:balanced_accuracy"]


async def test_a_drift_retrain_that_forgets_the_old_concept_fails_the_before_gate_unless_its_spec_tolerates_it(
    tmp_path,
):
    old, new = records(1500, 1), records(1500, 2, flipped=True)
    slices = {"recent": records(400, 3, flipped=True), "before": records(400, 4)}
    store = SliceStore()
    r = registrar(store)
    await r.on_trained(run(store, "r1", old, {"recent": records(400, 5)}))
    # spec "keep": the default gates (loans' model.yaml waives the before gate, its demo drift flipping the concept)
    rejection = only(await r.on_trained(run(store, "r2", new, slices, spec="keep")), ModelRejected)
    assert rejection.failed_gates == ["holds_before:balanced_accuracy"]
    [before] = [g for g in rejection.gates if g.gate == "holds_before:balanced_accuracy"]
    assert (
        before.slice == "before"
        and "champion v1" in before.message
        and "on before (400 rows) (tolerance 0.1 + sampling allowance" in before.message
    )
    [recent] = [g for g in rejection.gates if g.gate == "beats_champion:balanced_accuracy"]
    assert recent.passed and recent.value > recent.reference + 0.1  # far better on the new concept

    spec = yaml.safe_load((ROOT / "datasets/loans/model.yaml").read_text())
    (tmp_path / "loans").mkdir()
    (tmp_path / "loans/tolerant.yaml").write_text(yaml.safe_dump({**spec, "gates": {"before_tolerance": 1.0}}))
    tolerant = registrar(store, datasets_dir=tmp_path)
    approval = only(await tolerant.on_trained(run(store, "r3", new, slices, spec="tolerant")), ModelApproved)
    assert approval.version == "3" and store.aliases("m")["challenger"] == "3"


async def test_an_empty_recent_slice_fails_the_gates_with_the_reason_and_an_empty_before_slice_is_left_out():
    store = SliceStore()
    empty = records(400, 2).iloc[:0]
    rejection = only(
        await registrar(store).on_trained(run(store, "r1", records(1500, 1), {"recent": empty})), ModelRejected
    )
    [gate] = [g for g in rejection.gates if g.gate == "beats_baseline:balanced_accuracy"]
    assert not gate.passed and "the slice has no labelled rows" in gate.message
    other = SliceStore()
    slices = {"recent": records(400, 2), "before": empty}
    approval = only(await registrar(other).on_trained(run(other, "r1", records(1500, 1), slices)), ModelApproved)
    assert [g.gate for g in approval.gates] == ["beats_baseline:balanced_accuracy", "beats_champion:balanced_accuracy"]
