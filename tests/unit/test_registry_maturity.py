"""The maturity model judged from evidence: levels per area, evidence sentences, scope by model and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flywheel.common.datasets import DatasetCatalog
from flywheel.registry.maturity import Assessor
from flywheel.registry.maturity import gather as gathering
from flywheel.registry.maturity.criteria import CRITERIA
from flywheel.registry.maturity.evidence import DataVersion, Evidence, TrainedVersion
from flywheel.registry.maturity.gather import trained_version
from flywheel.registry.maturity.http import create_maturity_router
from flywheel.registry.maturity.report import MaturityReport, judge
from flywheel.registry.modelstore import NotFound
from flywheel.schemas import (
    AlertRaised,
    ChampionChanged,
    DriftDetected,
    PredictionMade,
    RecordRejected,
    RolloutStepped,
    Violation,
)
from flywheel.schemas.models import SequentialTest

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
MODEL = "loans-approval"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def first_model(model: str = MODEL, actor: str = "registry") -> Evidence:
    """One model trained through the API on contract-checked data, gated, made champion, serving answers."""
    return Evidence(
        datasets=(
            DataVersion("loans", "ds-1", 1000, at(0), "records", contract_version="c-1"),
            DataVersion("loans", "lb-1", 1000, at(1), "labels"),
        ),
        versions=(
            TrainedVersion(
                model_name=model,
                version="1",
                run_id="run-1",
                created_at=at(2),
                status="approved",
                gates={"beats_baseline:balanced_accuracy": True},
                trigger="api",
                dataset="loans",
                dataset_version="ds-1",
                params=12,
                metrics=8,
                code_version="abc123",
                seed="42",
                fingerprint="f" * 64,
                feature_set_version="fs-7",
            ),
        ),
        rejected=(
            RecordRejected(
                producer="ingestion",
                dataset="loans",
                record_id="r-9",
                data={"age": -1},
                violations=[Violation(column="age", rule="range", value=-1, message="age -1 below 18")],
                occurred_at=at(0.5),
            ),
        ),
        champions=(
            ChampionChanged(
                producer="registry",
                model_name=model,
                version="1",
                action="promote",
                actor=actor,
                reason="first model",
                occurred_at=at(3),
            ),
        ),
        predictions=(
            PredictionMade(
                producer="serving",
                dataset="loans",
                prediction_id="p-1",
                model_name=model,
                model_version="1",
                variant="champion",
                prediction=1,
                latency_ms=3.0,
                occurred_at=at(4),
            ),
        ),
    )


def the_loop(model: str = MODEL) -> Evidence:
    """The first model, then concept drift, a drift-triggered retrain judged against v1, a canary, promotion."""
    base = first_model(model)
    retrain = TrainedVersion(
        model_name=model,
        version="2",
        run_id="run-2",
        created_at=at(20),
        status="approved",
        gates={"beats_baseline:balanced_accuracy": True, "beats_champion:balanced_accuracy": True},
        champion_at_gate="1",
        trigger="drift",
        dataset="loans",
        dataset_version="ds-2",
        params=12,
        metrics=8,
        code_version="abc123",
        seed="42",
        fingerprint="e" * 64,
        feature_set_version="fs-7",
    )
    drift = DriftDetected(
        producer="monitoring",
        dataset="loans",
        model_name=model,
        kind="concept",
        window_size=300,
        model_version="1",
        retrain=True,
        occurred_at=at(15),
    )
    test = SequentialTest(
        metric="accuracy",
        candidate=0.93,
        champion=0.61,
        difference=0.32,
        candidate_n=120,
        champion_n=400,
        std_error=0.04,
        log_likelihood_ratio=9.1,
        p_value=0.0001,
        alpha=0.05,
        significant=True,
    )
    rollout = dict(producer="serving", model_name=model, candidate_version="2", champion_version="1")
    return Evidence(
        datasets=(*base.datasets, DataVersion("loans", "ds-2", 900, at(18), "records", contract_version="c-1")),
        versions=(*base.versions, retrain),
        rejected=base.rejected,
        predictions=base.predictions,
        drifts=(drift,),
        alerts=(
            AlertRaised(
                producer="monitoring",
                severity="critical",
                kind="concept_drift",
                message=f"{model}: error rate rose",
                dedup_key=f"concept_drift:{model}",
                occurred_at=at(15),
            ),
        ),
        rollouts=(
            RolloutStepped(**rollout, strategy="canary", action="started", occurred_at=at(21)),
            RolloutStepped(**rollout, strategy="canary", action="stepped", step=1, occurred_at=at(23)),
            RolloutStepped(
                **rollout,
                strategy="canary",
                action="promoted",
                reason="accuracy better",
                tests={"accuracy": test},
                occurred_at=at(25),
            ),
        ),
        champions=(
            *base.champions,
            ChampionChanged(
                producer="registry",
                model_name=model,
                version="2",
                previous_version="1",
                action="promote",
                actor="serving",
                reason="canary: accuracy better",
                occurred_at=at(25.1),
            ),
        ),
    )


def criteria(report: MaturityReport) -> dict[str, object]:
    return {c.key: c for area in report.areas for c in area.criteria}


def levels(report: MaturityReport) -> dict[str, int]:
    return {area.area: area.level for area in report.areas}


def test_an_empty_deployment_is_level_0_in_every_area_and_lacks_every_level_1_criterion():
    report = judge(CRITERIA, Evidence())
    assert report.level == 0 and report.level_name == "manual" and report.next_level == 1
    assert set(levels(report).values()) == {0}
    level_1 = {f"{a.title}: {c.title}" for a in report.areas for c in a.criteria if c.level == 1}
    assert set(report.missing) == level_1
    assert all(c.evidence.startswith("no — ") for c in criteria(report).values())


def test_a_manually_trained_and_promoted_model_meets_the_level_1_items_but_was_never_retrained():
    report = judge(CRITERIA, first_model(actor="ops-alice"), model=MODEL)
    found = criteria(report)
    for key in ("versioned_data", "experiment_tracking", "training_pipeline", "model_registry", "basic_monitoring"):
        assert found[key].met, found[key]
    assert "loans-approval v1 made champion at 2026-12-02 09:03:00 UTC by ops-alice" in found["model_registry"].evidence
    assert "run-1" in found["experiment_tracking"].evidence and "12 params" in found["experiment_tracking"].evidence
    assert not found["retraining"].met and not found["online_experiments"].met
    assert not found["automated_deployment"].met
    assert levels(report) == {
        "data_management": 3,
        "model_development": 3,
        "deployment": 1,
        "monitoring": 1,
        "continuous_training": 0,
    }
    assert report.level == 0
    assert report.missing == ["Continuous training: retraining by the pipeline"]
    deployment = next(a for a in report.areas if a.area == "deployment")
    assert deployment.missing == ["A/B testing (canary, A/B, shadow)", "automated deployment"]


def test_the_full_loop_reaches_level_3_in_continuous_training_with_the_drift_retrain_as_evidence():
    report = judge(CRITERIA, the_loop(), model=MODEL)
    found = criteria(report)
    assert levels(report)["continuous_training"] == 3
    assert found["retraining_on_drift"].evidence == (
        "yes — last drift-triggered run run-2 (loans-approval v2) at 2026-12-02 09:20:00 UTC, "
        "promoted after canary at 2026-12-02 09:25:00 UTC"
    )
    assert "triggered by drift" in found["data_triggers"].evidence
    assert "passed beats_champion:balanced_accuracy against champion v1" in found["champion_gate"].evidence
    assert "canary of loans-approval v2 against v1 ended promoted" in found["online_experiments"].evidence
    assert "promoted by serving" in found["automated_deployment"].evidence
    assert levels(report)["deployment"] == 2 and levels(report)["monitoring"] == 2
    # nothing was ever rolled back and no data drift was seen: what level 3 lacks says so
    assert report.level == 2 and report.next_level == 3
    assert report.missing == ["Deployment: automatic rollback", "Monitoring: full observability"]


def test_one_models_report_ignores_another_models_loop():
    both = the_loop("other-model")
    mine = first_model()
    evidence = Evidence(
        datasets=both.datasets,
        versions=(*mine.versions, *both.versions),
        rollouts=both.rollouts,
        champions=(*mine.champions, *both.champions),
        drifts=both.drifts,
        alerts=both.alerts,
    )
    assert levels(judge(CRITERIA, evidence, model=MODEL))["continuous_training"] == 0
    assert levels(judge(CRITERIA, evidence, model="other-model"))["continuous_training"] == 3
    assert levels(judge(CRITERIA, evidence))["continuous_training"] == 3  # the deployment has shown it


def test_since_keeps_only_what_happened_from_then_on():
    loop = the_loop()
    assert levels(judge(CRITERIA, loop, since=at(26)))["continuous_training"] == 0
    report = judge(CRITERIA, loop, since=at(10))
    assert report.since == at(10) and levels(report)["continuous_training"] == 3
    assert criteria(report)["model_registry"].met  # v2's promotion is after the start


def test_a_rollout_rolled_back_by_serving_is_automatic_rollback():
    loop = the_loop()
    back = RolloutStepped(
        producer="serving",
        model_name=MODEL,
        candidate_version="3",
        champion_version="2",
        strategy="canary",
        action="rolled_back",
        reason="accuracy 0.61 vs champion 0.93",
        occurred_at=at(40),
    )
    evidence = Evidence(**{**loop.__dict__, "rollouts": (*loop.rollouts, back)})
    found = criteria(judge(CRITERIA, evidence))
    assert found["automatic_rollback"].met
    assert "v3 rolled back at 2026-12-02 09:40:00 UTC: accuracy 0.61" in found["automatic_rollback"].evidence


def test_a_version_reads_its_runs_record_and_a_deleted_run_leaves_it_without():
    described = {
        "name": MODEL,
        "version": "2",
        "run_id": "run-2",
        "status": "approved",
        "created_at": at(20).isoformat(),
        "gates": [{"gate": "beats_champion:accuracy", "passed": True}],
        "tags": {"flywheel.champion_at_gate": "1", "flywheel.dataset": "loans"},
    }
    run = SimpleNamespace(
        data=SimpleNamespace(
            tags={"flywheel.trigger": "drift", "flywheel.seed": "42", "flywheel.feature_set_version": "fs-7"},
            params={"a": "1"},
            metrics={"accuracy": 0.9},
        )
    )
    version = trained_version(described, run)
    assert (version.trigger, version.champion_at_gate, version.params, version.feature_set_version) == (
        "drift",
        "1",
        1,
        "fs-7",
    )
    assert version.gates == {"beats_champion:accuracy": True} and version.created_at == at(20)
    orphan = trained_version(described, None)
    assert orphan.trigger is None and orphan.dataset == "loans" and orphan.params == 0


def test_the_catalog_lists_the_datasets_with_a_sealed_version():
    keys = ["datasets/loans/v1/manifest.json", "datasets/loans/v1/data.parquet", "datasets/rain/v9/manifest.json"]
    store = SimpleNamespace(list_keys=lambda prefix: [k for k in keys if k.startswith(prefix)])
    assert DatasetCatalog(store).datasets() == ["loans", "rain"]  # type: ignore[arg-type]


class NoModels:
    def describe(self, name: str) -> dict:
        raise NotFound(f"no model {name!r} in the registry")

    def names(self) -> list[str]:
        return []


@pytest.fixture
def client() -> TestClient:
    registrar = SimpleNamespace(
        store=NoModels(),
        catalog=DatasetCatalog(SimpleNamespace(list_keys=lambda prefix: [])),  # type: ignore[arg-type]
        settings=SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers="127.0.0.1:1")),
    )
    app = FastAPI()
    app.include_router(create_maturity_router(registrar))  # type: ignore[arg-type]
    return TestClient(app)


def test_the_maturity_of_an_unknown_model_is_a_404_that_says_so(client):
    response = client.get("/maturity", params={"model": "nope"})
    assert response.status_code == 404
    assert response.json()["detail"] == "no model 'nope' in the registry"


def test_maturity_with_kafka_unreachable_is_a_503_that_says_so(client):
    response = client.get("/maturity")
    assert response.status_code == 503, response.text
    assert "Kafka" in response.json()["detail"]


async def test_evidence_is_gathered_once_per_scope_while_fresh_and_again_after(monkeypatch):
    asked: list[str | None] = []

    async def gather(store, catalog, bootstrap_servers, model=None):
        asked.append(model)
        return the_loop()

    monkeypatch.setattr(gathering, "gather", gather)
    now = [0.0]
    assessor = Assessor(None, None, "kafka:9092", fresh_s=15, clock=lambda: now[0])  # type: ignore[arg-type]
    first = await assessor.assess(MODEL)
    again = await assessor.assess(MODEL, since=at(26))
    await assessor.assess()
    assert asked == [MODEL, None]
    assert levels(first)["continuous_training"] == 3 and levels(again)["continuous_training"] == 0
    now[0] = 16.0
    await assessor.assess(MODEL)
    assert asked == [MODEL, None, MODEL]
