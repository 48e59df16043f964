"""Rebuilding a version from its lineage: the pinned request trains on exactly what the version recorded
(not a re-resolved window), a different code version is refused unless forced, and the comparison says
whether metrics and model are equal, and why not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from faststream.kafka import TestKafkaBroker

from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    Lineage,
    ModelTrained,
    Rebuild,
    TrainingFailed,
    TrainModel,
)
from flywheel.training import http as training_http
from flywheel.training.coalesce import Coalescer
from flywheel.training.http import RebuildRequest, create_rebuild_router, rebuild_request
from flywheel.training.rebuild import Built, RebuildRefused, code_refusal, compare, file_digest, pin
from flywheel.training.runner import prepare, train
from flywheel.training.runs import RunRecord
from tests.support.auth import DEV_CREDENTIALS, OPERATOR
from tests.unit.test_ingestion_versions import MemoryStore
from tests.unit.test_registry_gates import FakeStore, deliver, registrar, trained
from tests.unit.test_registry_gates import wired as registry_broker
from tests.unit.test_training_labels import DATASETS, T0, context, write_labels, write_records

wired = registry_broker  # the registry tests' broker with its topics collected, as a fixture here


def lineage_of_prepared(prepared, code_version: str = "test") -> Lineage:
    return Lineage(
        dataset="loans",
        dataset_version=prepared.versions[-1].version,
        dataset_versions=[m.version for m in prepared.versions],
        code_version=code_version,
        model_spec=prepared.spec.spec_name,
        params=prepared.spec.estimator.params,
        seed=prepared.spec.seed,
        feature_set_version=prepared.features.version,
        window={"drift": "after_drift" if prepared.after is not None else "none"},
        fingerprint=prepared.fingerprint,
        drift_cut=sorted(prepared.after) if prepared.after is not None else None,
    )


def test_a_rebuild_trains_on_the_recorded_versions_batches_and_drift_cut_not_on_a_re_resolved_window() -> None:
    store = MemoryStore()
    old = write_records(store, range(0, 10), T0 - timedelta(minutes=5))
    straddling = write_records(store, range(10, 16), T0 + timedelta(seconds=2), parent=old)
    fresh = write_records(store, range(16, 30), T0 + timedelta(seconds=5), parent=straddling)
    write_labels(store, {i: i % 2 for i in range(30)}, T0 + timedelta(seconds=8))
    ctx = context(store)
    drift = TrainModel(model_name="m", dataset="loans", trigger="drift", producer="t", occurred_at=T0)
    original = prepare(ctx, drift, lambda *_: None)
    assert original.after == {fresh.version} and len(original.versions) == 3

    # later: a newer version and a batch correcting labels of the rows the version was trained on
    write_records(store, range(30, 40), T0 + timedelta(minutes=9), parent=fresh)
    write_labels(store, {i: 1 - i % 2 for i in range(30)}, T0 + timedelta(minutes=10))
    again = prepare(ctx, drift.model_copy(update={"occurred_at": T0 + timedelta(hours=1)}), lambda *_: None)
    assert again.fingerprint != original.fingerprint  # re-resolving would train on something else

    pinned = pin(
        "4",
        "run-1",
        "models:/m-1",
        lineage_of_prepared(original),
        original.spec.model_dump(mode="json"),
        original.label_batches,
    )
    request = rebuild_request(RebuildRequest(model_name="m", version="4"), pinned)
    rebuilt = prepare(ctx, request, lambda *_: None)
    assert [m.version for m in rebuilt.versions] == [m.version for m in original.versions]
    assert rebuilt.label_batches == original.label_batches and rebuilt.after == original.after
    assert rebuilt.fingerprint == original.fingerprint  # the same inputs, down to each labelled row
    assert request.trigger == "manual" and request.rebuild.drift_cut == [fresh.version]


def test_a_drift_retrain_recorded_without_its_cut_is_refused_rather_than_guessed() -> None:
    lineage = Lineage(
        dataset="loans",
        dataset_version="v",
        code_version="c",
        model_spec="model",
        seed=1,
        window={"drift": "after_drift"},
    )
    with pytest.raises(RebuildRefused, match="no drift cut"):
        pin("1", "r", "u", lineage, {}, [])


def test_the_refusal_names_both_code_versions_and_force_overrides_it() -> None:
    why = code_refusal("aaa111", "bbb222", force=False)
    assert why is not None and "'aaa111'" in why and "'bbb222'" in why
    assert code_refusal("aaa111", "bbb222", force=True) is None


def test_a_rebuild_refused_where_it_runs_fails_with_the_reason_before_touching_anything() -> None:
    pinned = Rebuild(model_version="2", run_id="r", model_uri="u", dataset_versions=["v"], spec={}, code_version="old")
    request = TrainModel(model_name="m", dataset="loans", producer="t", rebuild=pinned)
    outcome = train(context(MemoryStore()), request, [request], "run", lambda *_: None)
    assert isinstance(outcome, TrainingFailed)
    assert "refused" in outcome.reason and "'old'" in outcome.reason and "'test'" in outcome.reason


async def test_a_rebuild_is_never_merged_into_a_burst_of_ordinary_requests() -> None:
    seen: list[list[TrainModel]] = []

    async def execute(record: RunRecord, requests: list[TrainModel]) -> None:
        seen.append(requests)

    coalescer = Coalescer(0.05, execute, lambda record: None)
    pinned = Rebuild(model_version="2", run_id="r", model_uri="u", dataset_versions=["v"], spec={}, code_version="c")
    ordinary = TrainModel(model_name="m", dataset="loans", producer="t")
    rebuild = TrainModel(model_name="m", dataset="loans", producer="t", rebuild=pinned)
    coalescer.submit(ordinary)
    coalescer.submit(rebuild)
    coalescer.submit(TrainModel(model_name="m", dataset="loans", producer="t"))
    await asyncio.sleep(0.3)
    assert sorted(len(s) for s in seen) == [1, 2] and [rebuild] in seen


def test_equal_metrics_and_payloads_are_equal_though_the_zip_and_mlmodel_times_differ() -> None:
    import io
    import zipfile

    def skops(when: tuple[int, ...]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(zipfile.ZipInfo("schema.json", when), '{"tree": 1}')
        return buffer.getvalue()

    def mlmodel(when: str, run: str) -> bytes:
        return f"run_id: {run}\nutc_time_created: '{when}'\nflavors: {{sklearn: {{}}}}\n".encode()

    def side(when: tuple[int, ...], stamp: str, run: str, code: str = "c1", libs: str = "scikit-learn==1.7") -> Built:
        files = {"model.skops": skops(when), "MLmodel": mlmodel(stamp, run), "requirements.txt": libs.encode()}
        return Built(
            {"mae": 0.25}, {n: file_digest(n, b) for n, b in files.items()}, code, "fp", {"requirements.txt": libs}
        )

    original = side((2026, 1, 1, 0, 0, 0), "2026-01-01", "r1")
    assert compare(original, side((2026, 1, 2, 0, 0, 0), "2026-01-02", "r2")).equal

    moved = side((2026, 1, 2, 0, 0, 0), "2026-01-02", "r2", code="c2", libs="scikit-learn==1.8")
    verdict = compare(original, moved)
    assert not verdict.model_equal and verdict.differing_files == ["requirements.txt"]
    assert any("code differs" in r for r in verdict.reasons)
    assert any("library versions differ" in r and "scikit-learn==1.8" in r for r in verdict.reasons)


def test_a_metric_off_by_more_than_the_tolerance_is_a_difference() -> None:
    a = Built({"mae": 0.25, "rmse": 0.5}, {"model.skops": "x"}, "c", "fp")
    b = Built({"mae": 0.25 + 1e-13, "rmse": 0.5 + 1e-6}, {"model.skops": "y"}, "c", "fp")
    verdict = compare(a, b)
    assert verdict.metric_differences == {"rmse": [0.5, 0.5 + 1e-6]} and not verdict.metrics_equal
    assert "not deterministic" in verdict.reasons[-1] and verdict.inputs_equal


def test_the_rebuild_route_refuses_a_different_code_version_with_409_naming_both(monkeypatch) -> None:
    recorded = Rebuild(
        model_version="3",
        run_id="r",
        model_uri="u",
        dataset_versions=["v"],
        spec={"dataset": "loans"},
        code_version="recorded-sha",
    )
    monkeypatch.setattr(training_http, "read_pin", lambda *args: recorded)
    app = FastAPI()
    app.include_router(create_rebuild_router(None, None, DATASETS, "running-sha", DEV_CREDENTIALS))  # type: ignore[arg-type]
    answer = TestClient(app, headers=OPERATOR).post("/rebuild", json={"model_name": "m", "version": "3"})
    assert answer.status_code == 409
    assert "'recorded-sha'" in answer.json()["detail"] and "'running-sha'" in answer.json()["detail"]
    assert (
        TestClient(app, headers=OPERATOR).post("/rebuild", json={"model_name": "m", "version": "x"}).status_code == 422
    )


def test_the_registry_registers_a_rebuild_as_an_audit_tagged_rebuild_of() -> None:
    from flywheel.registry.decisions import REBUILD, UNPROMOTABLE, may_serve, rebuild_tags

    trained = ModelTrained.model_construct(rebuild_of="3")
    tags = rebuild_tags(trained, {"flywheel.rebuild.equal": "true", "flywheel.trigger": "manual"})
    assert tags == {"rebuild_of": "3", "flywheel.rebuild.equal": "true"}
    assert REBUILD in UNPROMOTABLE and not may_serve(REBUILD)


class RebuildRuns(FakeStore):
    """The fake registry store, with runs whose tags hold a rebuild's comparison."""

    def run(self, run_id: str) -> SimpleNamespace:
        return SimpleNamespace(data=SimpleNamespace(tags={"flywheel.rebuild.equal": "true"}))


async def test_a_rebuild_is_registered_tagged_rebuild_of_and_neither_approved_nor_made_champion(wired):
    broker, seen = wired
    store = RebuildRuns()
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"))
        rebuilt = trained(0.95, run="r2").model_copy(update={"rebuild_of": "1"})
        await deliver(broker, rebuilt, rebuilt)  # redelivered: still nothing to publish
    assert store.aliases("m") == {"champion": "1"}
    assert len(seen[MODELS_APPROVED.name]) == 1 and len(seen[MODELS_CHAMPION.name]) == 1  # v1's only
    assert not seen[MODELS_REJECTED.name]
    v2 = store.versions["m"]["2"]
    assert v2.tags["flywheel.status"] == "rebuild" and v2.tags["rebuild_of"] == "1"
    assert v2.tags["flywheel.rebuild.equal"] == "true" and len(store.versions["m"]) == 2
